//! JSONL input: one JSON object per line, in any of three shapes (mixable in one file):
//! `{"prompt": "..."}`, `{"messages": [...]}` (OpenAI chat shape, passed through as is), or an
//! OpenAI Batch API line `{"custom_id", "method", "url", "body": {...}}`. Blank lines are skipped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use super::encoding::{first_non_utf8, reencode_hint, starts_utf16, UTF8_BOM};
use super::source::{ReadRecord, Records, Source};
use super::{Extracted, IdSource, PromptSource, Row, RowFactory};
use super::{InputOptions, RowStream};
use crate::error::Error;

/// Streams rows from a JSONL reader.
pub(crate) struct JsonlRows {
    reader: BufReader<Box<dyn Read + Send>>,
    factory: RowFactory,
    prompt: PromptSource,
    ids: IdSource,
    buf: Vec<u8>,
    line: u64,
    row: u64,
    done: bool,
}

impl JsonlRows {
    pub(crate) fn new(
        reader: Box<dyn Read + Send>,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Self {
        JsonlRows {
            reader: BufReader::with_capacity(1 << 16, reader),
            factory,
            prompt,
            ids,
            buf: Vec::new(),
            line: 0,
            row: 0,
            done: false,
        }
    }

    /// The id of an object (parsed from `text`), `Ok(None)` when it has none (the row number is
    /// used). A number is kept as written: `1e3` stays `1e3`, and digits beyond 64 bits are kept.
    fn id_of(&self, text: &str, object: &Map<String, Value>) -> Result<Option<String>, String> {
        let (name, value) = match &self.ids {
            IdSource::Required(name) => match object.get(name) {
                Some(v) => (name.as_str(), v),
                None => return Err(format!("no `{name}` field (named by --id-column)")),
            },
            IdSource::Default => match object.get("id").or_else(|| object.get("custom_id")) {
                Some(v) => (
                    if object.contains_key("id") {
                        "id"
                    } else {
                        "custom_id"
                    },
                    v,
                ),
                None => return Ok(None),
            },
        };
        match value {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(number_text(text, name, n))),
            other => Err(format!(
                "`{name}` must be a string or a number, not {}",
                kind_of(other)
            )),
        }
    }

    fn extract(
        prompt: &PromptSource,
        text: &str,
        object: &Map<String, Value>,
    ) -> Result<Extracted, String> {
        let batch_body = match object.get("body") {
            Some(Value::Object(body)) => Some(body),
            Some(other) => {
                return Err(format!(
                    "`body` must be an object (OpenAI Batch API line), not {}",
                    kind_of(other)
                ))
            }
            None => None,
        };
        // A line outside the Batch shape may name its model: `{"model": "…", "messages": …}`.
        let own_model = match (batch_body, object.get("model")) {
            (None, Some(Value::String(model))) => {
                let mut fields = Map::new();
                fields.insert("model".into(), Value::String(model.clone()));
                Some(fields)
            }
            (None, Some(other)) => {
                return Err(format!(
                    "`model` must be a string naming the row's model, not {}",
                    kind_of(other)
                ))
            }
            _ => None,
        };
        let overrides = |body: Option<&Map<String, Value>>| body.cloned().or(own_model.clone());
        if let PromptSource::Template(template) = prompt {
            let prompt = template
                .fill(|name| object.get(name).map(|value| value_text(text, name, value)))
                .map_err(|missing| {
                    format!(
                        "--template names field `{missing}`, which this line lacks; its fields are: {}",
                        field_list(object)
                    )
                })?;
            return Ok(Extracted::Prompt {
                prompt,
                overrides: overrides(batch_body),
            });
        }
        if let Some(body) = batch_body {
            let messages = messages_of(body.get("messages"), "body.messages")?;
            return Ok(Extracted::Messages {
                messages,
                overrides: Some(body.clone()),
            });
        }
        if object.contains_key("messages") {
            let messages = messages_of(object.get("messages"), "messages")?;
            return Ok(Extracted::Messages {
                messages,
                overrides: overrides(None),
            });
        }
        let PromptSource::Column(column) = prompt else {
            unreachable!("template handled above")
        };
        match object.get(column) {
            Some(Value::String(prompt)) => Ok(Extracted::Prompt {
                prompt: prompt.clone(),
                overrides: overrides(None),
            }),
            Some(other) => Err(format!("`{column}` must be a string, not {}", kind_of(other))),
            None => Err(format!(
                "no `{column}` field, `messages` array or Batch API `body`; the line's fields are: {}",
                field_list(object)
            )),
        }
    }

