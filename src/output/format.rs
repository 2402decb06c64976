//! Output formats behind one small trait, one type per format (like hyperfine's exporters):
//! JSONL (one object per line) and CSV (RFC 4180 quoting, multi-line text safe).

use crate::util::choice::Choice;
use std::path::Path;

use super::record::{Record, COLUMNS};

/// Encodes records as whole lines of one output format.
pub trait RecordFormat: Send {
    /// Bytes written once at the top of a new, empty file.
    fn header(&self) -> Vec<u8>;
    /// Appends one complete record, including its line ending, to `out`.
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>);
}

pub use crate::paths::is_csv;

/// The shape of an output file's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One record per line, as a JSON object.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// The OpenAI Batch API's output lines (`id`, `custom_id`, `response: {status_code,
    /// request_id, body}`, `error`), each with the whole record under `promptbatch` (so the file
    /// resumes like any output).
    OpenaiBatch,
}

impl Choice for OutputFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (OutputFormat::Jsonl, "jsonl", "One record per line, as a JSON object"),
        (OutputFormat::Csv, "csv", "CSV with a header row"),
        (OutputFormat::OpenaiBatch, "openai-batch", "The OpenAI Batch API's output lines (`id`, `custom_id`, `response: {status_code, request_id, body}`, `error`), each with the whole record under `promptbatch` (so the file resumes like any output)"),
    ];
}

impl OutputFormat {
    /// By extension: `.csv` is CSV, anything else JSONL.
    pub fn for_path(path: &Path) -> Self {
        if is_csv(path) {
            OutputFormat::Csv
        } else {
            OutputFormat::Jsonl
        }
    }

    /// The name `--output-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Csv => "csv",
            OutputFormat::OpenaiBatch => "openai-batch",
        }
    }

    /// An encoder of this format; `kept`: a CSV output's extra columns (output names, in order);
    /// `models`: how many models each row goes to (Batch-shaped lines need a `custom_id` per
    /// (row, model) when more than one).
    pub fn encoder(self, kept: Vec<String>, models: u64) -> Box<dyn RecordFormat> {
        match self {
            OutputFormat::Jsonl => Box::new(Jsonl),
            OutputFormat::Csv => Box::new(Csv { kept }),
            OutputFormat::OpenaiBatch => Box::new(OpenAiBatch {
                several_models: models > 1,
            }),
        }
    }
}

/// Picks the format from the output's extension: `.csv` is CSV, anything else JSONL.
pub fn for_path(path: &Path) -> Box<dyn RecordFormat> {
    for_path_with(path, Vec::new())
}

/// Like [`for_path`], for records that carry kept input columns: a CSV output's extra columns
/// are `kept` (output names, in order); JSONL writes each record's own kept values.
pub fn for_path_with(path: &Path, kept: Vec<String>) -> Box<dyn RecordFormat> {
    OutputFormat::for_path(path).encoder(kept, 1)
}

/// One JSON object per line, fields in schema order.
pub struct Jsonl;

impl RecordFormat for Jsonl {
    fn header(&self) -> Vec<u8> {
        Vec::new()
    }

    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, record).expect("a record always serializes");
        if let Some(kept) = record.kept.as_deref().filter(|k| !k.is_empty()) {
            out.pop(); // the record's closing brace: the kept fields follow inside the object
            for (name, value) in kept {
                out.push(b',');
                serde_json::to_writer(&mut *out, name).expect("a string serializes");
                out.push(b':');
                serde_json::to_writer(&mut *out, value).expect("a JSON value serializes");
            }
            out.push(b'}');
        }
        out.push(b'\n');
    }
}

impl Record {
    /// The record as its JSONL output line (without the newline): the schema's fields, then the
    /// kept columns, `parsed` and `response` the run added. (Here, beside the encoder it uses,
    /// so `record.rs` does not depend on the formats.)
    pub fn to_json(&self) -> String {
        let mut line = Vec::new();
        Jsonl.encode(self, &mut line);
        line.pop();
        String::from_utf8(line).expect("serde_json writes UTF-8")
    }
}

/// The OpenAI Batch API's output line shape, so tools that read Batch results read ours:
/// `{"id": "batch_req_…", "custom_id": ID, "response": {"status_code": 200, "request_id",
/// "body"}, "error": null}` for an ok record (the body is the kept `response` with
/// `--keep-response`, else rebuilt from the record), `"response": null, "error": {"code",
/// "message"}` for an error record; the whole record follows under `promptbatch`. With several
/// models per row the `custom_id` is `ID#MODEL`, unique per line as the Batch API's are.
pub struct OpenAiBatch {
    pub several_models: bool,
}

/// The key under which an OpenAI Batch-shaped line holds its record.
pub const BATCH_RECORD_KEY: &str = "promptbatch";

