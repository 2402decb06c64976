//! The seam between an input format and the rows: one [`Source`] per format, each in its own
//! file (`jsonl.rs`, `csv.rs`, `parquet.rs`), chosen in one place (`input::source_for`, in
//! `input/mod.rs`). A new input format is one new file implementing `Source` plus its line there
//! (and its extension in `paths::FileKind`).

use std::path::Path;

use super::{IdSource, InputOptions, PromptSource, Row, RowFactory, RowStream};
use crate::error::Error;

/// What the pipeline needs of an input format.
pub(crate) trait Source: Sync {
    /// Whether the format's records share one header of named columns (CSV, Parquet), so that
    /// a column can be named before a row is read (`--model-column`, `--keep-columns all`).
    fn has_header(&self) -> bool;

    /// Refuses an input this format cannot read before anything is read.
    fn check(&self, _opts: &InputOptions) -> Result<(), Error> {
        Ok(())
    }

    /// The rows of the input, each built by `factory`.
    fn rows(
        &self,
        opts: &InputOptions,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<RowStream, Error>;

    /// The number of data records, quickly (the progress bar's total); `None` when the file
    /// cannot be read.
    fn count(&self, path: &Path) -> Option<u64>;

    /// The header's column names (only for a format that [`has_header`](Source::has_header)).
    fn header(&self, opts: &InputOptions) -> Result<Vec<String>, Error>;
}

/// A format reader that yields one record at a time.
pub(crate) trait ReadRecord {
    /// The next row; `None` for a record passed over (a resumed run's finished row) or the end.
    fn read_next(&mut self) -> Option<Result<Row, Error>>;
    /// Whether the end (or an error that ends reading) was reached.
    fn is_done(&self) -> bool;
}

/// The rows of a [`ReadRecord`] reader, passed-over records skipped.
pub(crate) struct Records<R>(pub R);

impl<R: ReadRecord> Iterator for Records<R> {
    type Item = Result<Row, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.0.is_done() {
            let item = self.0.read_next();
            if item.is_some() {
                return item;
            }
        }
        None
    }
}
