//! The Parquet destination of `export` (and so of `-o results.parquet`): the typed columns of
//! [`export`](super::export) as Arrow arrays, written with the `parquet` crate's `ArrowWriter`
//! (Snappy), in row groups of at most [`ROW_GROUP_ROWS`] rows or 64 MiB.
//!
//! Memory: one batch of [`BATCH_ROWS`] rows as Arrow arrays plus the row group being encoded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::table::{Cell, Column, ColumnType, TableSink, ROW_GROUP_ROWS};
use crate::error::Error;

/// Rows gathered as Arrow arrays before they go to the writer.
pub(crate) const BATCH_ROWS: usize = 8_192;

/// A row group is closed at this estimated size even before [`ROW_GROUP_ROWS`] rows (long
/// prompts and answers).
const ROW_GROUP_BYTES: usize = 64 << 20;

/// The Arrow type of a column.
pub(crate) fn data_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::UInt32 => DataType::UInt32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
    }
}

/// The Arrow schema of a table; a `Json` column carries the field metadata
/// `promptbatch.json = true` (its strings are JSON text).
pub(crate) fn schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let field = Field::new(&c.name, data_type(c.kind), c.nullable);
            match c.kind {
                ColumnType::Json => field.with_metadata(std::collections::HashMap::from([(
                    "promptbatch.json".to_string(),
                    "true".to_string(),
                )])),
                _ => field,
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// One column being gathered.
enum Builder {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    UInt32(UInt32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
}

impl Builder {
    fn new(kind: ColumnType) -> Self {
        match kind {
            ColumnType::Utf8 | ColumnType::Json => Builder::Utf8(StringBuilder::new()),
            ColumnType::Int64 => Builder::Int64(Int64Builder::new()),
            ColumnType::UInt64 => Builder::UInt64(UInt64Builder::new()),
            ColumnType::UInt32 => Builder::UInt32(UInt32Builder::new()),
            ColumnType::Float64 => Builder::Float64(Float64Builder::new()),
            ColumnType::Boolean => Builder::Boolean(BooleanBuilder::new()),
        }
    }

    /// Appends a cell; a cell of another type than the column's is a bug of `export::convert`
    /// and is written as null rather than panicking.
    fn append(&mut self, cell: &Cell) {
        match (self, cell) {
            (Builder::Utf8(b), Cell::Text(s)) => b.append_value(s),
            (Builder::Utf8(b), Cell::Json(s)) => b.append_value(s),
            (Builder::Int64(b), Cell::Int(n)) => b.append_value(*n),
            (Builder::UInt64(b), Cell::UInt(n)) => b.append_value(*n),
            (Builder::UInt32(b), Cell::UInt(n)) => b.append_value(u32::try_from(*n).unwrap_or(0)),
            (Builder::Float64(b), Cell::Float(f) | Cell::Decimal(f, _)) => b.append_value(*f),
            (Builder::Boolean(b), Cell::Bool(v)) => b.append_value(*v),
            (Builder::Utf8(b), _) => b.append_null(),
            (Builder::Int64(b), _) => b.append_null(),
            (Builder::UInt64(b), _) => b.append_null(),
            (Builder::UInt32(b), _) => b.append_null(),
            (Builder::Float64(b), _) => b.append_null(),
            (Builder::Boolean(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::UInt64(b) => Arc::new(b.finish()),
            Builder::UInt32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// Writes a table as Parquet.
pub(crate) struct ParquetSink {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    rows: usize,
    path: PathBuf,
}

impl ParquetSink {
    /// A Parquet file of these columns in `file` (named `path` in messages).
    pub(crate) fn new(file: File, columns: &[Column], path: &Path) -> Result<Self, Error> {
        let schema = schema(columns);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_created_by(format!("promptbatch {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| parquet_error(path, e))?;
        Ok(ParquetSink {
            writer,
            schema,
            builders: columns.iter().map(|c| Builder::new(c.kind)).collect(),
            rows: 0,
            path: path.to_path_buf(),
        })
    }

    fn flush_batch(&mut self) -> Result<(), Error> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays = self.builders.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| parquet_error(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| parquet_error(&self.path, e))
    }
}

impl TableSink for ParquetSink {
    fn write_row(&mut self, cells: &[Cell]) -> Result<(), Error> {
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            builder.append(cell);
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), Error> {
        self.flush_batch()?;
        let ParquetSink { writer, path, .. } = *self;
        let file = writer.into_inner().map_err(|e| parquet_error(&path, e))?;
        file.sync_all().map_err(|e| {
            Error::io(
                format!("cannot write {} (is the disk full?)", path.display()),
                e,
            )
        })
    }
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!(
            "cannot write Parquet file {} (is the disk full? free some space and export again)",
            path.display()
        ),
        std::io::Error::other(e.to_string()),
    )
}
