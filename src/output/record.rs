//! The result record written for every input row, in the field order of the output schema.

use serde::{Deserialize, Serialize};

use crate::api::{Completion, TokenUsage};

/// Whether a row got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
}

/// One output record. Field order is the output schema's column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub row: u64,
    pub prompt: String,
    pub completion: Option<String>,
    pub finish_reason: Option<String>,
    pub model: String,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub latency_ms: u64,
    pub attempts: u32,
    pub status: Status,
    pub error: Option<String>,
    pub response_id: Option<String>,
}

/// The column names, in order (the CSV header).
pub const COLUMNS: [&str; 16] = [
    "id",
    "row",
    "prompt",
    "completion",
    "finish_reason",
    "model",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "latency_ms",
    "attempts",
    "status",
    "error",
    "response_id",
];

impl Record {
    /// An ok record from an answer.
    pub fn ok(
        id: String,
        row: u64,
        prompt: String,
        requested_model: &str,
        completion: Completion,
        latency_ms: u64,
        attempts: u32,
    ) -> Self {
        let usage = completion.usage;
        Record {
            id,
            row,
            prompt,
            completion: completion.content,
            finish_reason: completion.finish_reason,
            model: completion
                .model
                .unwrap_or_else(|| requested_model.to_string()),
            prompt_tokens: usage.prompt,
            cached_tokens: usage.cached,
            completion_tokens: usage.completion,
            reasoning_tokens: usage.reasoning,
            total_tokens: usage.total,
            latency_ms,
            attempts,
            status: Status::Ok,
            error: None,
            response_id: completion.response_id,
        }
    }

    /// An error record (no tokens were billed for it as far as the API told us).
    pub fn error(
        id: String,
        row: u64,
        prompt: String,
        model: &str,
        error: String,
        latency_ms: u64,
        attempts: u32,
    ) -> Self {
        Record {
            id,
            row,
            prompt,
            completion: None,
            finish_reason: None,
            model: model.to_string(),
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 0,
            latency_ms,
            attempts,
            status: Status::Error,
            error: Some(error),
            response_id: None,
        }
    }

    /// The token counts of this record.
    pub fn usage(&self) -> TokenUsage {
        TokenUsage {
            prompt: self.prompt_tokens,
            cached: self.cached_tokens,
            completion: self.completion_tokens,
            reasoning: self.reasoning_tokens,
            total: self.total_tokens,
        }
    }
}
