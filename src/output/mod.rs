//! The output side: the record schema, the formats (JSONL, CSV), the writer thread that appends
//! to the output file, reading an output back (report, estimate, resume), resuming from an
//! existing output, the crash-safe in-place rewrite that resuming and `--ordered` share, the
//! `--fresh` backups, the per-output lock, and `export` (to Parquet, CSV or JSONL; also how
//! `-o x.parquet` is written from its JSONL checkpoint).

pub(crate) mod backup;
pub(crate) mod export;
pub mod format;
pub(crate) mod lock;
pub(crate) mod merge;
pub(crate) mod order;
pub(crate) mod parquet;
pub(crate) mod read;
pub(crate) mod record;
pub(crate) mod replace;
pub(crate) mod resume;
pub(crate) mod resume_sorted;
pub(crate) mod rewrite;
pub(crate) mod table;
pub(crate) mod writer;

pub use record::{Record, Status, COLUMNS};
pub(crate) use writer::{Finished, Writer};

/// The output file and how a run treats an existing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputOptions {
    /// `.csv` writes CSV; anything else JSONL. When it has records, the run resumes.
    pub path: std::path::PathBuf,
    /// Put the output in input order when the run ends.
    pub ordered: bool,
    /// Start over: move an existing output to the first free `OUTPUT.bak[.N]`.
    pub fresh: bool,
    /// When resuming, keep earlier error records instead of sending those rows again.
    pub keep_errors: bool,
    /// Store each answer's whole response body in its record (`response`).
    pub keep_response: bool,
    /// The shape of the lines; `None`: by extension, or the shape an existing output has.
    pub format: Option<format::OutputFormat>,
}

impl OutputOptions {
    /// The file at `path`, resumed if it has records.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        OutputOptions {
            path: path.into(),
            ordered: false,
            fresh: false,
            keep_errors: false,
            keep_response: false,
            format: None,
        }
    }
}
