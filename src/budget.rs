//! The `--max-cost` cap. Before a row is dispatched, its worst-case cost is reserved; the row is
//! sent only if spend so far (earlier resumed runs included) plus every reservation in flight
//! stays within the cap. When a row finishes, its reservation is replaced by its actual cost.
//!
//! Worst case of a request: twice the estimated prompt tokens (the byte-based estimate can be
//! low for non-English text) at the input rate, plus `max_tokens` at the output rate — or, when
//! the request sets no `max_tokens`, the largest completion seen so far in this run, at least
//! 4,096 tokens.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::api::ChatRequest;
use crate::cost::PriceTable;
use crate::error::Error;

/// Output tokens assumed for a request without `max_tokens` before larger answers are seen.
const DEFAULT_WORST_OUTPUT: u64 = 4096;

/// The cap and what counts against it.
#[derive(Debug)]
pub struct Budget {
    cap: f64,
    state: Mutex<State>,
    settled: Notify,
}

#[derive(Debug, Default)]
struct State {
    spent: f64,
    reserved: f64,
    largest_completion: u64,
}

impl Budget {
    /// A cap of `cap` USD with `already_spent` from earlier runs on the same output.
    pub fn new(cap: f64, already_spent: f64) -> Self {
        Budget {
            cap,
            state: Mutex::new(State {
                spent: already_spent,
                ..State::default()
            }),
            settled: Notify::new(),
        }
    }

    /// The cap in USD.
    pub fn cap(&self) -> f64 {
        self.cap
    }

    /// The worst-case cost of a request, or an error when its model has no price.
    pub fn worst_case(&self, prices: &PriceTable, request: &ChatRequest) -> Result<f64, Error> {
        let price = prices.get(&request.model).ok_or_else(|| {
            Error::Config(format!(
                "--max-cost cannot be enforced: model `{}` has no price; add it with --prices FILE",
                request.model
            ))
        })?;
        let prompt = request.estimated_prompt_tokens * 2;
        let output = match request.max_tokens {
            Some(n) => n,
            None => self.lock().largest_completion.max(DEFAULT_WORST_OUTPUT),
        };
        let rates = price.rates_for(prompt);
        Ok((prompt as f64 * rates.input + output as f64 * rates.output) / 1_000_000.0)
    }

    /// Reserves `worst`, waiting for in-flight rows to settle while it does not fit yet.
    /// `false` when it cannot fit even with nothing in flight: the cap is reached.
    pub async fn reserve(&self, worst: f64) -> bool {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.try_reserve(worst) {
                return true;
            }
            if self.lock().reserved <= 0.0 {
                return false;
            }
            settled.await;
        }
    }

    /// Reserves `worst` if it fits under the cap now.
    pub fn try_reserve(&self, worst: f64) -> bool {
        let mut s = self.lock();
        if s.spent + s.reserved + worst > self.cap {
            return false;
        }
        s.reserved += worst;
        true
    }

    /// Replaces a reservation by what the row actually cost (`None`: not sent, or unpriced).
    pub fn settle(&self, reserved: f64, actual: Option<f64>, completion_tokens: u64) {
        let mut s = self.lock();
        s.reserved = (s.reserved - reserved).max(0.0);
        s.spent += actual.unwrap_or(0.0);
        s.largest_completion = s.largest_completion.max(completion_tokens);
        drop(s);
        self.settled.notify_waiters();
    }

    /// Spend so far, earlier runs included.
    pub fn spent(&self) -> f64 {
        self.lock().spent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_cap() {
        let b = Budget::new(1.0, 0.25);
        assert!(b.try_reserve(0.5));
        assert!(!b.try_reserve(0.3), "0.25 + 0.5 + 0.3 > 1.0");
        b.settle(0.5, Some(0.1), 10);
        assert!((b.spent() - 0.35).abs() < 1e-12);
        assert!(b.try_reserve(0.6));
        assert!(!b.try_reserve(0.1));
    }

    #[tokio::test]
    async fn reserve_waits_for_settlement_and_stops_when_nothing_is_in_flight() {
        let b = std::sync::Arc::new(Budget::new(1.0, 0.0));
        assert!(b.reserve(0.6).await);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(0.6).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "0.6 + 0.6 > 1.0 while the first is in flight"
        );
        b.settle(0.6, Some(0.1), 0);
        assert!(waiter.await.unwrap(), "fits once the first settled at 0.1");
        b.settle(0.6, Some(0.5), 0);
        assert!(
            !b.reserve(0.6).await,
            "0.6 spent + 0.6 > 1.0 with nothing in flight"
        );
    }
}
