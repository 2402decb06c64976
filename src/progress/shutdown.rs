//! Shutdown signals, as one small type that tasks listen to (after mini-redis): the first Ctrl-C,
//! SIGTERM or SIGHUP (the terminal was closed) stops dispatching and lets in-flight requests finish within the grace period; a
//! second one (or the end of the grace period) aborts what is still in flight.

use crate::events::notice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// The two stages of stopping, shared by the dispatcher and the workers.
#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    /// No new row is dispatched and no new attempt starts.
    pub stop_dispatch: CancellationToken,
    /// In-flight requests are dropped at once (their rows get no record and stay for resume).
    pub abort: CancellationToken,
    interrupted: Arc<AtomicBool>,
}

impl Shutdown {
    /// Whether a signal (rather than a fatal error) stopped the run.
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Records one interrupt: the first stops dispatching, the second aborts.
    pub(crate) fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        if self.stop_dispatch.is_cancelled() {
            self.abort.cancel();
        } else {
            self.stop_dispatch.cancel();
        }
    }

    /// Listens for Ctrl-C, SIGTERM and SIGHUP in the background and calls [`Shutdown::interrupt`].
    pub(crate) fn listen_for_signals(&self, grace: std::time::Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                wait_for_signal().await;
                let first = !this.stop_dispatch.is_cancelled();
                this.interrupt();
                if first {
                    notice!(
                        "\ninterrupted: no new requests; waiting up to {} for the ones in flight (Ctrl-C again to stop at once)",
                        humantime::format_duration(grace)
                    );
                } else {
                    notice!(
                        "\nstopping now: in-flight requests are abandoned (their rows stay unsent)"
                    );
                    return;
                }
            }
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut term), Ok(mut hangup)) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hangup.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
