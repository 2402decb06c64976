//! The live transport: one row's life in the worker pool (`worker`), the pacing every worker
//! waits on (`limit` — the RPM/TPM caps — over `pacing`, the adaptive controller), and the
//! circuit breaker that stops a run a server systematically refuses (`breaker`), and the
//! warm-first order for prompt caches (`prefix_gate`).

pub(crate) mod breaker;
pub(crate) mod limit;
pub(crate) mod pacing;
pub(crate) mod pool;
pub(crate) mod prefix_gate;
pub(crate) mod worker;
