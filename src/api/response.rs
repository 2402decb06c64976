//! What one answer is, whatever the wire format it came in ([`super::wire`]): its content,
//! token counts and whether the simulator wrote it.

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
pub(crate) const SIMULATOR_FINGERPRINT: &str = "fp_promptbatch_simulator";
/// The header on every answer of the simulator.
pub(crate) const SIMULATOR_HEADER: &str = "x-promptbatch-simulator";
