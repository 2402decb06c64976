//! The OpenAI chat-completions wire format (the seed pages' shape; also what EvoLink, LiteLLM,
//! vLLM and other OpenAI-compatible servers speak): a request is `POST {base}/chat/completions`
//! with the request's fields as its JSON body, and an answer is parsed from
//! `choices[0].message.content`, `finish_reason`, `id`, `model` and `usage` (with cached and
//! reasoning token details). Missing or null fields count as 0; unknown fields are ignored.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::messages::content_text;
use super::response::{Completion, TokenUsage, SIMULATOR_FINGERPRINT};
use super::wire::WireFormat;

/// OpenAI's `POST /v1/chat/completions`.
#[derive(Debug)]
pub struct OpenAiChat;

impl WireFormat for OpenAiChat {
    fn path(&self) -> &'static str {
        "chat/completions"
    }

    fn encode(&self, fields: &Map<String, Value>) -> Vec<u8> {
        serde_json::to_vec(fields).expect("a JSON map always serializes")
    }

    fn decode(&self, body: &[u8]) -> Result<Completion, String> {
        parse(body)
    }
}

/// The sample response of the seed page (`../shared/seeds/000_*.txt`), verbatim: the shape
/// [`parse`] is built for (tests and benchmarks use it).
pub const SEED_RESPONSE: &str = r#"{
  "id": "chatcmpl-20251010015944503180122WJNB8Eid",
  "model": "gpt-5.2",
  "object": "chat.completion",
  "created": 1760032810,
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! I'm happy to introduce GPT-5.2 to you."}, "finish_reason": "stop"}],
  "usage": {
    "prompt_tokens": 13, "completion_tokens": 1891, "total_tokens": 1904,
    "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": 13, "audio_tokens": 0, "image_tokens": 0},
    "completion_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 1480},
    "input_tokens": 0, "output_tokens": 0, "input_tokens_details": null
  }
}"#;

#[derive(Deserialize)]
struct RawResponse {
    id: Option<String>,
    system_fingerprint: Option<String>,
    model: Option<String>,
    choices: Option<Vec<RawChoice>>,
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct RawChoice {
    message: Option<RawMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    content: Option<Value>,
}

#[derive(Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<RawPromptDetails>,
    completion_tokens_details: Option<RawCompletionDetails>,
}

#[derive(Deserialize)]
struct RawPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawCompletionDetails {
    reasoning_tokens: Option<u64>,
}

/// Parses a 2xx body; an error says why it is unusable (invalid JSON, no choices).
pub fn parse(body: &[u8]) -> Result<Completion, String> {
    let raw: RawResponse =
        serde_json::from_slice(body).map_err(|e| format!("unparsable response body: {e}"))?;
    let choice = raw
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or("response has no `choices`")?;
    let content = choice
        .message
        .and_then(|m| m.content)
        .and_then(|c| match c {
            Value::Null => None,
            Value::String(text) => Some(text),
            other => Some(content_text(&other)),
        });
    let usage_reported = raw.usage.is_some();
    let usage = raw.usage.map(|u| {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let completion = u.completion_tokens.unwrap_or(0);
        TokenUsage {
            prompt,
            cached: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            completion,
            reasoning: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            total: u.total_tokens.unwrap_or(prompt + completion),
        }
    });
    Ok(Completion {
        simulated: raw.system_fingerprint.as_deref() == Some(SIMULATOR_FINGERPRINT),
        content,
        finish_reason: choice.finish_reason,
        model: raw.model,
        response_id: raw.id,
        usage: usage.unwrap_or_default(),
        usage_reported,
        body: bytes::Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_sample() {
        let c = parse(SEED_RESPONSE.as_bytes()).unwrap();
        assert_eq!(
            c.content.as_deref(),
            Some("Hello! I'm happy to introduce GPT-5.2 to you.")
        );
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            c.response_id.as_deref(),
            Some("chatcmpl-20251010015944503180122WJNB8Eid")
        );
        assert_eq!(
            c.usage,
            TokenUsage {
                prompt: 13,
                cached: 0,
                completion: 1891,
                reasoning: 1480,
                total: 1904
            }
        );
    }

    #[test]
    fn null_and_missing_fields_count_as_zero() {
        let c = parse(
            br#"{"choices":[{"message":{"content":null}}],"usage":{"prompt_tokens":5,"prompt_tokens_details":null,"completion_tokens":null}}"#,
        )
        .unwrap();
        assert_eq!(c.content, None);
        assert_eq!(c.usage.prompt, 5);
        assert_eq!(c.usage.cached, 0);
        assert_eq!(c.usage.completion, 0);
        assert_eq!(c.usage.total, 5);
    }

    #[test]
    fn truncated_body_and_missing_choices_are_errors() {
        assert!(parse(&SEED_RESPONSE.as_bytes()[..100]).is_err());
        assert!(parse(b"{\"id\":\"x\"}").unwrap_err().contains("choices"));
    }
}
