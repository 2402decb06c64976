//! `promptbatch export OUTPUT DEST`: converts a run's output (JSONL or CSV, finished or partial)
//! to Parquet, CSV or JSONL (by DEST's extension), and the typed table every destination shares.
//!
//! Generic over the record's fields: every top-level field of a record becomes a column: the
//! record schema's fields first, in `COLUMNS` order, then any other field in the order the file
//! first shows them. The fields of [`Record`](super::Record) have their exact
//! type ([`known_type`]: counts `UInt64`, `attempts` `UInt32`, `cost_usd` `Float64`, `simulated`
//! `Boolean`, text `Utf8`; an `Option` field is nullable); any other field (kept input columns,
//! `parsed`, timestamps added later) is typed by looking at every value in the file
//! (`Seen::kind`): only integers → `Int64`, only numbers → `Float64`, only booleans →
//! `Boolean`, only strings → `Utf8`, anything else (objects, arrays, a mix) → `Json` (the value's
//! compact JSON text). A column is nullable when some record lacks it or has `null`.
//!
//! Memory is flat: a first pass over the file decides the columns, a second pass streams the
//! records to the destination (Parquet in row groups of at most [`ROW_GROUP_ROWS`] rows). The
//! destination is written to `DEST.export-tmp` next to it and renamed over DEST only when
//! complete, so DEST is always either the old file or a whole new one. A torn last record (an
//! interrupted run) is skipped, as resume skips it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::read::{Records, Torn};
pub(crate) use super::table::{Cell, Column, ColumnType, TableSink};
use crate::error::Error;
use crate::paths;

/// The type of a field of [`Record`](super::Record) and whether it is an `Option`; `None` for any
/// other field (typed by inference). A test checks every name of `COLUMNS` is here.
pub(crate) fn known_type(name: &str) -> Option<(ColumnType, bool)> {
    use ColumnType::*;
    Some(match name {
        "id" | "prompt" | "model" | "status" | "fingerprint" => (Utf8, false),
        "completion" | "finish_reason" | "error" | "response_id" | "started_at" | "finished_at" => {
            (Utf8, true)
        }
        "row" | "prompt_tokens" | "cached_tokens" | "completion_tokens" | "reasoning_tokens"
        | "total_tokens" | "latency_ms" => (UInt64, false),
        "attempts" => (UInt32, false),
        "cost_usd" => (Float64, true),
        "simulated" => (Boolean, false),
        _ => return None,
    })
}

/// The destination formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Parquet,
    Csv,
    Jsonl,
}

impl ExportFormat {
    /// By extension: `.parquet` → Parquet, `.csv` → CSV, anything else JSONL.
    pub(crate) fn for_path(path: &Path) -> Self {
        if paths::is_parquet(path) {
            ExportFormat::Parquet
        } else if paths::is_csv(path) {
            ExportFormat::Csv
        } else {
            ExportFormat::Jsonl
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Records written.
    pub records: u64,
    /// The columns, in order, with their types.
    pub columns: Vec<Column>,
    /// A torn last record of the source that was skipped.
    pub torn: Option<Torn>,
}

/// `promptbatch export`'s options.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A run's output (`.csv` is CSV, anything else JSONL).
    pub source: PathBuf,
    /// The file to write (`.parquet`, `.csv`, anything else JSONL).
    pub dest: PathBuf,
    /// Replace DEST when it exists.
    pub force: bool,
}

/// `promptbatch export`: checks the paths, then `export`.
pub fn run(opts: &ExportOptions) -> Result<Exported, Error> {
    if same_file(&opts.source, &opts.dest) {
        return Err(Error::Config(format!(
            "{} is the file to export; choose another destination",
            opts.dest.display()
        )));
    }
    if opts.dest.exists() && !opts.force {
        return Err(Error::Config(format!(
            "{} exists; choose another file, or pass --force to replace it",
            opts.dest.display()
        )));
    }
    export(&opts.source, &opts.dest)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Converts the output `source` (JSONL or CSV) to `dest` (Parquet, CSV or JSONL by extension),
/// replacing `dest` atomically. Two passes over `source`; memory does not grow with it.
pub(crate) fn export(source: &Path, dest: &Path) -> Result<Exported, Error> {
    if paths::is_parquet(source) {
        return Err(Error::Config(format!(
            "{} is Parquet; export reads a run's JSONL or CSV output (for `-o x.parquet` that is \
             its checkpoint {})",
            source.display(),
            paths::checkpoint(source).display()
        )));
    }
    let text = paths::is_csv(source);
    let table = Table::scan(source, text)?;
    let tmp = paths::suffixed(dest, ".export-tmp");
    let written = write_table(&table, source, &tmp, dest);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(
            format!(
                "cannot rename {} to {} (check the folder's permissions)",
                tmp.display(),
                dest.display()
            ),
            e,
        )
    })?;
    Ok(Exported {
        records: table.records,
        columns: table.columns,
        torn: table.torn,
    })
}

