//! Building the JSON body of one chat-completions request from a row's messages, the command-line
//! defaults (model, max_tokens, …, `--param`) and, for Batch API lines, the line's own `body`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::messages::{is_system_message, last_user_text, message_str, user_message};
use crate::api::schema::JsonSchema;
use crate::tokens;

/// A request ready to send: its serialized body plus what the runner needs to know about it.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The exact JSON body sent (identical on every retry).
    pub body: Bytes,
    /// The `model` field of the body.
    pub model: String,
    /// Text of the last user message, content parts joined with newlines.
    pub prompt: String,
    /// Estimated prompt tokens (for --tpm).
    pub estimated_prompt_tokens: u64,
    /// `max_tokens` / `max_completion_tokens` of the body, if any.
    pub max_tokens: Option<u64>,
    /// Hash of the body: any change to what is sent (messages, model, parameters) changes it.
    pub fingerprint: String,
    /// The hash of the request's cacheable prefix ([`prefix_of`]): `None` when it is shorter
    /// than [`CACHEABLE_PREFIX_TOKENS`] (a provider caches nothing then).
    pub prefix: Option<u64>,
}

/// Providers cache a prompt prefix from this many tokens on (OpenAI: 1,024, then in steps of
/// [`CACHE_STEP_TOKENS`]).
pub(crate) const CACHEABLE_PREFIX_TOKENS: u64 = 1_024;
/// A cached prefix is counted in steps of this many tokens (OpenAI: 128).
pub(crate) const CACHE_STEP_TOKENS: u64 = 128;

/// The prefix a provider's prompt cache can serve: every message but the last (a system
/// prompt, a few-shot block), with the model (a cache is per model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// FNV-1a of the model and the prefix messages' JSON: stable across runs and platforms
    /// (`--prompt-cache-key` sends it, so the request fingerprint depends on it).
    pub hash: u64,
    /// Estimated tokens of the prefix ([`tokens::estimate`] + per-message overhead).
    pub tokens: u64,
}

/// The cacheable prefix of a request to `model` with `messages`: `None` when it is shorter than
/// [`CACHEABLE_PREFIX_TOKENS`] (one message only, or short ones). Hashes only long prefixes.
pub(crate) fn prefix_of(model: &str, messages: &[Value]) -> Option<Prefix> {
    let (_, prefix) = messages.split_last()?;
    let tokens: u64 = prefix
        .iter()
        .map(|m| tokens::estimate(&message_str(m)) + tokens::PER_MESSAGE_OVERHEAD)
        .sum();
    if tokens < CACHEABLE_PREFIX_TOKENS {
        return None;
    }
    let mut hash = crate::util::fingerprint::Fnv1a::default();
    use std::io::Write;
    let _ = hash.write_all(model.as_bytes());
    for message in prefix {
        let _ = hash.write_all(b"\n");
        let _ = serde_json::to_writer(&mut hash, message);
    }
    Some(Prefix {
        hash: hash.0,
        tokens,
    })
}

/// The tokens a warm prompt cache serves of a `prefix_tokens`-token prefix: rounded down to a
/// step of [`CACHE_STEP_TOKENS`] (0 below [`CACHEABLE_PREFIX_TOKENS`]).
pub(crate) fn cacheable_tokens(prefix_tokens: u64) -> u64 {
    if prefix_tokens < CACHEABLE_PREFIX_TOKENS {
        return 0;
    }
    prefix_tokens / CACHE_STEP_TOKENS * CACHE_STEP_TOKENS
}

/// Why a row cannot become a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The row is malformed (stops the run unless --skip-invalid).
    Malformed(String),
    /// The prompt is empty: an error record, no request.
    EmptyPrompt { prompt: String },
}

/// The model every request names unless a Batch API line's `body.model` says otherwise.
pub const DEFAULT_MODEL: &str = "gpt-5.2";

