//! Structured outputs (`--json-schema FILE`): the schema a request sends as its
//! `response_format`, and the check of every answer against it.
//!
//! The schema file holds either a bare JSON Schema or OpenAI's `json_schema` object
//! (`{"name", "schema", "strict"}`). Requests carry
//! `{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}`; an answer must
//! be one JSON value that the schema accepts (the `jsonschema` crate validates it). An answer
//! that is not JSON, or breaks a rule, is retried like a transient failure (it counts as an
//! attempt; its tokens and cost are added to the row's record), then becomes an error record
//! naming the rule and where it failed.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::Error;

/// How an error record of an answer that failed the schema starts (`report` counts them).
pub(crate) const SCHEMA_FAILURE: &str = "answer does not match --json-schema";

/// A JSON Schema for every answer, with the name requests give it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    /// `json_schema.name` (letters, digits, `_` and `-`, at most 64).
    pub name: String,
    /// The schema itself.
    pub schema: Value,
}

impl JsonSchema {
    /// Reads a schema file: a bare JSON Schema, or `{"name", "schema", "strict"}`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read --json-schema {}", path.display()), e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path,
                e.line() as u64,
                format!("not JSON: {e} (a JSON Schema must be one JSON object)"),
            )
        })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let schema = JsonSchema::new(stem.as_deref().unwrap_or("answer"), value)
            .map_err(|message| Error::input(path, 1, message))?;
        Ok(schema)
    }

    /// A schema named `name` (used unless `value` is OpenAI's wrapper with its own name).
    /// `Err` says what is wrong with it.
    pub fn new(name: &str, value: Value) -> Result<Self, String> {
        let (name, schema) = match value {
            Value::Object(mut object)
                if object.get("schema").is_some_and(Value::is_object)
                    && object.contains_key("name") =>
            {
                let name = object
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_string();
                (name, object.remove("schema").unwrap_or_default())
            }
            other => (name.to_string(), other),
        };
        if !schema.is_object() {
            return Err("a JSON Schema must be a JSON object, e.g. {\"type\": \"object\", \"properties\": {…}}".into());
        }
        jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(JsonSchema {
            name: clean_name(&name),
            schema,
        })
    }

    /// The request's `response_format`.
    pub fn response_format(&self) -> Value {
        json!({
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": true}
        })
    }

    /// The top-level properties of an object schema, in alphabetical order (a CSV output gets
    /// one column each).
    pub fn properties(&self) -> Vec<String> {
        match self.schema.get("properties") {
            Some(Value::Object(properties)) => properties.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// A checker of answers (the schema compiled once).
    pub fn checker(&self) -> Result<SchemaChecker, Error> {
        let validator = jsonschema::validator_for(&self.schema).map_err(|e| {
            Error::Config(format!(
                "--json-schema {}: not a valid JSON Schema: {e}",
                self.name
            ))
        })?;
        Ok(SchemaChecker { validator })
    }
}

/// A compiled schema that checks answers.
#[derive(Debug)]
pub struct SchemaChecker {
    validator: jsonschema::Validator,
}

impl SchemaChecker {
    /// The answer's JSON value, or why it is not acceptable (one line, starting with
    /// [`SCHEMA_FAILURE`]).
    pub fn check(&self, content: Option<&str>) -> Result<Value, String> {
        let text = content.unwrap_or_default();
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "{SCHEMA_FAILURE}: the answer is not JSON ({e}): {}",
                preview(text)
            )
        })?;
        match self.validator.validate(&value) {
            Ok(()) => Ok(value),
            Err(e) => {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    "the top level".to_string()
                } else {
                    format!("`{at}`")
                };
                Err(format!(
                    "{SCHEMA_FAILURE}: {e} (at {at}; rule {})",
                    e.schema_path()
                ))
            }
        }
    }
}

/// A name OpenAI accepts: `[A-Za-z0-9_-]`, at most 64 characters.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "answer".into()
    } else {
        cleaned
    }
}

/// The start of a text, for a message.
fn preview(text: &str) -> String {
    let mut shown: String = text.chars().take(80).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// `--json-schema` compiled, and for a CSV output the parsed answer's `(column, property)`
/// columns (else it is written as `parsed`).
pub(crate) type AnswerSchema = (SchemaChecker, Option<Vec<(String, String)>>);

#[cfg(test)]
mod tests {
    use super::*;

    fn label_schema() -> JsonSchema {
        JsonSchema::new(
            "labels v1",
            json!({"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}, "score": {"type": "number"}},
                   "required": ["label", "score"], "additionalProperties": false}),
        )
        .unwrap()
    }

    #[test]
    fn answers_are_parsed_checked_and_failures_name_the_rule_and_place() {
        let checker = label_schema().checker().unwrap();
        assert_eq!(
            checker.check(Some(r#"{"label": "pos", "score": 0.9}"#)),
            Ok(json!({"label": "pos", "score": 0.9}))
        );
        let wrong = checker
            .check(Some(r#"{"label": "meh", "score": 1}"#))
            .unwrap_err();
        assert!(
            wrong.starts_with(SCHEMA_FAILURE) && wrong.contains("`/label`"),
            "{wrong}"
        );
        let missing = checker.check(Some(r#"{"label": "pos"}"#)).unwrap_err();
        assert!(
            missing.contains("score") && missing.contains("required"),
            "{missing}"
        );
        let prose = checker.check(Some("Sure! Here is the JSON:")).unwrap_err();
        assert!(
            prose.contains("not JSON") && prose.contains("Sure!"),
            "{prose}"
        );
        assert!(checker.check(None).is_err());
    }

    #[test]
    fn the_request_format_and_names_follow_openai() {
        let schema = label_schema();
        assert_eq!(schema.name, "labels_v1");
        let format = schema.response_format();
        assert_eq!(format["type"], "json_schema");
        assert_eq!(format["json_schema"]["strict"], true);
        assert_eq!(format["json_schema"]["schema"]["required"][0], "label");
        let wrapped = JsonSchema::new(
            "file",
            json!({"name": "mine", "schema": {"type": "object"}, "strict": true}),
        )
        .unwrap();
        assert_eq!(
            (wrapped.name.as_str(), &wrapped.schema),
            ("mine", &json!({"type": "object"}))
        );
        assert!(JsonSchema::new("x", json!({"type": "nope"}))
            .unwrap_err()
            .contains("not a valid JSON Schema"));
        assert!(JsonSchema::new("x", json!([1])).is_err());
    }
}
