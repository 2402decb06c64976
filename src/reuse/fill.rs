//! The records of rows answered without a request: each unit the plan (`plan.rs`) matched
//! with an answer gets its own record — its id, row, prompt and kept columns, the answer's
//! completion (or error) and its token counts, `duplicate_of` the row that paid (this output)
//! or `reused_from` the earlier output, `saved_usd` what that answer cost, and cost, attempts
//! and latency 0: nothing was bought for it (summaries and `report` leave its tokens out of
//! what was used). The input is read once, in order, beside the plan's fills (sorted by
//! unit); each answer is read again from its file by its byte offset.

use std::time::SystemTime;

use tokio::sync::mpsc;

use super::plan::{answer_place, AnswerSource};
use super::{DUPLICATE_OF, REUSED_FROM, SAVED_USD};
use crate::api::schema::AnswerSchema;
use crate::api::ChatRequest;
use crate::error::Error;
use crate::input::models::unit;
use crate::input::{Row, RowContent, RowSet};
use crate::output::record::{parsed_fields, rename_kept, timestamp, Status, RESPONSE};
use crate::output::{Finished, Record};
use crate::util::spill::Sorted;

/// What a filled record takes from the run.
pub(crate) struct FillContext<'a> {
    pub sources: &'a [AnswerSource],
    /// `--json-schema`: an ok answer's parsed fields are made again for this output's shape.
    pub schema: Option<&'a AnswerSchema>,
    pub keep_response: bool,
    /// Units per row.
    pub models: u64,
}

/// Writes a record for each unit of `fills` (`[unit, answer]`, by unit) through `sender`,
/// reading `rows` (the stream the plan read, in the same order). Returns the units written;
/// they are added to `filled`.
pub(crate) fn write_fills(
    ctx: &FillContext<'_>,
    rows: impl Iterator<Item = Result<Row, Error>>,
    fills: Sorted<[u64; 2]>,
    sender: &mpsc::Sender<Finished>,
    filled: &mut RowSet,
) -> Result<u64, Error> {
    let mut readers = ctx
        .sources
        .iter()
        .map(AnswerSource::record_at)
        .collect::<Result<Vec<_>, _>>()?;
    let mut fills = fills.peekable();
    let mut written = 0;
    for row in rows {
        let Some(next) = fills.peek() else { break };
        let next = match next {
            Ok([unit, _]) => *unit,
            Err(_) => return Err(spill_error(fills.next())),
        };
        // Where the input stops the run, the plan stopped too (`plan.rs`): no fill lies beyond.
        let Ok(row) = row else { break };
        let this = unit(row.row, u64::from(row.slot), ctx.models);
        if this < next {
            continue;
        }
        let answer = match fills.next() {
            Some(Ok([_, answer])) => answer,
            other => return Err(spill_error(other)),
        };
        if this > next {
            return Err(Error::Config(format!(
                "the input changed while this run read it (row {} came after row unit {next}): run the same command again",
                row.row
            )));
        }
        let (source, start) = answer_place(answer);
        let answer = readers[source].read(start)?;
        if let Some(record) = filled_record(ctx, row, answer, &ctx.sources[source]) {
            if sender
                .blocking_send(Finished { record, slot: None })
                .is_err()
            {
                return Err(Error::Config("the output's writer stopped".into()));
            }
            filled.insert(this);
            written += 1;
        }
    }
    Ok(written)
}

fn spill_error(item: Option<std::io::Result<[u64; 2]>>) -> Error {
    match item {
        Some(Err(e)) => Error::io("cannot read the sorted answers back from disk", e),
        _ => Error::Config("the sorted answers ended early".into()),
    }
}

/// The record of `row` holding `answer` (read from `source`); `None` when the answer's request
/// is not the row's after all (their hashes met by chance): the row is sent.
fn filled_record(
    ctx: &FillContext<'_>,
    row: Row,
    answer: Record,
    source: &AnswerSource,
) -> Option<Record> {
    let RowContent::Request(request) = row.content else {
        return None;
    };
    let ChatRequest {
        prompt,
        model,
        fingerprint,
        ..
    } = request;
    if answer.prompt != prompt || answer.model != model || answer.fingerprint != fingerprint {
        return None;
    }
    let mut kept = row.kept.map(rename_kept).unwrap_or_default();
    let (marker, value) = match source.own {
        true => (DUPLICATE_OF, answer.id.clone()),
        false => (REUSED_FROM, source.path.display().to_string()),
    };
    kept.insert(marker.into(), value.into());
    let earlier = answer.kept.as_deref();
    let saved = earlier
        .and_then(|extras| extras.get(SAVED_USD))
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .or(answer.cost_usd);
    if let Some(saved) = saved {
        kept.insert(
            SAVED_USD.into(),
            crate::util::human::round_usd(saved).into(),
        );
    }
    if let (Some((checker, columns)), Status::Ok) = (ctx.schema, answer.status) {
        if let Ok(value) = checker.check(answer.completion.as_deref()) {
            kept.extend(parsed_fields(value, columns.as_deref()));
        }
    }
    if ctx.keep_response {
        if let Some(response) = earlier.and_then(|extras| extras.get(RESPONSE)) {
            kept.insert(RESPONSE.into(), response.clone());
        }
    }
    let now = Some(timestamp(SystemTime::now()));
    Some(Record {
        id: row.id,
        row: row.row,
        prompt,
        completion: answer.completion,
        finish_reason: answer.finish_reason,
        model,
        prompt_tokens: answer.prompt_tokens,
        cached_tokens: answer.cached_tokens,
        completion_tokens: answer.completion_tokens,
        reasoning_tokens: answer.reasoning_tokens,
        total_tokens: answer.total_tokens,
        latency_ms: 0,
        attempts: 0,
        status: answer.status,
        error: answer.error,
        response_id: answer.response_id,
        cost_usd: Some(0.0),
        fingerprint,
        simulated: answer.simulated,
        started_at: now.clone(),
        finished_at: now,
        kept: Some(kept),
    })
}