/// What every request carries besides its messages (`run`, `estimate`, `validate`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOptions {
    /// System message prepended to every request whose messages do not already start with one.
    pub system: Option<String>,
    /// The models every row is sent to, in order (`--model a,b`): one request, and one record,
    /// per (row, model). Never empty. A row that names its own model (a Batch API line's
    /// `body.model`, a JSONL line's `model`) is sent to that model alone.
    pub models: Vec<String>,
    /// `max_tokens` for every request (also the output part of the TPM estimate).
    pub max_tokens: Option<u32>,
    /// `temperature` for every request.
    pub temperature: Option<f64>,
    /// `reasoning_effort` for every request (e.g. none, low, medium, high).
    pub reasoning_effort: Option<String>,
    /// Any other request body field (e.g. `seed`, `response_format`).
    pub params: Vec<(String, Value)>,
    /// Structured outputs: every request's `response_format` is this schema (it wins over a
    /// `response_format` in `params`), and every answer is checked against it.
    pub json_schema: Option<JsonSchema>,
    /// `--prompt-cache-key`: every request with a cacheable prefix (≥ 1,024 estimated tokens
    /// before its last message) carries `prompt_cache_key`, 16 hex digits of the prefix's hash,
    /// so a provider routes the requests of one prefix to the same cache (OpenAI). A
    /// `prompt_cache_key` the row or `params` sets wins. It is part of the body, so of the
    /// request fingerprint: turning it on or off makes resume send every such row again.
    pub prompt_cache_key: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            system: None,
            models: vec![DEFAULT_MODEL.to_string()],
            max_tokens: None,
            temperature: None,
            reasoning_effort: None,
            params: Vec::new(),
            json_schema: None,
            prompt_cache_key: false,
        }
    }
}

impl RequestOptions {
    /// The first model of the list (the one a row without a request is recorded under when
    /// nothing else says which).
    pub fn first_model(&self) -> &str {
        self.models.first().map_or(DEFAULT_MODEL, String::as_str)
    }

    /// How many models each row is sent to (`--model`'s list; one when it is empty).
    pub fn models_per_row(&self) -> u64 {
        self.models.len().max(1) as u64
    }

    /// Whether `models` is a list every request can name: not empty, no empty or repeated name.
    pub fn check_models(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("--model is empty: name at least one model, e.g. --model gpt-5.2".into());
        }
        for (i, model) in self.models.iter().enumerate() {
            if model.trim().is_empty() {
                return Err(format!(
                    "--model: model {} of the list is empty: write names separated by commas, \
                     e.g. --model gpt-5.2,gemini-3.1-pro-preview",
                    i + 1
                ));
            }
            if self.models[..i].contains(model) {
                return Err(format!(
                    "--model names `{model}` twice: each (row, model) gets one record, so name \
                     each model once"
                ));
            }
            let undated = |m: &str| {
                crate::api::model_name::strip_snapshot_date(m)
                    .unwrap_or(m)
                    .to_string()
            };
            if let Some(other) = self.models[..i]
                .iter()
                .find(|other| undated(other) == undated(model))
            {
                return Err(format!(
                    "--model names `{other}` and `{model}`, one model and a dated snapshot of it: \
                     resume files a record under the model without its date, so name one of them"
                ));
            }
        }
        Ok(())
    }
}

/// The body fields every request starts from, taken from the command line.
#[derive(Debug, Clone)]
pub struct RequestDefaults {
    fields: Map<String, Value>,
    system: Option<String>,
    /// `--model`'s list (the first is in `fields`).
    models: Vec<String>,
    /// `--prompt-cache-key`.
    prompt_cache_key: bool,
}

impl RequestDefaults {
    /// Collects `--model`, `--max-tokens`, `--temperature`, `--reasoning-effort`, `--param`
    /// and `--system`.
    pub fn from_options(opts: &RequestOptions) -> Self {
        let mut fields = Map::new();
        fields.insert(
            "model".into(),
            Value::String(opts.first_model().to_string()),
        );
        if let Some(n) = opts.max_tokens {
            fields.insert("max_tokens".into(), Value::from(n));
        }
        if let Some(t) = opts.temperature {
            fields.insert("temperature".into(), Value::from(t));
        }
        if let Some(effort) = &opts.reasoning_effort {
            fields.insert("reasoning_effort".into(), Value::String(effort.clone()));
        }
        for (key, value) in &opts.params {
            fields.insert(key.clone(), value.clone());
        }
        if let Some(schema) = &opts.json_schema {
            fields.insert("response_format".into(), schema.response_format());
        }
        RequestDefaults {
            fields,
            system: opts.system.clone(),
            models: opts.models.clone(),
            prompt_cache_key: opts.prompt_cache_key,
        }
    }