/// The second pass: every record of the first pass, converted, into the temporary file.
fn write_table(table: &Table, source: &Path, tmp: &Path, dest: &Path) -> Result<(), Error> {
    let file = File::create(tmp).map_err(|e| {
        Error::io(
            format!(
                "cannot create {} (the temporary file of {}; check the folder exists and is \
                 writable)",
                tmp.display(),
                dest.display()
            ),
            e,
        )
    })?;
    let mut sink: Box<dyn TableSink> = match ExportFormat::for_path(dest) {
        ExportFormat::Parquet => {
            Box::new(super::parquet::ParquetSink::new(file, &table.columns, tmp)?)
        }
        ExportFormat::Csv => Box::new(CsvSink::new(file, &table.columns, tmp)?),
        ExportFormat::Jsonl => Box::new(JsonlSink::new(file, &table.columns, tmp)),
    };
    let mut slots: Vec<Option<Value>> = vec![None; table.columns.len()];
    for item in table.records(source)?.take(table.records as usize) {
        let (line, fields) = item?;
        slots.iter_mut().for_each(|slot| *slot = None);
        for (name, value) in fields.0 {
            if let Some(&i) = table.index.get(&name) {
                slots[i] = Some(value);
            }
        }
        let cells = table
            .columns
            .iter()
            .zip(&slots)
            .map(|(column, value)| convert(column, value.as_ref(), table.text))
            .collect::<Result<Vec<Cell>, String>>()
            .map_err(|message| bad_record(source, line, message))?;
        sink.write_row(&cells)?;
    }
    sink.finish()
}

fn bad_record(source: &Path, line: u64, message: String) -> Error {
    Error::input(
        source,
        line,
        format!(
            "{message}; the file must hold promptbatch output records (fix or remove this record)"
        ),
    )
}

/// The columns of a source file, found by the first pass.
struct Table {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// Records the first pass read (the second pass writes exactly these: a file a run is still
    /// appending to is exported as it was).
    records: u64,
    /// The source is CSV: every value is text, parsed by its column's type.
    text: bool,
    torn: Option<Torn>,
}

/// What the first pass saw of a column's values.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen {
    present: u64,
    ints: u64,
    floats: u64,
    bools: u64,
    strings: u64,
    others: u64,
}

impl Seen {
    /// Counts one value (`text`: a CSV field, typed by what it parses as).
    fn add(&mut self, value: &Value, text: bool) {
        match value {
            Value::Null => return,
            Value::String(s) if text => match text_kind(s) {
                None => return,
                Some(ColumnType::Int64) => self.ints += 1,
                Some(ColumnType::Float64) => self.floats += 1,
                Some(ColumnType::Boolean) => self.bools += 1,
                Some(_) => self.strings += 1,
            },
            Value::String(_) => self.strings += 1,
            Value::Bool(_) => self.bools += 1,
            Value::Number(n) if n.is_i64() => self.ints += 1,
            // Beyond i64, or a value no f64 holds exactly: kept exact as JSON.
            Value::Number(n) if n.is_u64() || !exact_f64(n) => self.others += 1,
            Value::Number(_) => self.floats += 1,
            Value::Array(_) | Value::Object(_) => self.others += 1,
        }
        self.present += 1;
    }

