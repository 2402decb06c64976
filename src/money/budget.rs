//! The `--max-cost` cap. Before a row is dispatched, its worst-case cost is reserved; the row is
//! sent only if spend so far (earlier resumed runs included) plus every reservation in flight
//! stays within the cap. When a row finishes, its reservation is replaced by its actual cost.
//!
//! Worst case of a request: twice the estimated prompt tokens (the byte-based estimate can be
//! low for non-English text) at the input rate, plus `max_tokens` at the output rate — or, when
//! the request sets no `max_tokens`, the largest completion seen so far in this run, at least
//! 4,096 tokens.

use super::nanos::{self, Nanos};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::api::ChatRequest;
use crate::error::Error;
use crate::money::cost::PriceTable;

/// Output tokens assumed for a request without `max_tokens` before larger answers are seen.
const DEFAULT_WORST_OUTPUT: u64 = 4096;

/// The cap and what counts against it. Money is kept in whole nano-dollars (10⁻⁹ USD) and the
/// requests in flight are counted, so "nothing is in flight" never depends on a float sum
/// returning exactly to zero.
#[derive(Debug)]
pub(crate) struct Budget {
    cap: Nanos,
    shared: Arc<Shared>,
}

/// What the budget and its outstanding reservations share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    settled: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, reserved: Nanos, actual: Nanos, completion_tokens: u64) {
        let mut s = self.lock();
        s.reserved = s.reserved.saturating_sub(reserved);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.spent = s.spent.saturating_add(actual);
        s.largest_completion = s.largest_completion.max(completion_tokens);
        drop(s);
        self.settled.notify_waiters();
    }
}

#[derive(Debug, Default)]
struct State {
    spent: Nanos,
    reserved: Nanos,
    /// Reservations not settled yet.
    in_flight: u64,
    largest_completion: u64,
}

/// One request's reservation. Settled with its actual cost by [`Reservation::settle`]; a
/// reservation dropped unsettled (the row was never sent, or its task ended early) releases
/// its amount, so the dispatcher never waits for a settlement that cannot come.
#[derive(Debug)]
#[must_use = "a reservation is released when dropped"]
pub(crate) struct Reservation {
    shared: Arc<Shared>,
    amount: Nanos,
    settled: bool,
}

impl Reservation {
    /// Replaces the reservation by what the row actually cost (`None`: not sent, or unpriced).
    pub(crate) fn settle(mut self, actual: Option<f64>, completion_tokens: u64) {
        self.settled = true;
        self.shared.release(
            self.amount,
            actual.map_or(0, nanos::rounded_up),
            completion_tokens,
        );
    }
}

impl Reservation {
    /// Counts the whole reservation — the row's worst case — as spent: its answer's cost is
    /// unknown (no `usage`), and $0 would let the cap be passed.
    pub(crate) fn spend_all(mut self) {
        self.settled = true;
        self.shared.release(self.amount, self.amount, 0);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.release(self.amount, 0, 0);
        }
    }
}