    /// How many models each row is sent to (`--model`'s list).
    pub fn model_count(&self) -> usize {
        self.models.len().max(1)
    }

    /// The `slot`-th model of the list.
    pub fn model(&self, slot: usize) -> &str {
        self.models.get(slot).map_or(DEFAULT_MODEL, String::as_str)
    }

    /// Whether a row with these overrides names its own model (then it is sent to that model
    /// alone, not to each of `--model`'s list).
    pub fn names_own_model(overrides: Option<&Map<String, Value>>) -> bool {
        overrides.is_some_and(|o| o.contains_key("model"))
    }

    /// The request to the `slot`-th model of `--model`'s list (slot 0: [`Self::build`]).
    pub fn build_for(
        &self,
        slot: usize,
        messages: Vec<Value>,
        overrides: Option<&Map<String, Value>>,
    ) -> Result<ChatRequest, BuildError> {
        if slot == 0 || Self::names_own_model(overrides) {
            return self.build(messages, overrides);
        }
        let mut with_model = overrides.cloned().unwrap_or_default();
        with_model.insert("model".into(), Value::String(self.model(slot).to_string()));
        self.build(messages, Some(&with_model))
    }

    /// A request with a single user message.
    pub fn from_prompt(
        &self,
        prompt: String,
        overrides: Option<&Map<String, Value>>,
    ) -> Result<ChatRequest, BuildError> {
        self.build(vec![user_message(prompt)], overrides)
    }

    /// A request from chat messages; `overrides` (a Batch API line's `body`) win over the
    /// defaults, except for `messages`, which is always the given list.
    pub fn build(
        &self,
        mut messages: Vec<Value>,
        overrides: Option<&Map<String, Value>>,
    ) -> Result<ChatRequest, BuildError> {
        for (i, message) in messages.iter().enumerate() {
            if !message.is_object() {
                return Err(BuildError::Malformed(format!(
                    "`messages[{i}]` is not an object with `role` and `content`"
                )));
            }
        }
        let mut body = self.fields.clone();
        if let Some(overrides) = overrides {
            if overrides.get("stream") == Some(&Value::Bool(true)) {
                return Err(BuildError::Malformed(
                    "`body.stream` is true: streamed answers are not supported (remove it)".into(),
                ));
            }
            for (key, value) in overrides {
                if key != "messages" {
                    body.insert(key.clone(), value.clone());
                }
            }
        }
        if let Some(system) = &self.system {
            if !messages.first().is_some_and(is_system_message) {
                messages.insert(0, serde_json::json!({"role": "system", "content": system}));
            }
        }
        if messages.is_empty() {
            return Err(BuildError::Malformed("`messages` is empty".into()));
        }
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => {
                return Err(BuildError::Malformed(
                    "`model` must be a non-empty string".into(),
                ))
            }
        };
        let prompt = last_user_text(&messages);
        let all_blank = messages.iter().all(|m| message_str(m).trim().is_empty());
        if all_blank {
            return Err(BuildError::EmptyPrompt { prompt });
        }
        let prefix = prefix_of(&model, &messages).map(|p| p.hash);
        if let (Some(hash), true) = (prefix, self.prompt_cache_key) {
            body.entry("prompt_cache_key")
                .or_insert_with(|| Value::String(format!("{hash:016x}")));
        }
        let estimated_prompt_tokens = messages
            .iter()
            .map(|m| tokens::estimate(&message_str(m)) + tokens::PER_MESSAGE_OVERHEAD)
            .sum();
        let max_tokens = body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens"))
            .and_then(Value::as_u64);
        body.insert("messages".into(), Value::Array(messages));
        let bytes = crate::api::DEFAULT.encode(&body);
        let fingerprint = crate::util::fingerprint::of_body(&bytes);
        Ok(ChatRequest {
            fingerprint,
            body: Bytes::from(bytes),
            model,
            prompt,
            estimated_prompt_tokens,
            max_tokens,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(fields: RequestOptions) -> RequestDefaults {
        RequestDefaults::from_options(&fields)
    }

    fn body(req: &ChatRequest) -> Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    #[test]
    fn prompt_becomes_user_message_with_defaults() {
        let d = defaults(RequestOptions {
            max_tokens: Some(50),
            params: vec![("seed".into(), Value::from(7))],
            system: Some("Be brief.".into()),
            ..RequestOptions::default()
        });
        let req = d.from_prompt("  Hi  ".into(), None).unwrap();
        let b = body(&req);
        assert_eq!(b["model"], "gpt-5.2");
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][1]["content"], "  Hi  ");
        assert_eq!(req.prompt, "  Hi  ");
        assert_eq!(req.max_tokens, Some(50));
    }

