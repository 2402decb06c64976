//! Parquet input: the file's rows, streamed in batches of [`BATCH_ROWS`] by the `parquet` crate's
//! Arrow reader, reading only the columns the run uses (template columns, prompt column,
//! `messages`, the id column). Memory ≈ one batch of those columns plus the pages being decoded,
//! never more than one row group's chunks of them.
//!
//! The column rules are CSV's: `--template` fills from columns (integers, floats and booleans as
//! their text, null as empty, lists and structs as compact JSON), else the prompt column
//! (`--prompt-column`, default `prompt`); a `messages` column (`list<struct<role, content>>`, or
//! any list of structs in the chat shape) is used, as in JSONL, for rows where it is not null.
//! The id comes from `--id-column`, else `id`, else `custom_id`, else the row number. Every
//! named column is checked before the first row; a missing one lists the columns found.
//!
//! There are no lines in Parquet: where messages say `file:N`, N is the row number (1-based),
//! and they name the row group too.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde_json::Value;

use super::keep::{KeepColumns, Kept};
use super::source::{ReadRecord, Records, Source};
use super::{Extracted, IdSource, PromptSource, Row, RowFactory, Template};
use super::{InputOptions, RowStream};
use crate::error::Error;

/// Rows decoded at once.
pub(crate) const BATCH_ROWS: usize = 1_024;

/// How to get the prompt from a row, resolved to column indexes of the projected batches.
enum ParquetPrompt {
    Template {
        template: Template,
        columns: Vec<(String, usize)>,
    },
    /// The prompt column; `None` when absent (then every row needs `messages`).
    Column { name: String, index: Option<usize> },
}

/// A Parquet file's top-level columns, to find the ones the flags name.
struct FileColumns {
    names: Vec<String>,
    path: std::path::PathBuf,
}

impl FileColumns {
    /// The index of column `name`, if the file has it.
    fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The (name, index) of a column `flag` names; an error listing the file's columns if it
    /// lacks it.
    fn require(&self, flag: &str, name: &str) -> Result<(String, usize), Error> {
        match self.find(name) {
            Some(index) => Ok((name.to_string(), index)),
            None => Err(self.missing(flag, name)),
        }
    }

    /// `flag` names a column the file lacks: say which columns it has.
    fn missing(&self, flag: &str, name: &str) -> Error {
        let found: Vec<String> = self.names.iter().map(|n| format!("`{n}`")).collect();
        let found = if found.is_empty() {
            "(none)".to_string()
        } else {
            found.join(", ")
        };
        file_error(
            &self.path,
            format!("{flag} names column `{name}`, which the file lacks; its columns are: {found}"),
        )
    }

    /// `--keep-columns`: (name, index) of each kept column.
    fn kept(&self, keep: Option<&KeepColumns>) -> Result<Vec<(String, usize)>, Error> {
        match keep {
            None => Ok(Vec::new()),
            Some(KeepColumns::All) => Ok(self.names.iter().cloned().zip(0..).collect()),
            Some(KeepColumns::Named(names)) => names
                .iter()
                .map(|name| self.require("--keep-columns", name))
                .collect(),
        }
    }

    /// Every column the flags name, checked in this order: the template's (or the prompt
    /// column), the id's, `--model-column`'s, then `--keep-columns`'.
    fn resolve(
        &self,
        prompt: PromptSource,
        ids: IdSource,
        factory: &RowFactory,
    ) -> Result<Resolved, Error> {
        let (prompt, messages) = self.prompt(prompt)?;
        let id = self.id(ids)?;
        let model = match factory.options.0.model_column.as_deref() {
            Some(name) => Some(self.require("--model-column", name)?),
            None => None,
        };
        let kept = self.kept(factory.keep.as_ref())?;
        Ok(Resolved {
            prompt,
            messages,
            id,
            model,
            kept,
        })
    }