impl RecordFormat for OpenAiBatch {
    fn header(&self) -> Vec<u8> {
        Vec::new()
    }

    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        use serde_json::{json, Value};
        let (response, error) = match record.status {
            super::Status::Ok => {
                let kept = record.kept.as_deref();
                let body = match kept.and_then(|k| k.get(super::record::RESPONSE)) {
                    Some(body) => body.clone(),
                    None => json!({
                        "id": record.response_id,
                        "object": "chat.completion",
                        "model": record.model,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": record.completion},
                            "finish_reason": record.finish_reason,
                        }],
                        "usage": {
                            "prompt_tokens": record.prompt_tokens,
                            "completion_tokens": record.completion_tokens,
                            "total_tokens": record.total_tokens,
                            "prompt_tokens_details": {"cached_tokens": record.cached_tokens},
                            "completion_tokens_details": {"reasoning_tokens": record.reasoning_tokens},
                        },
                    }),
                };
                let response = json!({
                    "status_code": 200,
                    "request_id": record.response_id,
                    "body": body,
                });
                (response, Value::Null)
            }
            super::Status::Error => (
                Value::Null,
                json!({"code": "promptbatch_error", "message": record.error}),
            ),
        };
        out.extend_from_slice(b"{\"id\":");
        let id = format!("batch_req_{}_{}", record.row, record.fingerprint);
        serde_json::to_writer(&mut *out, &id).expect("a string serializes");
        out.extend_from_slice(b",\"custom_id\":");
        if self.several_models {
            let custom_id = format!("{}#{}", record.id, record.model);
            serde_json::to_writer(&mut *out, &custom_id).expect("a string serializes");
        } else {
            serde_json::to_writer(&mut *out, &record.id).expect("a string serializes");
        }
        out.extend_from_slice(b",\"response\":");
        serde_json::to_writer(&mut *out, &response).expect("a JSON value serializes");
        out.extend_from_slice(b",\"error\":");
        serde_json::to_writer(&mut *out, &error).expect("a JSON value serializes");
        out.extend_from_slice(b",\"promptbatch\":");
        Jsonl.encode(record, out); // the record and its newline
        out.pop();
        out.extend_from_slice(b"}\n");
    }
}

/// CSV with a header row; null is an empty field. `kept`: the extra columns after the schema's
/// (kept input columns, by output name).
#[derive(Default)]
pub struct Csv {
    pub kept: Vec<String>,
}

impl Csv {
    fn writer(out: &mut Vec<u8>) -> csv::Writer<&mut Vec<u8>> {
        csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::CRLF)
            .from_writer(out)
    }
}

impl RecordFormat for Csv {
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Csv::writer(&mut out);
        let columns = COLUMNS
            .iter()
            .copied()
            .chain(self.kept.iter().map(String::as_str));
        w.write_record(columns).expect("writing to memory");
        w.flush().expect("writing to memory");
        drop(w);
        out
    }

    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let mut w = Csv::writer(&mut *out);
        w.serialize(record).expect("a record always serializes");
        w.flush().expect("writing to memory");
        drop(w);
        if self.kept.is_empty() {
            return;
        }
        // The kept values as a CSV record of their own, joined to the schema's fields.
        out.truncate(out.len() - 2); // CRLF
        out.push(b',');
        let kept = record.kept.as_deref();
        let values = self
            .kept
            .iter()
            .map(|name| match kept.and_then(|k| k.get(name)) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            });
        let mut w = Csv::writer(out);
        w.write_record(values).expect("writing to memory");
        w.flush().expect("writing to memory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::Status;

    fn sample() -> Record {
        Record {
            id: "a\"1".into(),
            row: 1,
            prompt: "line one\nline, two".into(),
            completion: Some("ok".into()),
            finish_reason: Some("stop".into()),
            model: "gpt-5.2".into(),
            prompt_tokens: 13,
            cached_tokens: 0,
            completion_tokens: 1891,
            reasoning_tokens: 1480,
            total_tokens: 1904,
            latency_ms: 5,
            attempts: 1,
            status: Status::Ok,
            error: None,
            response_id: None,
            cost_usd: Some(0.026_496_75),
            fingerprint: "af63dc4c8601ec8c".into(),
            simulated: false,
            kept: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn jsonl_is_one_line_in_schema_order() {
        let mut out = Vec::new();
        Jsonl.encode(&sample(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.starts_with(r#"{"id":"a\"1","row":1,"prompt":"#));
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample());
        assert_eq!(
            sample().to_json() + "\n",
            text,
            "a callback sees the line written"
        );
    }

    #[test]
    fn csv_quotes_and_round_trips() {
        let mut out = Csv::default().header();
        Csv::default().encode(&sample(), &mut out);
        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            COLUMNS
        );
        let back: Record = reader.deserialize().next().unwrap().unwrap();
        assert_eq!(back, sample());
    }
}