    #[test]
    fn batch_body_wins_and_existing_system_is_kept() {
        let d = defaults(RequestOptions {
            system: Some("S".into()),
            ..RequestOptions::default()
        });
        let overrides: Map<String, Value> =
            serde_json::from_str(r#"{"model":"gemini-3.1-pro-preview","max_tokens":9}"#).unwrap();
        let messages = vec![
            serde_json::json!({"role":"system","content":"mine"}),
            serde_json::json!({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}),
        ];
        let req = d.build(messages, Some(&overrides)).unwrap();
        let b = body(&req);
        assert_eq!(req.model, "gemini-3.1-pro-preview");
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["messages"][0]["content"], "mine");
        assert_eq!(req.prompt, "a\nb");
    }

    /// The prefix is every message but the last, hashed with the model, only from 1,024
    /// estimated tokens; `--prompt-cache-key` sends its hash, unless the row sets its own key.
    #[test]
    fn long_prefixes_are_hashed_and_keyed() {
        let long = "word ".repeat(1_000); // 5,000 bytes: 1,250 tokens
        let d = defaults(RequestOptions {
            system: Some(long.clone()),
            prompt_cache_key: true,
            ..RequestOptions::default()
        });
        let a = d.from_prompt("one".into(), None).unwrap();
        let b = d.from_prompt("two".into(), None).unwrap();
        let hash = a.prefix.expect("a long prefix");
        assert_eq!(b.prefix, Some(hash), "same prefix, another last message");
        assert_eq!(body(&a)["prompt_cache_key"], format!("{hash:016x}"));
        let built = d
            .build_for(0, vec![user_message("x".into())], None)
            .unwrap();
        assert_eq!(built.prefix, Some(hash), "the system message is prepended");
        let overrides: Map<String, Value> =
            serde_json::from_str(r#"{"model":"m2","prompt_cache_key":"mine"}"#).unwrap();
        let own = d.from_prompt("x".into(), Some(&overrides)).unwrap();
        assert_ne!(own.prefix, Some(hash), "a cache is per model");
        assert_eq!(
            body(&own)["prompt_cache_key"],
            "mine",
            "the row's own key wins"
        );

        let short = defaults(RequestOptions {
            system: Some("Be brief.".into()),
            prompt_cache_key: true,
            ..RequestOptions::default()
        });
        let s = short.from_prompt("x".into(), None).unwrap();
        assert_eq!(s.prefix, None);
        assert!(body(&s).get("prompt_cache_key").is_none());
        let without = defaults(RequestOptions {
            system: Some(long),
            ..RequestOptions::default()
        });
        let w = without.from_prompt("one".into(), None).unwrap();
        assert_eq!(w.prefix, Some(hash));
        assert!(body(&w).get("prompt_cache_key").is_none());
        assert_ne!(w.fingerprint, a.fingerprint, "the key is part of the body");

        assert_eq!(cacheable_tokens(1_023), 0);
        assert_eq!(cacheable_tokens(1_024), 1_024);
        assert_eq!(cacheable_tokens(2_100), 2_048);
    }

    #[test]
    fn blank_prompt_and_bad_messages_are_rejected() {
        let d = defaults(RequestOptions::default());
        assert!(matches!(
            d.from_prompt(" \n".into(), None),
            Err(BuildError::EmptyPrompt { .. })
        ));
        assert!(matches!(
            d.build(vec![], None),
            Err(BuildError::Malformed(_))
        ));
        assert!(matches!(
            d.build(vec![Value::from(3)], None),
            Err(BuildError::Malformed(_))
        ));
    }
}
