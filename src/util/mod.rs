//! Small pieces with no knowledge of the pipeline: durations and numbers for people, secret
//! redaction, stable hashing, the bounded-memory external sort, and an HTTP accept loop.

pub(crate) mod choice;
pub mod duration;
pub(crate) mod error_kind;
pub(crate) mod fingerprint;
pub mod human;
pub mod redact;
pub(crate) mod serve;
pub(crate) mod spill;
