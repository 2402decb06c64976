//! The result record written for every input row, in the field order of the output schema.

use serde::{Deserialize, Serialize};

use std::time::SystemTime;

use crate::api::schema::JsonSchema;
use crate::api::{Completion, TokenUsage};

/// A record's fields beyond the schema's, by output name (the same type as `input::Kept`).
pub(crate) type Kept = Box<serde_json::Map<String, serde_json::Value>>;

/// Whether a row got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
}

/// One output record. Field order is the output schema's column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub row: u64,
    pub prompt: String,
    pub completion: Option<String>,
    pub finish_reason: Option<String>,
    pub model: String,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub latency_ms: u64,
    pub attempts: u32,
    pub status: Status,
    pub error: Option<String>,
    pub response_id: Option<String>,
    /// USD; `None` (null / empty) when the model has no price. Written rounded to 1e-9
    /// (`0.00044625`, not `0.00044625000000000003`).
    #[serde(default, serialize_with = "crate::util::human::serialize_opt_usd")]
    pub cost_usd: Option<f64>,
    /// Hash of the request body sent (empty when no request could be built); resume compares it.
    #[serde(default)]
    pub fingerprint: String,
    /// The answer came from the built-in simulator (`--dry-run`), not a real API: nothing was
    /// paid, and a real run never counts the row as done.
    #[serde(default, deserialize_with = "any_bool")]
    pub simulated: bool,
    /// When the row's first attempt was sent (RFC 3339, UTC); for a row never sent, when its
    /// record was made.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When the record was made (RFC 3339, UTC).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// `--keep-columns`: the row's input values, by output name (a name that is also a field of
    /// the schema is `input_NAME`: `kept_names`), written after the schema's fields. Reading an
    /// output fills it only on request (`Records::last_extras`, for rewrites).
    #[serde(skip)]
    pub kept: Option<Kept>,
}

/// A boolean schema field's text as other tools write it back: `true`, `True`, `TRUE`, `1`
/// (and the same for false, or empty); `None` for anything else.
pub(crate) fn bool_text(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" | "" => Some(false),
        _ => None,
    }
}

/// A boolean field as other tools write it back: JSON `true`/`false`, and in CSV `true`,
/// `True`, `TRUE` (pandas, Excel), `1`/`0`, or empty (false). Anything else is an error.
pub(crate) fn any_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct AnyBool;
    impl serde::de::Visitor<'_> for AnyBool {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("true or false (or True, TRUE, 1, 0, empty)")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 | 1 => Ok(v == 1),
                _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<bool, E> {
            self.visit_u64(u64::try_from(v).unwrap_or(u64::MAX))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            bool_text(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(AnyBool)
}

/// The column names, in order (the CSV header).
pub const COLUMNS: [&str; 21] = [
    "id",
    "row",
    "prompt",
    "completion",
    "finish_reason",
    "model",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "latency_ms",
    "attempts",
    "status",
    "error",
    "response_id",
    "cost_usd",
    "fingerprint",
    "simulated",
    "started_at",
    "finished_at",
];

/// Names the output schema reserves besides [`COLUMNS`] (fields written by some options).
const RESERVED: [&str; 5] = ["parsed", RESPONSE, DUPLICATE_OF, REUSED_FROM, SAVED_USD];

/// The field naming the row whose paid answer a record copies (this output; `reuse`).
pub(crate) const DUPLICATE_OF: &str = "duplicate_of";
/// The field naming the earlier output a record's answer comes from (`--reuse`).
pub(crate) const REUSED_FROM: &str = "reused_from";
/// What the answer a record copies cost when it was bought.
pub(crate) const SAVED_USD: &str = "saved_usd";
/// The fields a record answered without a request has, in a CSV output's column order.
pub(crate) const MARKERS: [&str; 3] = [DUPLICATE_OF, REUSED_FROM, SAVED_USD];

/// A CSV output's extra columns `kept` followed by the [`MARKERS`].
pub(crate) fn with_marker_columns(kept: &[String]) -> Vec<String> {
    let mut columns = kept.to_vec();
    columns.extend(MARKERS.iter().map(|m| m.to_string()));
    columns
}

/// The field `--keep-response` stores the whole response body in.
pub(crate) const RESPONSE: &str = "response";

/// The output names of kept input columns, in their order: its own, or `input_` + it while that
/// collides with a field of the schema or with another kept column's name (`id` → `input_id`;
/// with `input_id` kept too, `id` → `input_input_id`): no two kept values share a name.
pub(crate) fn kept_names<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    let schema = |n: &str| COLUMNS.contains(&n) || RESERVED.contains(&n);
    let mut given: Vec<String> = Vec::new();
    for name in names.clone() {
        if !schema(name) {
            given.push(name.to_string());
            continue;
        }
        let mut renamed = format!("input_{name}");
        while schema(&renamed) || names.clone().any(|n| n == renamed) || given.contains(&renamed) {
            renamed.insert_str(0, "input_");
        }
        given.push(renamed);
    }
    given
}

