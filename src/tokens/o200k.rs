//! Exact prompt-token counts of chat-completions request bodies with the `o200k_base` tokenizer
//! (its ranks ship inside the binary with tiktoken-rs: no network), in OpenAI's chat format:
//! 3 tokens per request priming the reply, plus per message 3 + role + content (content parts
//! summed) + name + 1. Exact for GPT-family models, an approximation for the others.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use crate::error::Error;

/// Tokens of framing per message in OpenAI's chat format.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens priming the assistant's reply, once per request.
pub(crate) const TOKENS_PER_REPLY: u64 = 3;
/// Extra token for a message's `name`.
pub(crate) const TOKENS_PER_NAME: u64 = 1;

/// Counts the prompt tokens of chat-completions request bodies with o200k_base (see the module
/// documentation for the formula). Build it once: constructing the tokenizer takes a while.
pub(crate) struct ChatTokenCounter {
    bpe: CoreBPE,
}

impl ChatTokenCounter {
    /// Loads the o200k_base vocabulary (embedded in the binary).
    pub(crate) fn new() -> Result<Self, Error> {
        let bpe = tiktoken_rs::o200k_base()
            .map_err(|e| Error::Config(format!("cannot load the o200k_base tokenizer: {e}")))?;
        Ok(ChatTokenCounter { bpe })
    }

    /// Tokens of a text (ordinary encoding: special-token text counts as plain text).
    pub(crate) fn text(&self, text: &str) -> u64 {
        if text.is_empty() {
            0
        } else {
            self.bpe.encode_ordinary(text).len() as u64
        }
    }

    /// Prompt tokens of a request body (JSON with `messages`).
    pub(crate) fn body(&self, body: &[u8]) -> Result<u64, String> {
        let parsed: Body<'_> = serde_json::from_slice(body)
            .map_err(|e| format!("request body without readable `messages`: {e}"))?;
        let mut total = TOKENS_PER_REPLY;
        for message in &parsed.messages {
            total += TOKENS_PER_MESSAGE;
            if let Some(role) = &message.role {
                total += self.role(&role.0);
            }
            if let Some(name) = &message.name {
                total += self.text(&name.0) + TOKENS_PER_NAME;
            }
            match &message.content {
                Content::None => {}
                Content::Text(text) => total += self.text(text),
                Content::Parts(parts) => total += parts.iter().map(|p| self.text(p)).sum::<u64>(),
            }
        }
        Ok(total)
    }

    fn role(&self, role: &str) -> u64 {
        // Every standard role is one token in o200k_base; skip the tokenizer for them.
        match role {
            "user" | "system" | "assistant" | "developer" | "tool" => 1,
            other => self.text(other),
        }
    }
}

/// Whether o200k_base is the model's own tokenizer (GPT family) rather than an approximation.
pub(crate) fn is_exact_model(model: &str) -> bool {
    ["gpt-", "o1", "o3", "o4", "chatgpt"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// The part of a request body the counter reads.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Content<'a>,
}

/// A string borrowed from the body when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A message's `content`: a string, the texts of its parts, or nothing countable. The parts are
/// the ones `api::messages::content_text` takes (a string, or an object's string `text`); there
/// they are joined for display, here each is counted on its own, as the API tokenizes them.
#[derive(Default)]
enum Content<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Parts(Vec<Cow<'a, str>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("message content")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::new();
        while let Some(part) = seq.next_element::<Part<'de>>()? {
            if let Some(text) = part.0 {
                parts.push(text);
            }
        }
        Ok(Content::Parts(parts))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Content::None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Content::None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Content::None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Content::None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Content::None)
    }
}

/// One content part: a string, or an object whose string `text` is taken.
struct Part<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PartVisitor).map(Part)
    }
}

struct PartVisitor;

impl<'de> Visitor<'de> for PartVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content part")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut text = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 == "text" {
                text = map.next_value::<MaybeText<'de>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A part's `text` value: taken when it is a string, ignored otherwise.
struct MaybeText<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Same rules as a part: strings are kept, anything else is skipped.
        d.deserialize_any(PartVisitor).map(MaybeText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_format_counts_framing_role_content_and_name() {
        let c = ChatTokenCounter::new().unwrap();
        let hello = c.text("Hello world");
        let body = br#"{"model":"gpt-5.2","messages":[{"role":"user","content":"Hello world"}]}"#;
        assert_eq!(c.body(body).unwrap(), 3 + 3 + 1 + hello);
        let named =
            br#"{"messages":[{"role":"user","name":"bob","content":"Hello world"}],"model":"x"}"#;
        assert_eq!(
            c.body(named).unwrap(),
            3 + 3 + 1 + hello + c.text("bob") + 1
        );
    }

    #[test]
    fn content_parts_escapes_and_non_text_parts() {
        let c = ChatTokenCounter::new().unwrap();
        let body = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a\nb"},{"type":"image_url","image_url":{"url":"x"}},"plain"]}]}"#;
        assert_eq!(
            c.body(body).unwrap(),
            3 + 3 + 1 + c.text("a\nb") + c.text("plain")
        );
        let null_content = br#"{"messages":[{"role":"assistant","content":null}]}"#;
        assert_eq!(c.body(null_content).unwrap(), 7);
        assert!(c.body(b"{}").is_err());
    }

    #[test]
    fn standard_roles_are_one_token() {
        let c = ChatTokenCounter::new().unwrap();
        for role in ["user", "system", "assistant", "developer", "tool"] {
            assert_eq!(c.text(role), 1, "{role}");
        }
    }

    #[test]
    fn gpt_family_is_exact() {
        assert!(is_exact_model("gpt-5.2"));
        assert!(is_exact_model("o3-mini"));
        assert!(!is_exact_model("gemini-3.1-pro-preview"));
    }
}
