//! The output side: the record schema, the formats (JSONL, CSV), the writer thread that appends
//! to the output file, reading an output back (report, estimate, resume), resuming from an
//! existing output, the crash-safe in-place rewrite that resuming and `--ordered` share, the
//! `--fresh` backups, and the per-output lock.

pub mod backup;
pub mod format;
pub mod lock;
pub mod order;
pub mod read;
pub mod record;
pub mod replace;
pub mod resume;
pub mod resume_sorted;
pub mod writer;

pub use record::{Record, Status, COLUMNS};
pub use writer::{Finished, Writer};
