//! Parsing a chat-completions answer in the seed shape: `choices[0].message.content`,
//! `finish_reason`, `id`, `model` and `usage` (with cached and reasoning token details).
//! Missing or null fields count as 0; unknown fields are ignored.

use serde::Deserialize;
use serde_json::Value;

use super::request::content_text;

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

/// Token counts of one answer, as the API reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    /// All prompt tokens, cached ones included.
    pub prompt: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached: u64,
    /// All completion tokens, reasoning ones included.
    pub completion: u64,
    /// Reasoning tokens (part of `completion`).
    pub reasoning: u64,
    /// `total_tokens` (prompt + completion when the API omits it).
    pub total: u64,
}

impl std::ops::AddAssign<&TokenUsage> for TokenUsage {
    /// Adds another answer's counts, field by field.
    fn add_assign(&mut self, other: &TokenUsage) {
        self.prompt += other.prompt;
        self.cached += other.cached;
        self.completion += other.completion;
        self.reasoning += other.reasoning;
        self.total += other.total;
    }
}

impl TokenUsage {
    /// These counts less `other`'s, field by field (never below 0).
    pub fn less(&self, other: &TokenUsage) -> TokenUsage {
        TokenUsage {
            prompt: self.prompt.saturating_sub(other.prompt),
            cached: self.cached.saturating_sub(other.cached),
            completion: self.completion.saturating_sub(other.completion),
            reasoning: self.reasoning.saturating_sub(other.reasoning),
            total: self.total.saturating_sub(other.total),
        }
    }
}

/// The useful content of one successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: Option<String>,
    /// The answer came from promptbatch's simulator (`mock-server`, `--dry-run`): its body says
    /// so (`system_fingerprint` [`SIMULATOR_FINGERPRINT`]) or its headers do
    /// ([`SIMULATOR_HEADER`]). Such an answer is never taken for a paid one.
    pub simulated: bool,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    pub response_id: Option<String>,
    pub usage: TokenUsage,
    /// The answer had a `usage` object: without one its tokens are unknown (zeros here), and so
    /// is its cost — never $0.
    pub usage_reported: bool,
    /// The whole response body (for `--keep-response`; shares the received buffer).
    pub body: bytes::Bytes,
}

/// The `system_fingerprint` of the simulator's answers.
pub const SIMULATOR_FINGERPRINT: &str = "fp_promptbatch_simulator";
/// The header on every answer of the simulator.
pub const SIMULATOR_HEADER: &str = "x-promptbatch-simulator";

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
