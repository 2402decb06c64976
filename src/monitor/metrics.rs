//! `--metrics-listen ADDR`: the run's counters in the Prometheus text format on `GET /metrics`,
//! while the run goes. (To be written.)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::progress::Counters;

/// The metrics server of one run.
pub(crate) struct Server;

impl Server {
    /// Serves `counters` on `addr`; `None` (after a notice) when it cannot listen there.
    pub(crate) async fn start(addr: SocketAddr, counters: Arc<Counters>) -> Option<Server> {
        let _ = (addr, counters);
        None
    }

    /// Stops serving.
    pub(crate) async fn stop(self) {}
}
