//! Warm-first order for providers' prompt caches. A provider serves a long prompt prefix (every
//! message but the last: a system prompt, a few-shot block) from its cache, at a discount, once
//! a request with that prefix has been answered; requests sent while the first one is still
//! being answered all pay the full price. So before a row's first attempt: when its prefix
//! (`ChatRequest::prefix`, only prefixes of ≥ 1,024 estimated tokens) has not been answered in
//! the last [`WARM_FOR`] and another row's request with it is in flight, the row waits for that
//! request to end (lending its concurrency slot meanwhile, `worker::Slots`), then goes.
//!
//! - Rows whose prefix is short (`None`) or warm never wait.
//! - A row waits at most once, for one request: when the first request ends in any other way
//!   than an answer (an error, a 429, the run halting, its task aborted — its [`Pass`] is
//!   dropped), every row waiting for it goes at once; the next row of that prefix to arrive
//!   leads again. So nothing waits on a row that waits itself: no deadlock, no queue of rows
//!   taking turns behind a prefix that always fails.
//! - Bounded memory: at most [`MAX_PREFIXES`] prefixes remembered (when full, the warm ones are
//!   forgotten: each then costs one more solo first request); the prefixes in flight are at most
//!   the rows open.
//!
//! `PROMPTBATCH_PREFIX_GATE=off` in the environment turns the gate off (for the benchmark that
//! measures what it brings, `bench/prompt_cache.sh`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::util::fingerprint::PreHashed;

/// Most prefixes remembered.
pub(crate) const MAX_PREFIXES: usize = 100_000;
/// A prefix answered this long ago is taken as cold again (OpenAI keeps a prefix 5 to 10
/// minutes after its last use).
pub(crate) const WARM_FOR: Duration = Duration::from_secs(5 * 60);
/// The environment variable that turns the gate off (`off`).
pub(crate) const DISABLE_ENV: &str = "PROMPTBATCH_PREFIX_GATE";

/// The run's prefixes: which are warm, which have a first request in flight.
pub(crate) struct PrefixGate {
    /// `None`: the gate is off.
    state: Option<Mutex<HashMap<u64, Entry, PreHashed>>>,
}

enum Entry {
    /// A first request of the prefix is in flight; closed when it ends (the rows waiting on it
    /// then go).
    Leading(Arc<Semaphore>),
    /// Answered, last at this time.
    Warm(Instant),
}

impl Default for PrefixGate {
    fn default() -> Self {
        PrefixGate::new(true)
    }
}

impl PrefixGate {
    pub(crate) fn new(enabled: bool) -> Self {
        PrefixGate {
            state: enabled.then(Mutex::default),
        }
    }

    /// On unless `PROMPTBATCH_PREFIX_GATE=off`.
    pub(crate) fn from_env() -> Self {
        PrefixGate::new(std::env::var(DISABLE_ENV).map_or(true, |v| v != "off"))
    }

    /// A row with this prefix is about to send its first request: `Ok` when it may go now (hold
    /// the pass over that attempt), `Err` when it must wait for the prefix's first request.
    pub(crate) fn enter(&self, prefix: Option<u64>) -> Result<Pass<'_>, Wait<'_>> {
        let free = Pass {
            gate: self,
            prefix: None,
            leading: None,
        };
        let (Some(state), Some(prefix)) = (&self.state, prefix) else {
            return Ok(free);
        };
        let Ok(mut prefixes) = state.lock() else {
            return Ok(free);
        };
        match prefixes.get(&prefix) {
            Some(Entry::Leading(released)) => {
                return Err(Wait {
                    gate: self,
                    prefix,
                    released: released.clone(),
                })
            }
            Some(Entry::Warm(at)) if at.elapsed() <= WARM_FOR => {
                return Ok(Pass {
                    gate: self,
                    prefix: Some(prefix),
                    leading: None,
                })
            }
            _ => {}
        }
        if prefixes.len() >= MAX_PREFIXES {
            prefixes.retain(|_, entry| matches!(entry, Entry::Leading(_)));
        }
        let released = Arc::new(Semaphore::new(0));
        prefixes.insert(prefix, Entry::Leading(released.clone()));
        Ok(Pass {
            gate: self,
            prefix: Some(prefix),
            leading: Some(released),
        })
    }

    /// The prefix was answered now: warm, and the rows waiting for it go.
    fn answered(&self, prefix: u64) {
        let Some(Ok(mut prefixes)) = self.state.as_ref().map(Mutex::lock) else {
            return;
        };
        if prefixes.len() >= MAX_PREFIXES && !prefixes.contains_key(&prefix) {
            prefixes.retain(|_, entry| matches!(entry, Entry::Leading(_)));
        }
        if let Some(Entry::Leading(released)) = prefixes.insert(prefix, Entry::Warm(Instant::now()))
        {
            // Another row's first request is still in flight: its waiters need not wait for it.
            released.close();
        }
    }

    /// The first request `released` stands for ended without an answer: its waiters go, and
    /// the prefix is cold again (unless another answer warmed it meanwhile).
    fn abandoned(&self, prefix: u64, released: &Arc<Semaphore>) {
        released.close();
        let Some(Ok(mut prefixes)) = self.state.as_ref().map(Mutex::lock) else {
            return;
        };
        if matches!(prefixes.get(&prefix), Some(Entry::Leading(r)) if Arc::ptr_eq(r, released)) {
            prefixes.remove(&prefix);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.lock().unwrap().len())
    }
}

