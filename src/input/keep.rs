//! `--keep-columns`: input columns (CSV) or fields (JSONL) copied unchanged into each record, so
//! the output joins back to the user's own data (a `ticket_id`, a label, a split).
//!
//! Values stay what they were: CSV fields are strings, JSONL values stay JSON (numbers, objects,
//! null). A named JSONL field that a line lacks is `null`. How a kept name that collides with a
//! record field is written is the output's business (`output::record::kept_names`).

use serde_json::{Map, Value};

/// Which input columns go through to the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepColumns {
    /// Every column of a CSV input, every field of each JSONL line.
    All,
    /// These columns / fields, in this order.
    Named(Vec<String>),
}

impl KeepColumns {
    /// Parses `a,b,c` or `all`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "all" {
            return Ok(KeepColumns::All);
        }
        let mut names: Vec<String> = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(format!(
                    "`{text}`: an empty column name; write --keep-columns a,b (or all)"
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("`{text}` names `{name}` twice"));
            }
            names.push(name.to_string());
        }
        Ok(KeepColumns::Named(names))
    }
}

/// The kept values of one row, by input name, in column order.
pub(crate) type Kept = Box<Map<String, Value>>;

/// The kept fields of a JSONL object.
pub(crate) fn from_object(keep: &KeepColumns, object: &Map<String, Value>) -> Kept {
    let map = match keep {
        KeepColumns::All => object.clone(),
        KeepColumns::Named(names) => names
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    object.get(name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect(),
    };
    Box::new(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_all_and_refuses_empty_or_repeated_names() {
        assert_eq!(KeepColumns::parse("all"), Ok(KeepColumns::All));
        assert_eq!(
            KeepColumns::parse(" ticket_id , label"),
            Ok(KeepColumns::Named(vec!["ticket_id".into(), "label".into()]))
        );
        assert!(KeepColumns::parse("a,,b").is_err());
        assert!(KeepColumns::parse("a,a").unwrap_err().contains("twice"));
    }

    #[test]
    fn named_jsonl_fields_keep_their_json_and_missing_ones_are_null() {
        let object: Map<String, Value> =
            serde_json::from_str(r#"{"n": 7, "tags": ["x"], "prompt": "p"}"#).unwrap();
        let keep = KeepColumns::Named(vec!["tags".into(), "n".into(), "gone".into()]);
        let kept = from_object(&keep, &object);
        assert_eq!(
            Value::Object(*kept),
            serde_json::json!({"tags": ["x"], "n": 7, "gone": null})
        );
    }
}
