//! Watching a run from outside it: the event log beside the output ([`event_log`]), live
//! Prometheus metrics (`metrics.rs`, `--metrics-listen`), and one notification when the run ends
//! (`notify.rs`, `--notify-url`). [`Monitor::start`] begins what the options ask for over the
//! run's [`Counters`]; [`Monitor::finish`] records how the run ended. None of it can stop or slow
//! a run: a failure to log, serve or notify is a notice, never an error.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::job::Job;
use crate::progress::{Counters, Summary};

pub(crate) mod event_log;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod options;

/// What watches one run, from [`Monitor::start`] to [`Monitor::finish`].
pub(crate) struct Monitor {
    events: Option<event_log::Sampler>,
    metrics: Option<metrics::Server>,
    notify_url: Option<String>,
    /// The run's counters and when watching began: what a failed run's notification counts.
    counters: Arc<Counters>,
    started: Instant,
}

impl Monitor {
    /// Starts what `opts.monitor` asks for over `counters`, for the output at `output` (its real
    /// path: the checkpoint of a Parquet output).
    pub(crate) async fn start(opts: &Job, output: &Path, counters: &Arc<Counters>) -> Monitor {
        let monitor = &opts.monitor;
        let events = monitor
            .events
            .then(|| event_log::Sampler::start(opts, output, counters.clone()));
        let metrics = match monitor.metrics_listen {
            Some(addr) => metrics::Server::start(addr, counters.clone()).await,
            None => None,
        };
        Monitor {
            events,
            metrics,
            notify_url: monitor.notify_url.clone(),
            counters: counters.clone(),
            started: Instant::now(),
        }
    }

    /// Records a run that failed after its start (an error, not a summary).
    pub(crate) async fn failed(self, opts: &Job, error: &crate::error::Error) {
        if let Some(events) = self.events {
            events.failed(error).await;
        }
        if let Some(url) = &self.notify_url {
            let elapsed = self.started.elapsed();
            notify::send_failure(url, opts, error, &self.counters, elapsed).await;
        }
        if let Some(metrics) = self.metrics {
            metrics.stop().await;
        }
    }

    /// Records how the run ended (the event log's `stop`, the notification), then stops the
    /// sampler and the metrics server.
    pub(crate) async fn finish(self, opts: &Job, summary: &Summary) {
        if let Some(events) = self.events {
            events.finish(summary).await;
        }
        if let Some(url) = &self.notify_url {
            notify::send(url, opts, summary).await;
        }
        if let Some(metrics) = self.metrics {
            metrics.stop().await;
        }
    }
}
