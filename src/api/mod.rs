//! Talking to an OpenAI-compatible chat-completions endpoint: request bodies, the HTTP client,
//! response parsing and the classification of failures.

pub mod classify;
pub(crate) mod client;
pub(crate) mod messages;
pub(crate) mod model_name;
pub mod openai_chat;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod retry;
pub(crate) mod schema;
pub(crate) mod transport;
pub(crate) mod trust;
pub(crate) mod wire;

pub(crate) use classify::{Failure, FailureKind, RateLimitHeaders};
pub(crate) use client::{ApiClient, ApiKey, ClientOptions, EndpointOptions};
pub(crate) use request::ChatRequest;
pub(crate) use response::{Completion, TokenUsage};

use openai_chat::OpenAiChat;
use wire::WireFormat;

/// The registered wire formats, by name; the first is the default. A new provider shape is
/// one file implementing [`WireFormat`] and its line here.
pub(crate) const FORMATS: &[(&str, &dyn WireFormat)] = &[("openai-chat", &OpenAiChat)];

/// The wire format every request uses today.
pub(crate) const DEFAULT: &dyn WireFormat = FORMATS[0].1;

/// The wire format registered under `name`.
#[cfg(test)]
pub(crate) fn for_name(name: &str) -> Option<&'static dyn WireFormat> {
    FORMATS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, wire)| *wire)
}