    /// How to get the prompt: the template's columns (the file must have each), or the prompt
    /// column (it may lack it when it has a `messages` column); and the `messages` column (not
    /// read with a template).
    fn prompt(&self, prompt: PromptSource) -> Result<(ParquetPrompt, Option<usize>), Error> {
        match prompt {
            PromptSource::Template(template) => {
                let columns = template
                    .fields()
                    .into_iter()
                    .map(|name| self.require("--template", name))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((ParquetPrompt::Template { template, columns }, None))
            }
            PromptSource::Column(name) => {
                let messages = self.find("messages");
                let index = self.find(&name);
                if index.is_none() && messages.is_none() {
                    return Err(self.missing(
                        "--prompt-column (default `prompt`; or give a `messages` column)",
                        &name,
                    ));
                }
                Ok((ParquetPrompt::Column { name, index }, messages))
            }
        }
    }

    /// The id column: `--id-column`'s (the file must have it), else `id`, else `custom_id`,
    /// else none (the row number is the id).
    fn id(&self, ids: IdSource) -> Result<Option<(String, usize)>, Error> {
        match ids {
            IdSource::Required(name) => self.require("--id-column", &name).map(Some),
            IdSource::Default => Ok(["id", "custom_id"]
                .iter()
                .find_map(|name| self.find(name).map(|i| (name.to_string(), i)))),
        }
    }
}

/// The columns a run reads, resolved by name: indexes into the file's columns, or (once
/// [`projected`](Resolved::projected)) into the batches of the columns read.
struct Resolved {
    prompt: ParquetPrompt,
    /// The `messages` column, when the file has one and there is no template.
    messages: Option<usize>,
    id: Option<(String, usize)>,
    /// `--model-column`.
    model: Option<(String, usize)>,
    /// `--keep-columns`.
    kept: Vec<(String, usize)>,
}

