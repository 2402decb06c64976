//! JSONL input: one JSON object per line, in any of three shapes (mixable in one file):
//! `{"prompt": "..."}`, `{"messages": [...]}` (OpenAI chat shape, passed through as is), or an
//! OpenAI Batch API line `{"custom_id", "method", "url", "body": {...}}`. Blank lines are skipped.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::{Extracted, IdSource, PromptSource, Row, RowFactory};
use crate::error::Error;

/// The UTF-8 byte-order mark some editors put at the start of a file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

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
    pub fn new(
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

    /// The id of an object, `Ok(None)` when it has none (the row number is used).
    fn id_of(&self, object: &Map<String, Value>) -> Result<Option<String>, String> {
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
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(format!(
                "`{name}` must be a string or a number, not {}",
                kind_of(other)
            )),
        }
    }

    fn extract(&self, object: &Map<String, Value>) -> Result<Extracted, String> {
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
        if let PromptSource::Template(template) = &self.prompt {
            let prompt = template
                .fill(|name| object.get(name).map(value_text))
                .map_err(|missing| {
                    format!(
                        "--template names field `{missing}`, which this line lacks; its fields are: {}",
                        field_list(object)
                    )
                })?;
            return Ok(Extracted::Prompt {
                prompt,
                overrides: batch_body.cloned(),
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
                overrides: None,
            });
        }
        let PromptSource::Column(column) = &self.prompt else {
            unreachable!("template handled above")
        };
        match object.get(column) {
            Some(Value::String(prompt)) => Ok(Extracted::Prompt {
                prompt: prompt.clone(),
                overrides: None,
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
        let object = match serde_json::from_slice::<Value>(&self.buf) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return self.factory.unreadable(
                    row,
                    line,
                    format!("expected a JSON object, found {}", kind_of(&other)),
                )
            }
            Err(e) => {
                return self
                    .factory
                    .unreadable(row, line, format!("invalid JSON: {e}"))
            }
        };
        let id = match self.id_of(&object) {
            Ok(id) => id,
            Err(message) => return self.factory.unreadable(row, line, message),
        };
        let extracted = self.extract(&object);
        self.factory.make(row, line, id, extracted)
    }
}

impl Iterator for JsonlRows {
    type Item = Result<Row, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    if self.line == 1 && self.buf.starts_with(UTF8_BOM) {
                        // Editors on Windows start files with a byte-order mark: not JSON.
                        self.buf.drain(..UTF8_BOM.len());
                    }
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.row += 1;
                    if self.factory.skips(self.row) {
                        continue;
                    }
                    return Some(self.parse_line());
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::io(
                        format!(
                            "reading {} after line {}",
                            self.factory.path.display(),
                            self.line
                        ),
                        e,
                    )));
                }
            }
        }
        None
    }
}

fn messages_of(value: Option<&Value>, name: &str) -> Result<Vec<Value>, String> {
    match value {
        Some(Value::Array(messages)) => Ok(messages.clone()),
        Some(other) => Err(format!("`{name}` must be an array, not {}", kind_of(other))),
        None => Err(format!("no `{name}` array")),
    }
}

/// A field's text for a template: strings as is, null as empty, anything else as compact JSON.
fn value_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
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
