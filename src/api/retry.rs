//! How a failed request is retried: exponential backoff with full jitter, at least the server's
//! advised wait, and a 429's own rule (its advice, or a short random wait: a random refusal is
//! as likely on the next attempt as on this one). Both transports use it.

use std::time::Duration;

use crate::api::Failure;

/// A 429's row retries after its advice and up to this share of it more.
const ADVICE_JITTER: f64 = 0.1;

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries per row for transient failures (429, 5xx, timeouts, dropped connections).
    pub max_retries: u32,
    /// First retry backoff; doubles per attempt, with full jitter (a 429 waits its advice, or
    /// about this long without one: never doubled).
    pub base: Duration,
    /// Longest backoff between two attempts of a row.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long a row waits before attempt `attempt + 1` after `failure`: never sooner than the
    /// server's advice.
    ///
    /// A 429 does not back off exponentially: a random refusal is as likely on the next
    /// attempt, and a real limit is the pool's pace to answer (`pacing.rs`); doubling on top of
    /// a 1-s advice left a few rows retrying for a minute at the end of a run. A 429 that says
    /// when waits that, and up to a tenth more so the rows it refused together do not all come
    /// back together; one that does not (Google's `RESOURCE_EXHAUSTED` body) waits about
    /// `--backoff-base` (½ to 1½ times it). Other failures back off exponentially.
    pub fn wait(&self, failure: &Failure, attempt: u32) -> Duration {
        match (failure.retry_after, failure.is_rate_limit()) {
            (Some(advised), true) => {
                advised + advised.mul_f64(ADVICE_JITTER * rand::random::<f64>())
            }
            (None, true) => self.base.mul_f64(0.5 + rand::random::<f64>()),
            (advised, false) => self.backoff(attempt).max(advised.unwrap_or(Duration::ZERO)),
        }
    }

    /// Full-jitter backoff before attempt `attempt + 1`: uniform in [0, min(max, base·2^(attempt-1))].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
        let ceiling = exp.min(self.max);
        ceiling.mul_f64(rand::random::<f64>())
    }
}
