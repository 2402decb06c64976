//! The seam between a request and a provider's HTTP shape: a [`WireFormat`] says where a
//! request is POSTed, what body it sends and how an answer is read. The OpenAI chat format is
//! one file (`openai_chat.rs`); another provider shape is one new file implementing the trait
//! plus its line in `api::FORMATS` (`api/mod.rs`).

use std::fmt::Debug;

use serde_json::{Map, Value};

use super::response::Completion;

/// One provider's request and response shape.
pub(crate) trait WireFormat: Send + Sync + Debug {
    /// The path, under the base URL, a request is POSTed to.
    fn path(&self) -> &'static str;
    /// The HTTP body of a request, from its fields as chat-completions names them (`model`,
    /// `messages`, `max_tokens`, …).
    fn encode(&self, fields: &Map<String, Value>) -> Vec<u8>;
    /// The answer in a 2xx body; an error says why it is unusable.
    fn decode(&self, body: &[u8]) -> Result<Completion, String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{for_name, DEFAULT};

    #[test]
    fn the_default_is_openai_chat_and_round_trips_its_fields() {
        let wire = for_name("openai-chat").unwrap();
        assert_eq!(wire.path(), DEFAULT.path());
        assert_eq!(wire.path(), "chat/completions");
        let mut fields = Map::new();
        fields.insert("model".into(), Value::String("gpt-5.2".into()));
        let body = wire.encode(&fields);
        assert_eq!(body, br#"{"model":"gpt-5.2"}"#);
        assert!(for_name("anthropic-messages").is_none());
    }
}