    /// The column type for the values seen (see the module doc).
    fn kind(&self, text: bool) -> ColumnType {
        let only = |n: u64| n == self.present;
        if self.present == 0 || only(self.strings) {
            ColumnType::Utf8
        } else if only(self.ints) {
            ColumnType::Int64
        } else if only(self.ints + self.floats) {
            ColumnType::Float64
        } else if only(self.bools) {
            ColumnType::Boolean
        } else if text {
            ColumnType::Utf8 // CSV text of mixed kinds stays the text it is
        } else {
            ColumnType::Json
        }
    }
}

/// Whether an f64 holds the number as written (`1.50`, `2.5e3`, `1e21` do;
/// `123456789012345678901234567890` and `0.1000000000000000000001` do not): its written
/// decimal and the f64's shortest decimal are the same number (a number that needs more digits
/// than that, even one an f64 holds, stays JSON text: nothing is rounded).
fn exact_f64(n: &serde_json::Number) -> bool {
    let Some(f) = n.as_f64().filter(|f| f.is_finite()) else {
        return false;
    };
    canonical_decimal(&n.to_string()) == canonical_decimal(&format!("{f:e}"))
}

/// A decimal's digits without leading or trailing zeros and its exponent of ten (`1.50` and
/// `15e-1` → ("15", -1)), with its sign: two spellings of one number give the same.
fn canonical_decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let exponent = exponent - fraction.len() as i64;
    let trimmed_end = digits.trim_end_matches('0');
    let exponent = exponent + (digits.len() - trimmed_end.len()) as i64;
    let significant = trimmed_end.trim_start_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, significant.to_string(), exponent)
}

/// What a CSV field's text is: `None` when empty (null), else the narrowest type it parses as
/// without losing its spelling (`007` is text, not 7).
fn text_kind(s: &str) -> Option<ColumnType> {
    if s.is_empty() {
        return None;
    }
    Some(if s == "true" || s == "false" {
        ColumnType::Boolean
    } else if s.parse::<i64>().is_ok_and(|n| n.to_string() == s) {
        ColumnType::Int64
    } else if is_float_text(s) {
        ColumnType::Float64
    } else {
        ColumnType::Utf8
    })
}

/// A decimal number with a point or an exponent (`2.5`, `-1e3`), not an integer's spelling
/// (those that do not fit i64, or `007`, stay text) and not `inf` / `nan`.
fn is_float_text(s: &str) -> bool {
    let digits = s.trim_start_matches(['+', '-']);
    let leading_zero = digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1] != b'.';
    s.bytes().any(|b| b == b'.' || b == b'e' || b == b'E')
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && !leading_zero
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

impl Table {
    /// The first pass: the columns in first-seen order, their types and nullability; every
    /// value of a known field is checked against its type.
    fn scan(source: &Path, text: bool) -> Result<Self, Error> {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut seen: Vec<Seen> = Vec::new();
        let mut records = FieldRecords::open(source)?;
        let mut count: u64 = 0;
        for item in records.by_ref() {
            let (line, fields) = item?;
            count += 1;
            for (name, value) in &fields.0 {
                let i = match index.get(name) {
                    Some(&i) => i,
                    None => {
                        index.insert(name.clone(), names.len());
                        names.push(name.clone());
                        seen.push(Seen::default());
                        names.len() - 1
                    }
                };
                match known_type(name) {
                    Some((kind, nullable)) => {
                        let column = Column {
                            name: name.clone(),
                            kind,
                            nullable,
                        };
                        let cell = convert(&column, Some(value), text)
                            .map_err(|message| bad_record(source, line, message))?;
                        if cell != Cell::Null {
                            seen[i].present += 1;
                        }
                    }
                    None => seen[i].add(value, text),
                }
            }
        }
        let torn = records.torn().cloned();
        if names.is_empty() {
            // No records: the record schema's columns, so the file still has its types.
            for name in super::COLUMNS {
                index.insert(name.to_string(), names.len());
                names.push(name.to_string());
                seen.push(Seen::default());
            }
        }
        // The record's own fields in schema order, then the others as the file first has them.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| {
            let schema = super::COLUMNS.iter().position(|c| *c == names[i]);
            (schema.unwrap_or(usize::MAX), i)
        });
        let index: HashMap<String, usize> = order
            .iter()
            .enumerate()
            .map(|(at, &i)| (names[i].clone(), at))
            .collect();
        let columns = order
            .into_iter()
            .map(|i| (names[i].clone(), &seen[i]))
            .map(|(name, seen)| {
                let absent = seen.present < count;
                let (kind, nullable) = match known_type(&name) {
                    Some((kind, nullable)) => (kind, nullable || absent),
                    None => (seen.kind(text), absent),
                };
                Column {
                    name,
                    kind,
                    nullable,
                }
            })
            .collect();
        Ok(Table {
            columns,
            index,
            records: count,
            text,
            torn,
        })
    }

    /// The source's records again (second pass).
    fn records(&self, source: &Path) -> Result<FieldRecords, Error> {
        FieldRecords::open(source)
    }
}