impl Budget {
    /// A cap of `cap` USD with `already_spent` from earlier runs on the same output.
    pub(crate) fn new(cap: f64, already_spent: f64) -> Self {
        Budget {
            cap: nanos::rounded_up(cap),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    spent: nanos::rounded_up(already_spent),
                    ..State::default()
                }),
                settled: Notify::new(),
            }),
        }
    }

    /// The cap in USD.
    pub(crate) fn cap(&self) -> f64 {
        nanos::usd(self.cap)
    }

    /// The worst-case cost of a request, or an error when its model has no price ([`unenforceable`]).
    pub(crate) fn worst_case(
        &self,
        prices: &PriceTable,
        request: &ChatRequest,
    ) -> Result<f64, Error> {
        let price = prices
            .get(&request.model)
            .ok_or_else(|| unenforceable(&request.model))?;
        let prompt = request.estimated_prompt_tokens * 2;
        let output = match request.max_tokens {
            Some(n) => n,
            None => self.lock().largest_completion.max(DEFAULT_WORST_OUTPUT),
        };
        let rates = price.rates_for(prompt);
        Ok((prompt as f64 * rates.input + output as f64 * rates.output) / 1_000_000.0)
    }

    /// Reserves `worst`, waiting for in-flight rows to settle while it does not fit yet.
    /// `None` when it cannot fit even with nothing in flight: the cap is reached.
    pub(crate) async fn reserve(&self, worst: f64) -> Option<Reservation> {
        loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if let Some(reservation) = self.try_reserve(worst) {
                return Some(reservation);
            }
            if self.lock().in_flight == 0 {
                return None;
            }
            settled.await;
        }
    }

    /// Reserves `worst` if it fits under the cap now.
    pub(crate) fn try_reserve(&self, worst: f64) -> Option<Reservation> {
        let amount = nanos::rounded_up(worst);
        let mut s = self.lock();
        let total = s.spent.saturating_add(s.reserved).saturating_add(amount);
        if total > self.cap {
            return None;
        }
        s.reserved += amount;
        s.in_flight += 1;
        Some(Reservation {
            shared: self.shared.clone(),
            amount,
            settled: false,
        })
    }

    /// Spend so far, earlier runs included.
    #[cfg(test)]
    pub(crate) fn spent(&self) -> f64 {
        nanos::usd(self.lock().spent)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }
}

/// Why `--max-cost` cannot hold a run to its cap: `model` has no price.
pub(crate) fn unenforceable(model: &str) -> Error {
    Error::Config(format!(
        "--max-cost cannot be enforced: model `{model}` has no price; add it with --prices FILE"
    ))
}

/// `--max-cost` needs a price for every model of `--model`'s list (a row naming its own model
/// is checked when it is sent): refused before anything is read or written.
pub(crate) fn check_models_priced(
    max_cost: Option<f64>,
    models: &[String],
    prices: &PriceTable,
) -> Result<(), Error> {
    if max_cost.is_none() {
        return Ok(());
    }
    match models.iter().find(|m| prices.get(m).is_none()) {
        Some(model) => Err(unenforceable(model)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_cap() {
        let b = Budget::new(1.0, 0.25);
        let first = b.try_reserve(0.5).expect("0.25 + 0.5 fits");
        assert!(b.try_reserve(0.3).is_none(), "0.25 + 0.5 + 0.3 > 1.0");
        first.settle(Some(0.1), 10);
        assert!((b.spent() - 0.35).abs() < 1e-12);
        let _second = b.try_reserve(0.6).expect("0.35 + 0.6 fits");
        assert!(b.try_reserve(0.1).is_none());
    }

    #[tokio::test]
    async fn reserve_waits_for_settlement_and_stops_when_nothing_is_in_flight() {
        let b = Arc::new(Budget::new(1.0, 0.0));
        let first = b.reserve(0.6).await.expect("fits");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(0.6).await.map(|r| r.settle(Some(0.5), 0)) })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "0.6 + 0.6 > 1.0 while the first is in flight"
        );
        first.settle(Some(0.1), 0);
        assert!(
            waiter.await.unwrap().is_some(),
            "fits once the first settled at 0.1"
        );
        assert!(
            b.reserve(0.6).await.is_none(),
            "0.6 spent + 0.6 > 1.0 with nothing in flight"
        );
    }

    /// The hang of issue 9: amounts whose float sum does not return to exactly zero.
    #[tokio::test]
    async fn settling_odd_amounts_never_leaves_a_phantom_reservation() {
        let b = Budget::new(0.05, 0.0);
        let mut reserved = Vec::new();
        for worst in [0.1 / 7.0, 0.2 / 3.0 / 10.0, 0.003_3, 1e-9 / 3.0] {
            reserved.push(b.try_reserve(worst).expect("fits"));
        }
        for (k, r) in reserved.into_iter().enumerate() {
            if k % 2 == 0 {
                r.settle(Some(0.000_123_456_789), 300);
            } // the others are dropped unsettled: released
        }
        // Nothing is in flight, so a request that cannot fit ends the wait at once.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), b.reserve(1.0)).await;
        assert!(matches!(ended, Ok(None)), "must report the cap, not wait");
    }
}
