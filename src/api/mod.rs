//! Talking to an OpenAI-compatible chat-completions endpoint: request bodies, the HTTP client,
//! response parsing and the classification of failures.

pub mod classify;
pub(crate) mod client;
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