/// A row's way through the gate, held over its first attempt: [`Pass::answered`] when that
/// attempt is answered; dropped otherwise (its waiters then go).
pub(crate) struct Pass<'g> {
    gate: &'g PrefixGate,
    /// `None`: a short prefix, or the gate is off.
    prefix: Option<u64>,
    /// This row's request is the prefix's first in flight: rows wait for it.
    leading: Option<Arc<Semaphore>>,
}

impl Pass<'_> {
    /// The attempt was answered: the prefix is warm (for [`WARM_FOR`] more), and the rows
    /// waiting for it go.
    pub(crate) fn answered(mut self) {
        if let Some(prefix) = self.prefix {
            self.gate.answered(prefix);
        }
        if let Some(released) = self.leading.take() {
            released.close();
        }
    }

    /// Whether this row's request leads its prefix (rows wait for it).
    #[cfg(test)]
    fn leads(&self) -> bool {
        self.leading.is_some()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let (Some(prefix), Some(released)) = (self.prefix, self.leading.take()) {
            self.gate.abandoned(prefix, &released);
        }
    }
}

/// A row waiting for its prefix's first request.
pub(crate) struct Wait<'g> {
    gate: &'g PrefixGate,
    prefix: u64,
    released: Arc<Semaphore>,
}

impl<'g> Wait<'g> {
    /// Until the first request ends (answered or not); then the row goes without waiting again.
    pub(crate) async fn until_released(self) -> Pass<'g> {
        // The semaphore never has permits: it is only ever closed.
        let _ = self.released.acquire().await;
        Pass {
            gate: self.gate,
            prefix: Some(self.prefix),
            leading: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a prefix whose first request fails are released as soon as it ends (by a drop:
    /// an error, a halt, an aborted task alike); none waits twice, and the next row leads.
    #[tokio::test(start_paused = true)]
    async fn waiters_go_when_the_first_request_fails() {
        let gate = Arc::new(PrefixGate::new(true));
        let first = gate.enter(Some(7)).ok().expect("the first row goes");
        assert!(first.leads());
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let wait = gate.enter(Some(7)).err().expect("waits for the first");
                    let pass = wait.until_released().await;
                    assert!(!pass.leads());
                    tokio::time::Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let failed_at = tokio::time::Instant::now();
        drop(first); // the first attempt failed
        for waiter in waiting {
            assert_eq!(waiter.await.unwrap(), failed_at, "released when it failed");
        }
        let next = gate.enter(Some(7)).ok().expect("nobody in flight: goes");
        assert!(next.leads(), "the prefix is still cold: the next row leads");
    }

    /// A leader whose task is aborted mid-wait (a halting run) releases its waiters too.
    #[tokio::test(start_paused = true)]
    async fn an_aborted_first_request_releases_its_waiters() {
        let gate = Arc::new(PrefixGate::new(true));
        let g = gate.clone();
        let leader = tokio::spawn(async move {
            let _pass = g.enter(Some(1)).ok().unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        tokio::task::yield_now().await;
        let g = gate.clone();
        let waiter = tokio::spawn(async move {
            let wait = g.enter(Some(1)).err().expect("waits");
            drop(wait.until_released().await);
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        leader.abort();
        let released = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(
            released.is_ok(),
            "still waiting after the leader was aborted"
        );
    }

    /// Once answered, a prefix is warm: its rows go at once, until 5 minutes without an answer.
    /// Short prefixes and other prefixes never wait.
    #[tokio::test(start_paused = true)]
    async fn answered_prefixes_are_warm_and_short_ones_never_wait() {
        let gate = PrefixGate::new(true);
        let first = gate.enter(Some(3)).ok().unwrap();
        let wait = gate.enter(Some(3)).err().expect("waits");
        assert!(gate.enter(None).is_ok(), "a short prefix goes");
        assert!(gate.enter(Some(4)).ok().unwrap().leads(), "another prefix");
        first.answered();
        let pass = wait.until_released().await;
        assert!(!pass.leads());
        pass.answered();
        let warm = gate.enter(Some(3)).ok().expect("warm: goes");
        assert!(!warm.leads());
        drop(warm); // a failed attempt of a warm prefix changes nothing
        assert!(!gate.enter(Some(3)).ok().unwrap().leads());
        tokio::time::advance(WARM_FOR + Duration::from_secs(1)).await;
        assert!(gate.enter(Some(3)).ok().unwrap().leads(), "cold again");
    }

    #[test]
    fn off_or_full() {
        let off = PrefixGate::new(false);
        let a = off.enter(Some(1)).ok().unwrap();
        assert!(off.enter(Some(1)).is_ok(), "off: nobody waits");
        drop(a);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = PrefixGate::new(true);
            for prefix in 0..MAX_PREFIXES as u64 {
                gate.enter(Some(prefix)).ok().unwrap().answered();
            }
            assert_eq!(gate.len(), MAX_PREFIXES);
            let in_flight = gate.enter(Some(u64::MAX)).ok().unwrap();
            assert_eq!(gate.len(), 1, "full: the warm prefixes are forgotten");
            assert!(
                gate.enter(Some(u64::MAX)).is_err(),
                "the one in flight is kept"
            );
            drop(in_flight);
        });
    }
}
