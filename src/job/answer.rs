//! An accepted answer's record, the same for both transports: its cost, its check against
//! `--json-schema`, and what the record carries besides the answer (earlier paid answers, the
//! parsed fields, the whole body with `--keep-response`).

use tracing::warn;

use crate::api::schema::AnswerSchema;
use crate::money::cost::PriceTable;
use crate::money::spent::Spent;
use crate::output::Record;

/// What an answer cost under `billing`: `None` when its model has no price, or when it
/// reported no `usage` (its tokens, and so its cost, are unknown — never $0; warned once).
pub(crate) fn cost_of(
    prices: &PriceTable,
    billing: crate::money::cost::Billing,
    models: &[&str],
    completion: &crate::api::Completion,
) -> Option<f64> {
    if !completion.usage_reported {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            warn!(
                "an answer of `{}` reported no `usage`: its tokens and cost are unknown (null in its record; `report` counts it as unpriced) and --max-cost counts its worst case",
                models.last().copied().unwrap_or_default()
            );
        });
        return None;
    }
    prices.cost_via(billing, models, &completion.usage)
}

/// `--json-schema`: the answer's JSON value, or why it fails the schema (one line naming the
/// rule). `Null` without a schema. Both transports check answers here.
pub(crate) fn check_answer(
    schema: Option<&AnswerSchema>,
    completion: &crate::api::Completion,
) -> Result<serde_json::Value, String> {
    match schema {
        Some((checker, _)) => checker.check(completion.content.as_deref()),
        None => Ok(serde_json::Value::Null),
    }
}

/// Completes the ok record of an accepted answer, for both transports: the row's earlier paid
/// answers (`spent`: they failed `--json-schema`) added to its tokens and cost, the parsed
/// answer (`parsed` in JSONL, a CSV output's columns) and, with `--keep-response`, the body.
pub(crate) fn complete_ok(
    record: &mut Record,
    spent: &Spent,
    parsed: Option<(serde_json::Value, &AnswerSchema)>,
    body: Option<&[u8]>,
) {
    spent.add_to(record);
    if let Some((value, (_, columns))) = parsed {
        let fields = crate::output::record::parsed_fields(value, columns.as_deref());
        record
            .kept
            .get_or_insert_with(Default::default)
            .extend(fields);
    }
    if let Some(body) = body {
        keep_response(record, body);
    }
}

/// Stores the whole response body in an ok record (`--keep-response`): as JSON, or as a string
/// when the body, though it parsed as an answer, is somehow not one JSON value.
fn keep_response(record: &mut Record, body: &[u8]) {
    let value = serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
    record
        .kept
        .get_or_insert_with(Default::default)
        .insert(crate::output::record::RESPONSE.to_string(), value);
}