/// Kept input values under their output names ([`kept_names`]).
pub(crate) fn rename_kept(kept: Kept) -> Kept {
    let names = kept_names(kept.keys().map(String::as_str));
    if kept.keys().zip(&names).all(|(a, b)| a == b) {
        return kept;
    }
    Box::new(
        names
            .into_iter()
            .zip(kept.into_iter().map(|(_, value)| value))
            .collect(),
    )
}

/// A time as RFC 3339 in UTC, to the millisecond (`2026-11-30T13:57:37.123Z`).
pub(crate) fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The columns a CSV output gets for the parsed answer: `(column, property)` for each top-level
/// property, a column named like a field of the record (or `taken`) prefixed `parsed_`.
pub(crate) fn parsed_csv_columns(schema: &JsonSchema, taken: &[String]) -> Vec<(String, String)> {
    schema
        .properties()
        .into_iter()
        .map(|property| {
            let mut column = property.clone();
            while COLUMNS.contains(&column.as_str())
                || taken.contains(&column)
                || column == RESPONSE
            {
                column.insert_str(0, "parsed_");
            }
            (column, property)
        })
        .collect()
}

/// The parsed answer as record fields: `parsed` for a JSONL output, one field per column for CSV.
pub(crate) fn parsed_fields(
    value: serde_json::Value,
    csv_columns: Option<&[(String, String)]>,
) -> serde_json::Map<String, serde_json::Value> {
    match csv_columns {
        None => serde_json::Map::from_iter([("parsed".to_string(), value)]),
        Some(columns) => columns
            .iter()
            .map(|(column, property)| {
                (
                    column.clone(),
                    value
                        .get(property)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null),
                )
            })
            .collect(),
    }
}

/// What a record says about the row itself, whatever its outcome.
#[derive(Debug, Clone, Default)]
pub struct RowInfo {
    pub id: String,
    pub row: u64,
    /// Where the row starts in the input (for messages; not written).
    pub line: u64,
    pub prompt: String,
    /// The model the request was sent to (the record's `model`, ok or error: the unit of work
    /// is a (row, model) pair, so an answer's own `model` name — a dated snapshot — does not
    /// replace it; `--keep-response` keeps that name in `response.model`).
    pub model: String,
    pub fingerprint: String,
    /// The run talks to the built-in simulator (`--dry-run`).
    pub simulated: bool,
    /// `--keep-columns`: the row's kept input values.
    pub kept: Option<Kept>,
    /// When the row's first attempt was sent.
    pub started: Option<std::time::SystemTime>,
}

impl Record {
    /// An ok record from an answer.
    pub fn ok(
        info: RowInfo,
        completion: Completion,
        latency_ms: u64,
        attempts: u32,
        cost_usd: Option<f64>,
    ) -> Self {
        let usage = completion.usage;
        Record {
            id: info.id,
            row: info.row,
            prompt: info.prompt,
            completion: completion.content,
            finish_reason: completion.finish_reason,
            model: info.model,
            prompt_tokens: usage.prompt,
            cached_tokens: usage.cached,
            completion_tokens: usage.completion,
            reasoning_tokens: usage.reasoning,
            total_tokens: usage.total,
            latency_ms,
            attempts,
            status: Status::Ok,
            error: None,
            response_id: completion.response_id,
            cost_usd,
            fingerprint: info.fingerprint,
            simulated: info.simulated || completion.simulated,
            started_at: Some(timestamp(info.started.unwrap_or_else(SystemTime::now))),
            finished_at: Some(timestamp(SystemTime::now())),
            kept: info.kept,
        }
    }

    /// An error record (no tokens were billed for it as far as the API told us).
    pub fn error(info: RowInfo, error: String, latency_ms: u64, attempts: u32) -> Self {
        Record {
            id: info.id,
            row: info.row,
            prompt: info.prompt,
            completion: None,
            finish_reason: None,
            model: info.model,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 0,
            latency_ms,
            attempts,
            status: Status::Error,
            error: Some(error),
            response_id: None,
            cost_usd: Some(0.0),
            fingerprint: info.fingerprint,
            simulated: info.simulated,
            started_at: Some(timestamp(info.started.unwrap_or_else(SystemTime::now))),
            finished_at: Some(timestamp(SystemTime::now())),
            kept: info.kept,
        }
    }

    /// The token counts of this record.
    pub fn usage(&self) -> TokenUsage {
        TokenUsage {
            prompt: self.prompt_tokens,
            cached: self.cached_tokens,
            completion: self.completion_tokens,
            reasoning: self.reasoning_tokens,
            total: self.total_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_avoid_the_records_fields() {
        let schema = crate::api::schema::JsonSchema::new(
            "s",
            serde_json::json!({"type": "object", "properties": {"id": {}, "label": {}, "note": {}}}),
        )
        .unwrap();
        let columns = parsed_csv_columns(&schema, &["note".to_string()]);
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["parsed_id", "label", "parsed_note"]);
        let fields = parsed_fields(serde_json::json!({"id": 3, "label": "x"}), Some(&columns));
        assert_eq!(fields["parsed_id"], 3);
        assert_eq!(fields["parsed_note"], serde_json::Value::Null);
    }
}