impl Resolved {
    /// The file's columns to read: every resolved index, in file order, once each.
    fn wanted(&self) -> Vec<usize> {
        let mut wanted: Vec<usize> = Vec::new();
        match &self.prompt {
            ParquetPrompt::Template { columns, .. } => {
                wanted.extend(columns.iter().map(|(_, i)| *i));
            }
            ParquetPrompt::Column { index, .. } => wanted.extend(*index),
        }
        wanted.extend(self.messages);
        let named = self.id.iter().chain(&self.model).chain(&self.kept);
        wanted.extend(named.map(|(_, i)| *i));
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// The same columns, indexed in the projected batches (which hold the `wanted` columns in
    /// file order).
    fn projected(self, wanted: &[usize]) -> Self {
        let at = |file_index: usize| {
            wanted
                .iter()
                .position(|&w| w == file_index)
                .unwrap_or_default()
        };
        let named = |(name, i): (String, usize)| (name, at(i));
        let prompt = match self.prompt {
            ParquetPrompt::Template { template, columns } => ParquetPrompt::Template {
                template,
                columns: columns.into_iter().map(named).collect(),
            },
            ParquetPrompt::Column { name, index } => ParquetPrompt::Column {
                name,
                index: index.map(at),
            },
        };
        Resolved {
            prompt,
            messages: self.messages.map(at),
            id: self.id.map(named),
            model: self.model.map(named),
            kept: self.kept.into_iter().map(named).collect(),
        }
    }
}

/// The cumulative row count at the end of each row group.
fn group_ends(builder: &ParquetRecordBatchReaderBuilder<File>) -> Vec<u64> {
    let mut total: u64 = 0;
    builder
        .metadata()
        .row_groups()
        .iter()
        .map(|group| {
            total += u64::try_from(group.num_rows()).unwrap_or(0);
            total
        })
        .collect()
}

/// Streams rows from a Parquet file.
pub(crate) struct ParquetRows {
    reader: ParquetRecordBatchReader,
    factory: RowFactory,
    prompt: ParquetPrompt,
    messages: Option<usize>,
    id: Option<(String, usize)>,
    /// `--model-column`: its name and index in the batches.
    model: Option<(String, usize)>,
    /// `--keep-columns`: (name, index in a batch) of each kept column.
    kept: Vec<(String, usize)>,
    batch: Option<RecordBatch>,
    /// Next row of `batch`.
    at: usize,
    /// Rows read so far (the last row's number).
    row: u64,
    /// The cumulative row count at the end of each row group (for messages).
    group_ends: Vec<u64>,
    done: bool,
}

/// Opens the file and reads its footer; errors name the file and what to do.
fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, Error> {
    let file = File::open(path).map_err(|e| {
        Error::io(
            format!("cannot open input {} (check the path)", path.display()),
            e,
        )
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        file_error(
            path,
            format!(
                "not a readable Parquet file ({e}); check the file is complete, or pass \
                 --input-format csv/jsonl if it is not Parquet"
            ),
        )
    })
}

/// An error about the whole file (there is no line to name).
fn file_error(path: &Path, message: String) -> Error {
    Error::Config(format!("{}: {message}", path.display()))
}

/// The top-level column names in a file's footer.
fn schema_names(builder: &ParquetRecordBatchReaderBuilder<File>) -> Vec<String> {
    builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// The reader of the `wanted` columns (by index in the file's schema), [`BATCH_ROWS`] at a
/// time.
fn projected_reader(
    builder: ParquetRecordBatchReaderBuilder<File>,
    wanted: &[usize],
    path: &Path,
) -> Result<ParquetRecordBatchReader, Error> {
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
    builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| {
            file_error(
                path,
                format!("cannot read the Parquet file ({e}); check the file is complete"),
            )
        })
}

/// Hands every row of the file at `path` to `each` as one JSON object of all its columns
/// (the types [`json_at`] reads), in order, a batch of [`BATCH_ROWS`] decoded at a time.
pub(crate) fn each_row_as_json(
    path: &Path,
    mut each: impl FnMut(serde_json::Map<String, Value>) -> Result<(), Error>,
) -> Result<(), Error> {
    let builder = builder(path)?;
    let all: Vec<usize> = (0..builder.schema().fields().len()).collect();
    let names = schema_names(&builder);
    let mut row = 0u64;
    for batch in projected_reader(builder, &all, path)? {
        let batch = batch.map_err(|e| {
            file_error(
                path,
                format!("cannot read the Parquet file ({e}); check the file is complete"),
            )
        })?;
        for i in 0..batch.num_rows() {
            row += 1;
            let mut object = serde_json::Map::with_capacity(names.len());
            for (name, column) in names.iter().zip(batch.columns()) {
                let value = json_at(column.as_ref(), i)
                    .map_err(|e| file_error(path, format!("row {row}, column `{name}`: {e}")))?;
                object.insert(name.clone(), value);
            }
            each(object)?;
        }
    }
    Ok(())
}

/// The file's top-level column names (for `validate`).
pub(crate) fn column_names(path: &Path) -> Option<Vec<String>> {
    Some(schema_names(&builder(path).ok()?))
}

/// The number of rows in the file's footer (for the progress total).
pub(crate) fn count_rows(path: &Path) -> Option<u64> {
    let builder = builder(path).ok()?;
    u64::try_from(builder.metadata().file_metadata().num_rows()).ok()
}

impl ParquetRows {
    /// Reads the footer and resolves every named column; a missing one is an error listing the
    /// columns the file has.
    pub(crate) fn new(
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<Self, Error> {
        let builder = builder(&factory.path)?;
        let file = FileColumns {
            names: schema_names(&builder),
            path: factory.path.clone(),
        };
        let resolved = file.resolve(prompt, ids, &factory)?;
        let wanted = resolved.wanted();
        let Resolved {
            prompt,
            messages,
            id,
            model,
            kept,
        } = resolved.projected(&wanted);
        let group_ends = group_ends(&builder);
        let reader = projected_reader(builder, &wanted, &file.path)?;
        Ok(ParquetRows {
            reader,
            factory,
            prompt,
            messages,
            id,
            model,
            kept,
            batch: None,
            at: 0,
            row: 0,
            group_ends,
            done: false,
        })
    }

    /// The 0-based row group of row number `row` (1-based).
    fn group_of(&self, row: u64) -> usize {
        self.group_ends.partition_point(|&end| end < row)
    }

    /// Where a value comes from, for messages.
    fn place(&self, column: &str) -> String {
        format!(
            "column `{column}` (row {}, row group {})",
            self.row,
            self.group_of(self.row)
        )
    }

    /// `--keep-columns`: row `i`'s kept values as JSON (null stays null).
    fn kept_values(&self, batch: &RecordBatch, i: usize) -> Result<Option<Kept>, String> {
        if self.factory.keep.is_none() {
            return Ok(None);
        }
        let mut kept = serde_json::Map::new();
        for (name, index) in &self.kept {
            let value = json_at(batch.column(*index).as_ref(), i)
                .map_err(|e| format!("{}: {e}", self.place(name)))?;
            kept.insert(name.clone(), value);
        }
        Ok(Some(Box::new(kept)))
    }

    /// Row `i` of `batch`: its id and what to send.
    fn extract(
        &self,
        batch: &RecordBatch,
        i: usize,
    ) -> Result<(Option<String>, Result<Extracted, String>), String> {
        let id = match &self.id {
            Some((name, index)) => {
                let column = batch.column(*index);
                if column.is_null(i) {
                    return Err(format!(
                        "{} is null: every row needs an id (fill it, or choose another column \
                         with --id-column)",
                        self.place(name)
                    ));
                }
                match json_at(column.as_ref(), i) {
                    Ok(Value::String(s)) => Some(s),
                    Ok(Value::Number(n)) => Some(n.to_string()),
                    Ok(other) => {
                        return Err(format!(
                            "{} must be a string or a number, not {}",
                            self.place(name),
                            kind_of(&other)
                        ))
                    }
                    Err(e) => return Err(format!("{}: {e}", self.place(name))),
                }
            }
            None => None,
        };
        let content = match &self.model {
            Some((name, index)) if !batch.column(*index).is_null(i) => {
                match text_at(batch.column(*index).as_ref(), i) {
                    Ok(model) => self
                        .content(batch, i)
                        .map(|c| c.with_own_model(Some(&model))),
                    Err(e) => Err(format!("{}: {e}", self.place(name))),
                }
            }
            _ => self.content(batch, i),
        };
        Ok((id, content))
    }

    fn content(&self, batch: &RecordBatch, i: usize) -> Result<Extracted, String> {
        match &self.prompt {
            ParquetPrompt::Template { template, columns } => {
                let mut failed = None;
                let prompt = template
                    .fill(|name| {
                        let (_, index) = columns.iter().find(|(n, _)| n == name)?;
                        match text_at(batch.column(*index).as_ref(), i) {
                            Ok(text) => Some(text),
                            Err(e) => {
                                failed.get_or_insert_with(|| format!("{}: {e}", self.place(name)));
                                Some(Cow::Borrowed(""))
                            }
                        }
                    })
                    .unwrap_or_default();
                match failed {
                    Some(message) => Err(message),
                    None => Ok(Extracted::Prompt {
                        prompt,
                        overrides: None,
                    }),
                }
            }
            ParquetPrompt::Column { name, index } => {
                if let Some(m) = self.messages {
                    let column = batch.column(m);
                    if !column.is_null(i) {
                        return match json_at(column.as_ref(), i) {
                            Ok(Value::Array(messages)) => Ok(Extracted::Messages {
                                messages,
                                overrides: None,
                            }),
                            Ok(other) => Err(format!(
                                "{} must be a list of {{role, content}} structs, not {}",
                                self.place("messages"),
                                kind_of(&other)
                            )),
                            Err(e) => Err(format!("{}: {e}", self.place("messages"))),
                        };
                    }
                }
                match index {
                    Some(index) => match text_at(batch.column(*index).as_ref(), i) {
                        Ok(text) => Ok(Extracted::Prompt {
                            prompt: text.into_owned(),
                            overrides: None,
                        }),
                        Err(e) => Err(format!("{}: {e}", self.place(name))),
                    },
                    None => Err(format!(
                        "{} is null and the file has no `{name}` column: nothing to send \
                         (fill `messages`, or add a `{name}` column)",
                        self.place("messages")
                    )),
                }
            }
        }
    }

    /// The next row; `None` for a skipped row or the end (then `done` is set).
    fn read_record(&mut self) -> Option<Result<Row, Error>> {
        match &self.batch {
            Some(batch) if self.at < batch.num_rows() => {}
            _ => match self.reader.next() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.at = 0;
                    return None; // read again from the new batch
                }
                Some(Err(e)) => {
                    self.done = true;
                    let row = self.row + 1;
                    return Some(Err(Error::input(
                        &self.factory.path,
                        row,
                        format!(
                            "cannot read row {row} (row group {}): {e}; the file is damaged or \
                             incomplete: write it again",
                            self.group_of(row)
                        ),
                    )));
                }
            },
        }
        let i = self.at;
        self.at += 1;
        self.row += 1;
        let row = self.row;
        if self.factory.skips(row) {
            return None;
        }
        let batch = self.batch.as_ref()?;
        let kept = match self.kept_values(batch, i) {
            Ok(kept) => kept,
            Err(message) => return Some(self.factory.unreadable(row, row, message)),
        };
        Some(match self.extract(batch, i) {
            Ok((id, extracted)) => self
                .factory
                .make(row, row, id, || extracted)
                .map(|made| Row { kept, ..made }),
            Err(message) => self.factory.unreadable(row, row, message),
        })
    }
}