    fn parse_line(&mut self) -> Result<Row, Error> {
        let line = self.line;
        let row = self.row;
        let text = match std::str::from_utf8(&self.buf) {
            Ok(text) => text,
            Err(_) => {
                let at = first_non_utf8(&self.buf).unwrap_or_default();
                let utf16 = line == 1 && starts_utf16(&self.buf);
                let hint = reencode_hint(&self.factory.path, utf16);
                return self
                    .factory
                    .unreadable(row, line, format!("not UTF-8 ({at}); {hint}"));
            }
        };
        let parsed = super::json_keys::parse(text);
        let object = match parsed {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return self.factory.unreadable(
                    row,
                    line,
                    format!("expected a JSON object, found {}", kind_of(&other)),
                )
            }
            Err(e) => {
                let message = json_error(text, &e);
                return self.factory.unreadable(row, line, message);
            }
        };
        let id = match self.id_of(text, &object) {
            Ok(id) => id,
            Err(message) => return self.factory.unreadable(row, line, message),
        };
        let kept = self
            .factory
            .keep
            .as_ref()
            .map(|keep| super::keep::from_object(keep, &object));
        let made = self
            .factory
            .make(row, line, id, || Self::extract(&self.prompt, text, &object));
        made.map(|row| Row { kept, ..row })
    }
}

impl ReadRecord for JsonlRows {
    fn read_next(&mut self) -> Option<Result<Row, Error>> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                self.line += 1;
                if self.line == 1 && self.buf.starts_with(UTF8_BOM) {
                    // Editors on Windows start files with a byte-order mark: not JSON.
                    self.buf.drain(..UTF8_BOM.len());
                }
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                self.row += 1;
                if self.factory.skips(self.row) {
                    return None;
                }
                Some(self.parse_line())
            }
            Err(e) => {
                self.done = true;
                Some(Err(Error::io(
                    format!(
                        "reading {} after line {}",
                        self.factory.path.display(),
                        self.line
                    ),
                    e,
                )))
            }
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// One JSON object per line.
pub(crate) struct Jsonl;

impl Source for Jsonl {
    fn has_header(&self) -> bool {
        false
    }

    fn rows(
        &self,
        opts: &InputOptions,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<RowStream, Error> {
        let rows = JsonlRows::new(opts.open_reader()?, factory, prompt, ids);
        Ok(Box::new(Records(rows)))
    }

    fn count(&self, path: &Path) -> Option<u64> {
        count_lines(std::fs::File::open(path).ok()?)
    }

    fn header(&self, opts: &InputOptions) -> Result<Vec<String>, Error> {
        Err(Error::Config(format!(
            "{}: a JSONL input has no header (each line names its own fields)",
            opts.path.display()
        )))
    }
}

/// The top-level fields of the first JSON object in the file (for `validate`); empty when there
/// is none.
pub(crate) fn first_object_fields(path: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|line| !line.trim().is_empty())
        .and_then(|line| {
            serde_json::from_str::<Map<String, Value>>(line.trim_start_matches('\u{feff}')).ok()
        })
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default()
}

/// A JSON syntax error with a single location, the column in characters (serde_json's message
/// ends with its own `at line 1 column N`, in bytes, which would contradict our `file:line`).
fn json_error(text: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = message.strip_suffix(&suffix).unwrap_or(&message);
    match e.column() {
        0 => format!("invalid JSON: {what}"),
        byte => {
            let column = text.char_indices().filter(|&(i, _)| i < byte).count();
            format!("invalid JSON at column {column}: {what}")
        }
    }
}

/// The text of number `n`, top-level field `name` of the JSON object `text`, exactly as written
/// (serde_json would print `1.50` as `1.5`, and digits beyond 64 bits as a float).
fn number_text(text: &str, name: &str, n: &Number) -> String {
    let fields = serde_json::from_str::<HashMap<String, &RawValue>>(text);
    match fields.ok().and_then(|fields| fields.get(name).copied()) {
        Some(raw) => raw.get().to_string(),
        None => n.to_string(),
    }
}

fn messages_of(value: Option<&Value>, name: &str) -> Result<Vec<Value>, String> {
    match value {
        Some(Value::Array(messages)) => Ok(messages.clone()),
        Some(other) => Err(format!("`{name}` must be an array, not {}", kind_of(other))),
        None => Err(format!("no `{name}` array")),
    }
}

/// A top-level field's text for a template: strings as is, null as empty, numbers as written in
/// `text`, anything else as compact JSON.
fn value_text<'a>(text: &str, name: &str, value: &'a Value) -> Cow<'a, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Number(n) => Cow::Owned(number_text(text, name, n)),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn field_list(object: &Map<String, Value>) -> String {
    if object.is_empty() {
        return "(none)".into();
    }
    object
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Counts non-blank lines.
pub(crate) fn count_lines(file: std::fs::File) -> Option<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut n = 0;
    let mut blank = true;
    loop {
        let chunk = reader.fill_buf().ok()?;
        if chunk.is_empty() {
            break;
        }
        for &b in chunk {
            if b == b'\n' {
                if !blank {
                    n += 1;
                }
                blank = true;
            } else if !b.is_ascii_whitespace() {
                blank = false;
            }
        }
        let len = chunk.len();
        reader.consume(len);
    }
    if !blank {
        n += 1;
    }
    Some(n)
}
