//! Collecting: polling the batches, downloading a final one's output and error files (checked
//! against its request counts), and turning every line into the record a live run would write.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::answers::{Answers, LineOutcome};
use super::claims::Claims;
use super::client::BatchObject;
use super::{abort_at, abort_requested, answers, split, unix_now, unmatched};
use super::{BatchRun, Midway, Pending, DOWNLOADS};
use crate::api::ChatRequest;
use crate::error::Error;
use crate::events::notice;
use crate::input::{self, RowContent, RowSet};
use crate::money::cost::Billing;
use crate::money::spent::Spent;
use crate::output::record::RowInfo;
use crate::output::{Finished, Record, Writer};
use crate::progress::Display;

impl BatchRun<'_> {
    /// Reads every batch's status once; returns the batches that reached a final status.
    pub(super) async fn poll(&mut self) -> Result<Vec<(usize, BatchObject)>, Error> {
        let mut finals = Vec::new();
        let mut changed = false;
        // Plain progress lines (stderr not a terminal): every batch once per --log-every, as
        // well as on each change.
        let every_batch = match self.opts.display {
            Display::Lines(every) if self.last_lines.elapsed() >= every => {
                self.last_lines = Instant::now();
                true
            }
            _ => false,
        };
        for i in 0..self.state.batches.len() {
            let Some(id) = self.state.batches[i].batch_id.clone() else {
                continue;
            };
            if self.deferred.contains(&id) {
                continue;
            }
            let batch = self.client().get(&id).await?;
            let entry = &mut self.state.batches[i];
            let moved = batch.status != entry.status;
            if moved || every_batch {
                changed |= moved;
                entry.status = batch.status.clone();
                if !self.quiet || (moved && batch.is_final()) {
                    let counts = batch.request_counts.unwrap_or_default();
                    let elapsed = unix_now().saturating_sub(entry.submitted_at);
                    notice!(
                        "batch {id}: {} · {}/{} requests done, {} failed · {} since submitted",
                        batch.status,
                        crate::util::human::group(counts.completed),
                        crate::util::human::group(counts.total.max(entry.rows.len() as u64)),
                        crate::util::human::group(counts.failed),
                        humantime::format_duration(Duration::from_secs(elapsed))
                    );
                }
            }
            if batch.is_final() {
                finals.push((i, batch));
            }
        }
        if changed {
            self.save()?;
        }
        Ok(finals)
    }

    /// Downloads final batches' output and error files and writes one record per row that has
    /// an answer or a permanent error; rows to try again go to `retry`. The batches leave the
    /// state only once their records are on disk. `finals` is sorted by index, last first.
    /// A batch whose files stay shorter than its `request_counts` is left for a later try
    /// (never submitted again: its rows were answered).
    pub(super) async fn collect(&mut self, finals: Vec<(usize, BatchObject)>) -> Result<(), Error> {
        let mut answers = Answers::new()?;
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut collected = Vec::new();
        let mut deferred = Vec::new();
        // Each batch row of this collection has a key of its own: after an edit of the input,
        // batch rows of two batches may have been submitted from the same row number.
        let mut next_key = 0u64;
        let mut keep = unmatched::Kept::new(&self.output);
        for (index, batch) in &finals {
            let entry = &self.state.batches[*index];
            let first_key = next_key;
            let by_id: HashMap<&str, u64> = entry
                .rows
                .iter()
                .zip(first_key..)
                .map(|(r, key)| (r.id(), key))
                .collect();
            if !self.download(batch, &by_id, &mut answers).await? {
                deferred.push(batch.id.clone());
                continue;
            }
            for (line, custom_id, answer) in answers.take_foreign()? {
                let cost = self.line_cost(&line, answer);
                let why = (custom_id.as_str(), unmatched::Why::Foreign, answer);
                keep.add(&batch.id, why, &line, cost);
            }
            let latency_ms = match (batch.created_at, batch.ended_at()) {
                (Some(start), Some(end)) => end.saturating_sub(start) * 1000,
                _ => 0,
            };
            let missing: Arc<str> = match (batch.status.as_str(), batch.errors_text()) {
                ("failed", Some(why)) => format!("batch {} failed: {why}", batch.id),
                (status, _) => format!("no answer for this row in batch {} ({status})", batch.id),
            }
            .into();
            let batch_id: Arc<str> = batch.id.as_str().into();
            for (row, key) in entry.rows.iter().zip(first_key..) {
                let missing = (!answers.has(key)).then(|| missing.clone());
                pending.insert(
                    key,
                    Pending {
                        submitted_as: row.row(),
                        missing,
                        attempts: row.attempts(),
                        custom_id: row.id().to_string(),
                        fingerprint: row.fingerprint().to_string(),
                        latency_ms,
                        batch_id: batch_id.clone(),
                    },
                );
            }
            next_key += entry.rows.len() as u64;
            self.counters.log_event(
                "batch_collected",
                serde_json::json!({"batch": batch.id, "status": batch.status, "rows": entry.rows.len()}),
            );
            collected.push(*index);
        }
        self.keep_contradictions(&answers, &pending, &mut keep)?;
        let left = self.write_outcomes(pending, &answers).await?;
        self.keep_unclaimed(left, &answers, &mut keep)?;
        keep.finish()?;
        self.deferred.extend(deferred);
        for index in collected {
            self.state.batches.remove(index);
        }
        self.save()
    }

    /// Downloads a final batch's output and error files into `answers`; `false` when they
    /// hold fewer lines for its rows than the batch reports answered, after
    /// [`DOWNLOADS`] tries (a 200 with an HTML page, an empty or a half body): the batch is
    /// then left in the state, and its rows are not submitted again.
    pub(super) async fn download(
        &self,
        batch: &BatchObject,
        by_id: &HashMap<&str, u64>,
        answers: &mut Answers,
    ) -> Result<bool, Error> {
        let counts = batch.request_counts.unwrap_or_default();
        let expected = (counts.completed + counts.failed).min(by_id.len() as u64);
        let mut lines = 0;
        for attempt in 1..=DOWNLOADS {
            let from = answers.end();
            lines = 0;
            for file_id in [&batch.output_file_id, &batch.error_file_id]
                .into_iter()
                .flatten()
            {
                let start = answers.end();
                self.client().download_to(file_id, answers.file()).await?;
                lines += answers.index(start, by_id)?;
            }
            if lines >= expected {
                return Ok(true);
            }
            if self.opts.batch.accept_short.contains(&batch.id) {
                notice!(
                    "batch {}: its files hold {lines} lines for its rows, and it reports {expected} requests done; collected as they are (--batch-accept-short): its rows without a line go into a new batch",
                    batch.id
                );
                return Ok(true);
            }
            answers.rollback(from, by_id)?;
            if attempt < DOWNLOADS {
                notice!(
                    "batch {}: its files hold {lines} lines for its rows, and it reports {expected} requests done: downloading them again",
                    batch.id
                );
                tokio::time::sleep(self.opts.retry.backoff(attempt)).await;
            }
        }
        notice!(
            "batch {}: after {DOWNLOADS} downloads its files still hold {lines} lines for its rows, and it reports {expected} requests done; it is not collected now, and its rows are not submitted again (they were answered: that would pay twice). The same command tries again later; if the provider's files stay short, --batch-accept-short {} collects what they hold and sends the other rows again (paid twice if they were answered)",
            batch.id,
            batch.id
        );
        Ok(false)
    }

    /// Rows with more than one line in their batch's files: the row's answer is its record
    /// (an error line beside it is ignored); a second, different answer was paid for too and
    /// is kept beside the output. Each is said by row.
    pub(super) fn keep_contradictions(
        &self,
        answers: &Answers,
        pending: &HashMap<u64, Pending>,
        keep: &mut unmatched::Kept,
    ) -> Result<(), Error> {
        for contradiction in &answers.contradictions {
            let Some(row) = pending.get(&contradiction.row) else {
                continue;
            };
            let (at, len) = contradiction.other;
            let line = answers.line_at(at, len)?;
            let why = if contradiction.other_is_answer {
                unmatched::Why::SecondAnswer
            } else {
                unmatched::Why::ErrorBeside
            };
            let answer = contradiction.other_is_answer;
            let cost = self.line_cost(&line, answer);
            keep.add(&row.batch_id, (&row.custom_id, why, answer), &line, cost);
        }
        Ok(())
    }

    /// Paid answers no row of the input claimed (their rows changed or left the input since
    /// they were submitted): kept beside the output, never dropped.
    pub(super) fn keep_unclaimed(
        &self,
        left: HashMap<u64, Pending>,
        answers: &Answers,
        keep: &mut unmatched::Kept,
    ) -> Result<(), Error> {
        for (key, row) in left {
            if !answers.is_answer(key) {
                continue;
            }
            if let Some(line) = answers.line_of(key)? {
                let why = unmatched::Why::Unclaimed;
                let cost = self.line_cost(&line, true);
                keep.add(&row.batch_id, (&row.custom_id, why, true), &line, cost);
            }
        }
        Ok(())
    }

    /// What the answer on a batch line cost at batch prices (`None` for an error line or an
    /// unpriced model).
    pub(super) fn line_cost(&self, line: &[u8], answer: bool) -> Option<f64> {
        if !answer {
            return None;
        }
        match answers::read_line(line) {
            Some((_, LineOutcome::Answer(completion))) => {
                let model = completion.model.clone().unwrap_or_default();
                self.batch_cost(&completion, &model)
            }
            _ => None,
        }
    }

    /// Writes the records of the rows of `outcomes` from their lines in `answers`, in two
    /// passes over the input at most: first the rows where they were when submitted (an
    /// input unchanged since), then — for those not found there — every row without a
    /// record, matched by identity (`claims.rs`). Returns the batch rows no input row claimed.
    pub(super) async fn write_outcomes(
        &mut self,
        mut outcomes: HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<HashMap<u64, Pending>, Error> {
        let writer = self.start_writer()?;
        let mut result = self.write_in_place(&writer, &mut outcomes, answers).await;
        if result.is_ok() && !outcomes.is_empty() {
            result = self
                .write_by_identity(&writer, &mut outcomes, answers)
                .await;
        }
        writer.finish()?;
        result.map(|()| outcomes)
    }

    /// [`write_outcomes`](Self::write_outcomes)' first pass: the rows at the places their
    /// batch rows were submitted from (every other row passed over unparsed; reading stops
    /// after the last). A row there with another id or request is left for the second pass;
    /// one with a record already (a collection an interrupted run had begun) is done.
    pub(super) async fn write_in_place(
        &mut self,
        writer: &Writer,
        outcomes: &mut HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<(), Error> {
        // Batch rows by the unit they were submitted from (two after an edit, at most a few).
        let mut by_place: HashMap<u64, Vec<u64>> = HashMap::new();
        for (key, pending) in outcomes.iter() {
            by_place.entry(pending.submitted_as).or_default().push(*key);
        }
        let last = by_place.keys().copied().max().unwrap_or(0);
        let mut others = RowSet::default();
        for unit in 1..=last {
            if !by_place.contains_key(&unit) {
                others.insert(unit);
            }
        }
        let pass_started = Instant::now();
        let rows = input::open(&self.opts.input, &self.opts.request, Some(others))?;
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        let mut written = Midway::new(outcomes.len(), self.counters.done());
        while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                let row = item?;
                let unit = self.unit(&row);
                if unit > last || outcomes.is_empty() {
                    return Ok(());
                }
                let RowContent::Request(request) = &row.content else {
                    continue;
                };
                let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
                let found = by_place.get(&unit).and_then(|keys| {
                    keys.iter().copied().find(|key| {
                        outcomes.get(key).is_some_and(|p| {
                            p.custom_id == custom_id && p.fingerprint == request.fingerprint
                        })
                    })
                });
                let Some(pending) = found.and_then(|key| outcomes.remove(&key).map(|p| (key, p)))
                else {
                    continue;
                };
                let (key, pending) = pending;
                // Its record holds what its failed answers cost (it was written with it).
                if self.skip.contains(unit) {
                    self.state.spent.remove(&unit);
                    continue;
                }
                if self
                    .write_outcome(writer, unit, key, row, pending, answers)
                    .await?
                {
                    self.wrote_one(&mut written).await;
                }
            }
        }
        tracing::debug!(
            "collected {} records in one pass over the input up to row {last} ({} ms)",
            written.written,
            pass_started.elapsed().as_millis()
        );
        Ok(())
    }

    /// [`write_outcomes`](Self::write_outcomes)' second pass: every row without a record
    /// claims its batch row by identity. Then rows with a record claim what is left: those
    /// batch rows were written by a collection an interrupted run had begun (not unmatched
    /// answers: they are done).
    pub(super) async fn write_by_identity(
        &mut self,
        writer: &Writer,
        outcomes: &mut HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<(), Error> {
        let mut claims = Claims::new();
        for (unit, pending) in outcomes.iter() {
            claims.add(&pending.custom_id, &pending.fingerprint, *unit);
        }
        // Rows with a record whose request some batch row has: (custom_id, explicit, fingerprint).
        let mut recorded = Vec::new();
        let mut written = Midway::new(outcomes.len(), self.counters.done());
        let rows = input::open(&self.opts.input, &self.opts.request, None)?;
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        'reading: while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                if claims.unclaimed() == 0 {
                    break 'reading;
                }
                let row = item?;
                let RowContent::Request(request) = &row.content else {
                    continue;
                };
                let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
                let unit = self.unit(&row);
                if self.skip.contains(unit) {
                    if claims.has_request(&request.fingerprint) {
                        recorded.push((custom_id, row.explicit_id, request.fingerprint.clone()));
                    }
                    continue;
                }
                let Some(key) = claims.claim(&custom_id, row.explicit_id, &request.fingerprint)
                else {
                    continue;
                };
                let Some(pending) = outcomes.remove(&key) else {
                    continue;
                };
                if self
                    .write_outcome(writer, unit, key, row, pending, answers)
                    .await?
                {
                    self.wrote_one(&mut written).await;
                }
            }
        }
        for (custom_id, explicit, fingerprint) in recorded {
            if let Some(done) = claims.claim(&custom_id, explicit, &fingerprint) {
                outcomes.remove(&done);
            }
        }
        Ok(())
    }

    /// Writes the record of the input row `row` (unit `unit` now) from the line of the batch
    /// row `key` (its key in this collection); `false` when the row goes into a new batch
    /// instead.
    pub(super) async fn write_outcome(
        &mut self,
        writer: &Writer,
        unit: u64,
        key: u64,
        row: input::Row,
        mut pending: Pending,
        answers: &Answers,
    ) -> Result<bool, Error> {
        let outcome = match pending.missing.take() {
            Some(message) => LineOutcome::Transient(message.to_string()),
            None => answers
                .read(key)?
                .unwrap_or_else(|| LineOutcome::Transient("unreadable line for this row".into())),
        };
        let Some(record) = self.record_for(unit, row, outcome, pending) else {
            return Ok(false);
        };
        self.write(writer, record, unit).await;
        Ok(true)
    }

    /// Counts a record a collection wrote. Debug builds: `PROMPTBATCH_TEST_ABORT_AT=
    /// during-download` aborts once half its records are in the output.
    pub(super) async fn wrote_one(&self, midway: &mut Midway) {
        midway.written += 1;
        if midway.written != midway.total.div_ceil(2) || !abort_requested("during-download") {
            return;
        }
        // The run's records by then, earlier collections' included.
        let written = midway.done_before + midway.written as u64;
        while self.counters.done() < written {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abort_at("during-download");
    }

    /// The unit number of a row for one model (the row number with one model): what the state,
    /// the rows to retry and the rows with a record count.
    pub(super) fn unit(&self, row: &input::Row) -> u64 {
        input::models::unit(row.row, u64::from(row.slot), self.state.models_per_row())
    }

    /// Hands a record to the writer and marks its unit as having one.
    pub(super) async fn write(&mut self, writer: &Writer, record: Record, unit: u64) {
        if record.status == crate::output::Status::Error {
            let message = record.error.as_deref().unwrap_or_default();
            if self.warnings.show(message) {
                tracing::warn!(id = %record.id, row = record.row, "row failed: {message}");
            }
        }
        self.skip.insert(unit);
        let _ = writer.sender.send(Finished { record, slot: None }).await;
    }

    pub(super) fn info(
        &self,
        (id, row, line): (String, u64, u64),
        prompt: String,
        model: String,
        fingerprint: String,
    ) -> RowInfo {
        RowInfo {
            id,
            row,
            line,
            prompt,
            model,
            fingerprint,
            simulated: self.simulated,
            kept: None,
            started: None,
        }
    }

    /// What an answer cost at batch prices (`None`: the model has no price).
    pub(super) fn batch_cost(
        &self,
        completion: &crate::api::Completion,
        model: &str,
    ) -> Option<f64> {
        let answered = completion.model.as_deref().unwrap_or_default();
        crate::job::answer::cost_of(self.prices, Billing::Batch, &[answered, model], completion)
    }

    /// The record a collected row gets from its line's `outcome`, or `None` when it goes into a
    /// new batch (a transient failure, an answer failing --json-schema, or a row changed since
    /// it was submitted). The record holds what the row's earlier paid answers cost.
    pub(super) fn record_for(
        &mut self,
        unit: u64,
        row: input::Row,
        outcome: LineOutcome,
        pending: Pending,
    ) -> Option<Record> {
        let (attempts, fingerprint, latency_ms) =
            (pending.attempts, pending.fingerprint, pending.latency_ms);
        let RowContent::Request(request) = row.content else {
            return None;
        };
        let place = (row.id, row.row, row.line);
        let mut kept = row.kept.map(crate::output::record::rename_kept);
        let (outcome, parsed, unaccepted) = self.accept(unit, &request.model, outcome);
        let mut record = match outcome {
            LineOutcome::Answer(completion) => {
                let cost = self.batch_cost(&completion, &request.model);
                let body = self
                    .opts
                    .output
                    .keep_response
                    .then(|| completion.body.clone());
                let mut info = self.info(place, request.prompt, request.model, fingerprint);
                info.kept = kept.take();
                let mut record = Record::ok(info, completion, latency_ms, attempts, cost);
                let spent = self.take_spent(unit, &record.model).unwrap_or_default();
                let parsed = self.schema.map(|schema| (parsed, schema));
                crate::job::answer::complete_ok(&mut record, &spent, parsed, body.as_deref());
                record
            }
            LineOutcome::Permanent(message) => {
                let info = (request.prompt, request.model, fingerprint, latency_ms);
                self.answered_error(place, info, message, attempts)
            }
            LineOutcome::Transient(message) if attempts < self.opts.batch.max_attempts => {
                tracing::debug!(row = place.1, "sent again in a new batch: {message}");
                self.counters.retries.fetch_add(1, Relaxed);
                self.state.retry.insert(unit, attempts);
                return None;
            }
            LineOutcome::Transient(message) => self.gave_up(
                place,
                (request.prompt, request.model, fingerprint, latency_ms),
                message,
                attempts,
                unaccepted,
            ),
        };
        // An error record holds what the row's answers that failed --json-schema cost.
        if let Some(spent) = self.take_spent(unit, &record.model) {
            spent.add_to(&mut record);
        }
        if let Some(kept) = kept {
            record
                .kept
                .get_or_insert_with(Default::default)
                .extend(*kept);
        }
        Some(record)
    }

    /// --json-schema: an answer that fails it was paid for — its tokens and cost wait in the
    /// state until the row's record holds them — and is worth another batch (a transient
    /// outcome, `true`). An accepted answer comes with its parsed value (`Null` without a
    /// schema).
    fn accept(
        &mut self,
        unit: u64,
        model: &str,
        outcome: LineOutcome,
    ) -> (LineOutcome, serde_json::Value, bool) {
        let LineOutcome::Answer(completion) = outcome else {
            return (outcome, serde_json::Value::Null, false);
        };
        match crate::job::answer::check_answer(self.schema, &completion) {
            Ok(value) => (LineOutcome::Answer(completion), value, false),
            Err(message) => {
                let cost = self.batch_cost(&completion, model);
                let spent = self.state.spent.entry(unit).or_default();
                spent.add(&completion.usage, cost);
                (
                    LineOutcome::Transient(message),
                    serde_json::Value::Null,
                    true,
                )
            }
        }
    }

    /// The error record of a row whose transient failures used up its batches (counted as a
    /// schema refusal when its last answer failed `--json-schema`).
    fn gave_up(
        &self,
        place: (String, u64, u64),
        info: (String, String, String, u64),
        message: String,
        attempts: u32,
        unaccepted: bool,
    ) -> Record {
        let counter = if unaccepted {
            &self.counters.unaccepted
        } else {
            &self.counters.transient_errors
        };
        counter.fetch_add(1, Relaxed);
        let message = format!(
            "gave up after {}: {message}",
            crate::util::human::count(u64::from(attempts), "batch")
        );
        self.answered_error(place, info, message, attempts)
    }

    /// The spend a unit's record takes from the state; the part earlier runs paid is noted, so
    /// that the summary's "cost this run" leaves it out.
    pub(super) fn take_spent(&mut self, unit: u64, model: &str) -> Option<Spent> {
        let spent = self.state.spent.remove(&unit)?;
        if let Some(earlier) = self.earlier.remove(&unit) {
            self.counters
                .paid_by_an_earlier_run(model, &earlier, self.simulated);
        }
        Some(spent)
    }

    /// The error record of a row its batch answered (or gave up on): `(prompt, model,
    /// fingerprint, latency_ms)` of its request and batch.
    pub(super) fn answered_error(
        &self,
        place: (String, u64, u64),
        (prompt, model, fingerprint, latency_ms): (String, String, String, u64),
        message: String,
        attempts: u32,
    ) -> Record {
        let mut record = self.error_record(place, prompt, None, message, attempts);
        record.model = model;
        record.fingerprint = fingerprint;
        record.latency_ms = latency_ms;
        record
    }

    /// An error record for a row (no tokens, no cost).
    pub(super) fn error_record(
        &self,
        place: (String, u64, u64),
        prompt: String,
        request: Option<&ChatRequest>,
        message: String,
        attempts: u32,
    ) -> Record {
        let model = request.map_or_else(
            || self.opts.request.first_model().to_string(),
            |r| r.model.clone(),
        );
        let fingerprint = request.map_or_else(String::new, |r| r.fingerprint.clone());
        let info = self.info(place, prompt, model, fingerprint);
        Record::error(info, message, 0, attempts)
    }
}
