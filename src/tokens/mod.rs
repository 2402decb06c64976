//! Counting tokens before a request is sent: [`estimate`], a fast, deterministic approximation
//! (about four bytes of UTF-8 per token, as for English text with the o200k/cl100k vocabularies)
//! for `--tpm` pacing and budgets, and [`o200k`], exact counts for `promptbatch estimate`. The
//! API's own `usage` is what records and totals report.

pub(crate) mod o200k;

/// Tokens a chat message costs beyond its text (role markers and separators).
pub(crate) const PER_MESSAGE_OVERHEAD: u64 = 4;

/// Approximate token count of a text: one token per four bytes, rounded up.
pub fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_per_four_bytes() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("abc"), 1);
        assert_eq!(estimate("abcd"), 1);
        assert_eq!(estimate("abcde"), 2);
    }
}
