//! The output side: the record schema, the formats (JSONL, CSV) and the writer thread that owns
//! the output file.

pub mod format;
pub mod record;
pub mod writer;

pub use record::{Record, Status, COLUMNS};
pub use writer::{Sequenced, Writer};