/// A value as a cell of `column`; `Err` says what is wrong with it. `text`: the value is a CSV
/// field (a string), parsed by the column's type; an empty field is null, except in a text
/// column of the record that is never null (`prompt` may be empty).
pub(crate) fn convert<'a>(
    column: &Column,
    value: Option<&'a Value>,
    text: bool,
) -> Result<Cell<'a>, String> {
    let value = match value {
        None | Some(Value::Null) => return Ok(Cell::Null),
        Some(Value::String(s)) if text && s.is_empty() => {
            return Ok(match (column.kind, column.nullable) {
                (ColumnType::Utf8, false) if known_type(&column.name).is_some() => {
                    Cell::Text(Cow::Borrowed(""))
                }
                _ => Cell::Null,
            })
        }
        Some(value) => value,
    };
    let wrong = |what: &str| {
        let shown = match value {
            Value::String(s) => format!("`{}`", preview(s)),
            other => preview(&other.to_string()),
        };
        format!("`{}` is {shown}, not {what}", column.name)
    };
    Ok(match (column.kind, value) {
        (ColumnType::Utf8, Value::String(s)) => Cell::Text(Cow::Borrowed(s)),
        (ColumnType::Utf8, other) => Cell::Text(Cow::Owned(other.to_string())),
        (ColumnType::Json, Value::String(s)) if text => Cell::Text(Cow::Borrowed(s)),
        (ColumnType::Json, other) => Cell::Json(other.to_string()),
        (ColumnType::Int64, v) => Cell::Int(
            match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) if text => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| wrong("an integer"))?,
        ),
        (ColumnType::UInt64 | ColumnType::UInt32, v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) if text => s.parse().ok(),
                _ => None,
            };
            let max = match column.kind {
                ColumnType::UInt32 => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            match n {
                Some(n) if n <= max => Cell::UInt(n),
                _ => return Err(wrong("a whole number ≥ 0")),
            }
        }
        (ColumnType::Float64, Value::Number(n)) => Cell::Decimal(
            n.as_f64().ok_or_else(|| wrong("a number"))?,
            Cow::Owned(n.to_string()),
        ),
        (ColumnType::Float64, v) => Cell::Float(
            match v {
                Value::String(s) if text => s.parse().ok().filter(|f: &f64| f.is_finite()),
                _ => None,
            }
            .ok_or_else(|| wrong("a number"))?,
        ),
        (ColumnType::Boolean, v) => Cell::Bool(match v {
            Value::Bool(b) => *b,
            Value::String(s) if text => {
                super::record::bool_text(s).ok_or_else(|| wrong("true or false"))?
            }
            _ => return Err(wrong("true or false")),
        }),
    })
}

/// At most 40 characters of `text`, then `…`.
fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(40).collect();
    match chars.next() {
        Some(_) => format!("{head}…"),
        None => head,
    }
}

/// A record's top-level fields in the order the file has them (a CSV field is a string).
pub(crate) struct Fields(pub Vec<(String, Value)>);

