//! Chat messages as JSON values: a prompt's user message, and the text of a message or of a
//! `content` value (a string, or content parts) — the one rule for which parts are text, shared
//! by requests, the wire format's answers and the simulator.

use std::borrow::Cow;

use serde_json::Value;

/// The single user message of a prompt.
pub(crate) fn user_message(prompt: String) -> Value {
    serde_json::json!({"role": "user", "content": prompt})
}

pub(crate) fn is_system_message(message: &Value) -> bool {
    matches!(
        message.get("role").and_then(Value::as_str),
        Some("system") | Some("developer")
    )
}

/// The text of a message's `content`: a string as is, content parts' `text` joined with newlines.
pub(crate) fn message_text(message: &Value) -> String {
    message_str(message).into_owned()
}

/// [`message_text`], borrowed when the content is a plain string.
pub(crate) fn message_str(message: &Value) -> Cow<'_, str> {
    content_str(message.get("content").unwrap_or(&Value::Null))
}

/// The text of a `content` value (string, or array of parts: a string, or an object's string
/// `text`; others are not text), parts joined by newlines. The one rule for which parts are
/// text: the o200k counter (`tokens/o200k.rs`) counts the same parts, each on its own.
pub(crate) fn content_text(content: &Value) -> String {
    content_str(content).into_owned()
}

/// [`content_text`], borrowed when the content is a plain string.
fn content_str(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => Cow::Owned(
            parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    other => other.get("text").and_then(Value::as_str),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => Cow::Borrowed(""),
    }
}

/// Text of the last message whose role is `user` (empty when there is none).
pub(crate) fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(message_text)
        .unwrap_or_default()
}