impl ReadRecord for ParquetRows {
    fn read_next(&mut self) -> Option<Result<Row, Error>> {
        self.read_record()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Apache Parquet: a file, read by row group.
pub(crate) struct Parquet;

impl Source for Parquet {
    fn has_header(&self) -> bool {
        true
    }

    fn check(&self, opts: &InputOptions) -> Result<(), Error> {
        if opts.reads_once() {
            return Err(Error::Config(format!(
                "{}: a Parquet input must be a file (its footer is read first): save it to a file \
                 and pass its path",
                opts.path.display()
            )));
        }
        Ok(())
    }

    fn rows(
        &self,
        _opts: &InputOptions,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<RowStream, Error> {
        Ok(Box::new(Records(ParquetRows::new(factory, prompt, ids)?)))
    }

    fn count(&self, path: &Path) -> Option<u64> {
        count_rows(path)
    }

    fn header(&self, opts: &InputOptions) -> Result<Vec<String>, Error> {
        column_names(&opts.path).ok_or_else(|| {
            Error::Config(format!(
                "cannot read the columns of {}",
                opts.path.display()
            ))
        })
    }
}

/// A value's text for a template or prompt: strings as they are, null as empty, numbers and
/// booleans as their text, lists and structs as compact JSON.
fn text_at(array: &dyn Array, i: usize) -> Result<Cow<'_, str>, String> {
    if array.is_null(i) {
        return Ok(Cow::Borrowed(""));
    }
    match array.data_type() {
        DataType::Utf8 => Ok(Cow::Borrowed(array.as_string::<i32>().value(i))),
        DataType::LargeUtf8 => Ok(Cow::Borrowed(array.as_string::<i64>().value(i))),
        DataType::Utf8View => Ok(Cow::Borrowed(array.as_string_view().value(i))),
        _ => Ok(Cow::Owned(match json_at(array, i)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        })),
    }
}

/// A value as JSON: strings, numbers, booleans, null, lists as arrays and structs as objects
/// (dictionary-encoded columns by their values).
fn json_at(array: &dyn Array, i: usize) -> Result<Value, String> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(i).to_string()),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(i))?,
        DataType::List(_) => list(array.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let array = array.as_struct();
            let mut object = serde_json::Map::new();
            for (field, column) in fields.iter().zip(array.columns()) {
                object.insert(field.name().clone(), json_at(column.as_ref(), i)?);
            }
            Value::Object(object)
        }
        DataType::Dictionary(_, _) => {
            // Dictionary-encoded (e.g. a pandas categorical): the value its key points to.
            let Some(dict) = array.as_any_dictionary_opt() else {
                return Err("unreadable dictionary column".into());
            };
            match json_at(dict.keys(), i)?.as_u64() {
                Some(key) => json_at(dict.values().as_ref(), key as usize)?,
                None => return Err("a dictionary key that is not a whole number".into()),
            }
        }
        other => {
            return Err(format!(
                "values of type {other} are not supported (strings, integers, floats, booleans, \
                 lists and structs are); cast the column to string when writing the file"
            ))
        }
    })
}

fn float(f: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} is not a finite number"))
}

fn list(values: &dyn Array) -> Result<Value, String> {
    (0..values.len())
        .map(|j| json_at(values, j))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a struct",
    }
}