/// Fields read as `V`: a JSON value (JSONL), or the text of a CSV field (the csv crate would
/// otherwise guess a type from the text, turning `007` into 7).
pub(crate) struct RawFields<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for RawFields<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for FieldsVisitor<V> {
            type Value = RawFields<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a record (an object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFields<V>, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    fields.push((name, map.next_value::<V>()?));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

/// The records of an output as [`Fields`], whatever its format.
pub(crate) enum FieldRecords {
    Json(Records<RawFields<Value>>),
    Text(Records<RawFields<String>>),
}

impl FieldRecords {
    /// Opens a run's output (`.csv`: CSV, anything else JSONL).
    pub(crate) fn open(source: &Path) -> Result<Self, Error> {
        Ok(if paths::is_csv(source) {
            FieldRecords::Text(Records::open(source)?)
        } else {
            FieldRecords::Json(Records::open(source)?)
        })
    }

    /// The torn last record that was skipped, once the iteration has ended.
    pub(crate) fn torn(&self) -> Option<&Torn> {
        match self {
            FieldRecords::Json(r) => r.torn(),
            FieldRecords::Text(r) => r.torn(),
        }
    }
}

impl Iterator for FieldRecords {
    type Item = Result<(u64, Fields), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self {
            FieldRecords::Json(r) => r.next()?.map(|(line, f)| (line, Fields(f.0))),
            FieldRecords::Text(r) => r.next()?.map(|(line, f)| {
                let fields = f.0.into_iter().map(|(k, v)| (k, Value::String(v)));
                (line, Fields(fields.collect()))
            }),
        })
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!(
            "cannot write {} (is the disk full? free some space and export again)",
            path.display()
        ),
        std::io::Error::other(e.to_string()),
    )
}

/// CSV with a header row of the column names; null is an empty field, JSON values their text.
struct CsvSink {
    writer: csv::Writer<BufWriter<File>>,
    path: PathBuf,
    record: Vec<String>,
}

impl CsvSink {
    fn new(file: File, columns: &[Column], path: &Path) -> Result<Self, Error> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(BufWriter::with_capacity(1 << 16, file));
        writer
            .write_record(columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| write_error(path, e))?;
        Ok(CsvSink {
            writer,
            path: path.to_path_buf(),
            record: Vec::new(),
        })
    }
}

impl TableSink for CsvSink {
    fn write_row(&mut self, cells: &[Cell]) -> Result<(), Error> {
        self.record.resize(cells.len(), String::new());
        for (field, cell) in self.record.iter_mut().zip(cells) {
            field.clear();
            use std::fmt::Write as _;
            let _ = match cell {
                Cell::Null => Ok(()),
                Cell::Bool(b) => write!(field, "{b}"),
                Cell::Int(n) => write!(field, "{n}"),
                Cell::UInt(n) => write!(field, "{n}"),
                Cell::Float(f) => write!(field, "{f}"),
                Cell::Decimal(_, s) | Cell::Text(s) => write!(field, "{s}"),
                Cell::Json(s) => write!(field, "{s}"),
            };
        }
        self.writer
            .write_record(&self.record)
            .map_err(|e| write_error(&self.path, e))
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        let path = self.path.clone();
        let buffered = self
            .writer
            .into_inner()
            .map_err(|e| write_error(&path, e.error()))?;
        let file = buffered
            .into_inner()
            .map_err(|e| write_error(&path, e.error()))?;
        file.sync_all().map_err(|e| write_error(&path, e))
    }
}

/// One JSON object per line, fields in column order (a missing field is `null`).
struct JsonlSink {
    writer: BufWriter<File>,
    path: PathBuf,
    names: Vec<String>,
    line: Vec<u8>,
}

impl JsonlSink {
    fn new(file: File, columns: &[Column], path: &Path) -> Self {
        let names = columns
            .iter()
            .map(|c| serde_json::to_string(&c.name).unwrap_or_else(|_| "\"\"".into()))
            .collect();
        JsonlSink {
            writer: BufWriter::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            names,
            line: Vec::new(),
        }
    }
}

