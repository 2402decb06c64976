//! A JSON check serde_json does not make: no object may repeat a key. serde_json keeps the last
//! value of a repeated key without a word, so `{"prompt": "a", "prompt": "b"}` would silently send
//! `b`; here it is an error instead (in nested objects too, e.g. a message's `content`).
//!
//! [`parse`] reads a line once, building the value and checking its keys together; only a line
//! that fails is read again, the two-step way ([`check`] after serde_json's own parse), so that a
//! line with several problems reports the same one either way.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON whose objects have unique keys. The error is the one of serde_json's
/// parse of `text` when it fails, else the repeated key's (with serde_json's position).
pub(crate) fn parse(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Unique>(text)
        .map(|unique| unique.0)
        .or_else(|_| serde_json::from_str::<Value>(text).and_then(|v| check(text).map(|()| v)))
}

/// Checks `text` (valid JSON) for a repeated key; the error carries serde_json's position.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<UniqueKeys>(text).map(|_| ())
}

/// The error of a repeated key.
fn repeated<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "key `{key}` appears twice in one object (keep one: which value counts would be a guess)"
    ))
}

/// A JSON value built as serde_json builds a [`Value`], refusing a repeated key on the way.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

/// How serde_json (with `arbitrary_precision`) hands a number to a visitor: a one-entry map
/// under this key, with the number's text as written.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> DeserializeSeed<'de> for UniqueVisitor {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        UniqueVisitor.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(UniqueVisitor)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN && object.is_empty() {
                // A number as written (serde_json's `arbitrary_precision`): kept exactly.
                let written: String = map.next_value()?;
                return written
                    .parse::<Number>()
                    .map(Value::Number)
                    .map_err(serde::de::Error::custom);
            }
            match object.entry(key) {
                Entry::Occupied(entry) => return Err(repeated(entry.key())),
                Entry::Vacant(entry) => {
                    entry.insert(map.next_value_seed(UniqueVisitor)?);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// Any JSON value whose objects have unique keys (nothing is kept).
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(repeated(&key));
            }
            map.next_value::<UniqueKeys>()?;
            keys.insert(key);
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_builds_what_serde_json_builds() {
        let text = r#"{"id":7,"n":-3,"f":1.5,"big":18446744073709551615,"t":true,"z":null,"s":"a\"b","m":[{"role":"user","content":"x"}],"o":{"k":{}}}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn parse_refuses_a_repeated_key_with_the_two_step_message() {
        for text in [
            r#"{"prompt":"a","prompt":"b"}"#,
            r#"{"messages":[{"role":"user","role":"system"}]}"#,
        ] {
            let one = parse(text).unwrap_err().to_string();
            assert_eq!(one, check(text).unwrap_err().to_string());
            assert!(one.contains("appears twice"), "{one}");
        }
        // A line with a repeated key and broken JSON further on reports the broken JSON, as
        // serde_json's own parse (which ran first) always did.
        let text = r#"{"a":1,"a":2,"b":}"#;
        assert_eq!(
            parse(text).unwrap_err().to_string(),
            serde_json::from_str::<Value>(text).unwrap_err().to_string()
        );
    }
}
