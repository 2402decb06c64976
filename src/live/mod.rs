//! The live transport: one row's life in the worker pool (`worker`), the pacing every worker
//! waits on (`limit` — the RPM/TPM caps — over `pacing`, the adaptive controller), and the
//! circuit breaker that stops a run a server systematically refuses (`breaker`).

pub mod breaker;
pub mod limit;
pub(crate) mod pacing;
pub(crate) mod pool;
pub mod worker;
