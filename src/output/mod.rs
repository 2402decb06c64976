//! The output side: the record schema, the formats (JSONL, CSV), the writer thread that owns
//! the output file, reading an output back (report, estimate, resume), resuming from an existing
//! output, and the per-output lock.

pub mod format;
pub mod lock;
pub mod read;
pub mod record;
pub mod resume;
pub mod writer;

pub use record::{Record, Status, COLUMNS};
pub use writer::{Sequenced, Writer};