impl TableSink for JsonlSink {
    fn write_row(&mut self, cells: &[Cell]) -> Result<(), Error> {
        let line = &mut self.line;
        line.clear();
        line.push(b'{');
        for (i, (name, cell)) in self.names.iter().zip(cells).enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(name.as_bytes());
            line.push(b':');
            let value = match cell {
                Cell::Null => Value::Null,
                Cell::Bool(b) => Value::Bool(*b),
                Cell::Int(n) => Value::from(*n),
                Cell::UInt(n) => Value::from(*n),
                Cell::Float(f) => Value::from(*f),
                Cell::Text(s) => Value::String(s.to_string()),
                Cell::Decimal(_, s) => {
                    line.extend_from_slice(s.as_bytes());
                    continue;
                }
                Cell::Json(s) => {
                    line.extend_from_slice(s.as_bytes());
                    continue;
                }
            };
            serde_json::to_writer(&mut *line, &value).map_err(|e| write_error(&self.path, e))?;
        }
        line.extend_from_slice(b"}\n");
        self.writer
            .write_all(line)
            .map_err(|e| write_error(&self.path, e))
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        let path = self.path.clone();
        let file = self
            .writer
            .into_inner()
            .map_err(|e| write_error(&path, e.error()))?;
        file.sync_all().map_err(|e| write_error(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::COLUMNS;

    #[test]
    fn a_number_is_exact_as_f64_only_when_no_digit_is_lost() {
        let exact = |t: &str| exact_f64(&t.parse::<serde_json::Number>().unwrap());
        for t in ["1.50", "2.5e3", "1e21", "-0.125", "0"] {
            assert!(exact(t), "{t}");
        }
        for t in [
            "123456789012345678901234567890",
            "0.1000000000000000000001",
            "1.00000000000000000001",
        ] {
            assert!(!exact(t), "{t}");
        }
    }

    #[test]
    fn every_record_column_has_its_type() {
        for name in COLUMNS {
            assert!(known_type(name).is_some(), "{name} has no Parquet type");
        }
    }

    #[test]
    fn inference() {
        let kind = |values: &[Value], text: bool| {
            let mut seen = Seen::default();
            values.iter().for_each(|v| seen.add(v, text));
            seen.kind(text)
        };
        use serde_json::json;
        assert_eq!(
            kind(&[json!(1), json!(-2), json!(null)], false),
            ColumnType::Int64
        );
        assert_eq!(kind(&[json!(1), json!(2.5)], false), ColumnType::Float64);
        assert_eq!(
            kind(&[json!(true), json!(false)], false),
            ColumnType::Boolean
        );
        assert_eq!(kind(&[json!("a"), json!(null)], false), ColumnType::Utf8);
        assert_eq!(
            kind(&[json!({"a": 1}), json!([1])], false),
            ColumnType::Json
        );
        assert_eq!(kind(&[json!("a"), json!(1)], false), ColumnType::Json);
        assert_eq!(kind(&[json!(u64::MAX)], false), ColumnType::Json);
        assert_eq!(kind(&[], false), ColumnType::Utf8);
        let texts = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
        assert_eq!(kind(&texts(&["1", "", "-3"]), true), ColumnType::Int64);
        assert_eq!(kind(&texts(&["1", "2.5e3"]), true), ColumnType::Float64);
        assert_eq!(kind(&texts(&["007", "1"]), true), ColumnType::Utf8);
        assert_eq!(kind(&texts(&["0.5", "-1.25"]), true), ColumnType::Float64);
        assert_eq!(kind(&texts(&["01.5"]), true), ColumnType::Utf8);
        assert_eq!(
            kind(&texts(&["99999999999999999999"]), true),
            ColumnType::Utf8
        );
        assert_eq!(kind(&texts(&["true", "false"]), true), ColumnType::Boolean);
        assert_eq!(kind(&texts(&["inf", "nan"]), true), ColumnType::Utf8);
    }

    #[test]
    fn conversion_checks_known_types() {
        let column = |name: &str| {
            let (kind, nullable) = known_type(name).unwrap();
            Column {
                name: name.into(),
                kind,
                nullable,
            }
        };
        use serde_json::json;
        assert_eq!(
            convert(&column("row"), Some(&json!(7)), false),
            Ok(Cell::UInt(7))
        );
        assert_eq!(
            convert(&column("row"), Some(&json!("7")), true),
            Ok(Cell::UInt(7))
        );
        let err = convert(&column("row"), Some(&json!("x")), true).unwrap_err();
        assert!(err.contains("`row` is `x`, not a whole number"), "{err}");
        assert!(convert(&column("attempts"), Some(&json!(1u64 << 40)), false).is_err());
        assert_eq!(
            convert(&column("prompt"), Some(&json!("")), true),
            Ok(Cell::Text(Cow::Borrowed("")))
        );
        assert_eq!(
            convert(&column("completion"), Some(&json!("")), true),
            Ok(Cell::Null)
        );
        assert_eq!(
            convert(&column("simulated"), Some(&json!("true")), true),
            Ok(Cell::Bool(true))
        );
    }
}
