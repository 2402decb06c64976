//! [`MonitorOptions`]: what watches a run besides the progress display. Apart from the monitor
//! itself, so [`Job`](crate::Job) can hold it.

use std::net::SocketAddr;
use std::time::Duration;

/// How often the event log records an interval (counts of the interval, pace, in flight).
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(10);

/// What watches a run besides the progress display.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Append the run's events to `OUTPUT.events.jsonl` (default on).
    pub events: bool,
    /// How often the event log records an interval.
    pub event_interval: Duration,
    /// Serve Prometheus metrics on this address while the run goes (`GET /metrics`).
    pub metrics_listen: Option<SocketAddr>,
    /// POST the summary as JSON here when the run ends, however it ends.
    pub notify_url: Option<String>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            events: true,
            event_interval: DEFAULT_EVENT_INTERVAL,
            metrics_listen: None,
            notify_url: None,
        }
    }
}
