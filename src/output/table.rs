//! The table an export writes, whatever its destination: its columns and their types, one
//! value ([`Cell`]) per column, and the [`TableSink`] trait each destination format implements
//! (`export.rs` for CSV and JSONL, `parquet.rs` for Parquet).

use std::borrow::Cow;

use serde::Serialize;

use crate::error::Error;

/// Rows per Parquet row group (and the most rows the Parquet writer holds at once).
pub(crate) const ROW_GROUP_ROWS: usize = 65_536;

/// A column's type in every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ColumnType {
    /// Text.
    Utf8,
    /// Compact JSON text of any value (objects, arrays, a mix of kinds).
    Json,
    Int64,
    UInt64,
    UInt32,
    Float64,
    Boolean,
}

/// One column of the exported table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
    pub nullable: bool,
}

/// One value of the table, typed by its column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A JSON number whose value is this f64 exactly, with its text as written (`1.50`): text
    /// outputs write the text, Parquet the f64.
    Decimal(f64, Cow<'a, str>),
    Text(Cow<'a, str>),
    /// Compact JSON text (a `Json` column).
    Json(String),
}

/// Writes the rows of a table in one destination format (one type per format, like the run's
/// `format::RecordFormat`).
pub(crate) trait TableSink {
    /// Appends one row: one cell per column, in column order.
    fn write_row(&mut self, cells: &[Cell]) -> Result<(), Error>;
    /// Writes what is buffered and the file's footer; the file is complete once this returns.
    fn finish(self: Box<Self>) -> Result<(), Error>;
}
