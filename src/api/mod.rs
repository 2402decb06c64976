//! Talking to an OpenAI-compatible chat-completions endpoint: request bodies, the HTTP client,
//! response parsing and the classification of failures.

pub mod classify;
pub mod client;
pub(crate) mod model_name;
pub mod openai_chat;
pub mod request;
pub mod response;
pub mod retry;
pub mod schema;
pub mod transport;
pub mod trust;
pub mod wire;

pub use classify::{Failure, FailureKind, RateLimitHeaders};
pub use client::{ApiClient, ApiKey, ClientOptions, EndpointOptions};
pub use request::ChatRequest;
pub use response::{Completion, TokenUsage};
