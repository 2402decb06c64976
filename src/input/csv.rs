//! CSV input: a header row, then one row per record. Columns are checked against the template,
//! `--prompt-column` and `--id-column` before the first record is read.

use std::borrow::Cow;
use std::io::Read;

use super::{Extracted, IdSource, PromptSource, Row, RowFactory};
use crate::error::Error;

/// How to get the prompt from a record, resolved to column indexes.
enum CsvPrompt {
    Template {
        template: super::Template,
        columns: Vec<(String, usize)>,
    },
    Column(usize),
}

/// Streams rows from a CSV reader.
pub(crate) struct CsvRows {
    reader: csv::Reader<Box<dyn Read + Send>>,
    factory: RowFactory,
    prompt: CsvPrompt,
    id_column: Option<usize>,
    record: csv::StringRecord,
    row: u64,
    done: bool,
}

impl CsvRows {
    /// Reads the header and resolves every named column; a missing one is an error listing the
    /// columns that exist.
    pub fn new(
        reader: Box<dyn Read + Send>,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<Self, Error> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(1 << 16)
            .from_reader(reader);
        let headers = reader
            .headers()
            .map_err(|e| {
                Error::input(&factory.path, 1, format!("cannot read the CSV header: {e}"))
            })?
            .clone();
        if headers.is_empty() {
            return Err(Error::input(
                &factory.path,
                1,
                "the file is empty: a CSV input needs a header row naming its columns",
            ));
        }
        let find = |name: &str| headers.iter().position(|h| h == name);
        let missing = |what: &str, name: &str| {
            let existing: Vec<String> = headers.iter().map(|h| format!("`{h}`")).collect();
            Error::input(
                &factory.path,
                1,
                format!(
                    "{what} names column `{name}`, which the header lacks; columns are: {}",
                    existing.join(", ")
                ),
            )
        };
        let prompt = match prompt {
            PromptSource::Template(template) => {
                let mut columns = Vec::new();
                for name in template.fields() {
                    let index = find(name).ok_or_else(|| missing("--template", name))?;
                    columns.push((name.to_string(), index));
                }
                CsvPrompt::Template { template, columns }
            }
            PromptSource::Column(name) => CsvPrompt::Column(
                find(&name).ok_or_else(|| missing("--prompt-column (default `prompt`)", &name))?,
            ),
        };
        let id_column = match ids {
            IdSource::Required(name) => {
                Some(find(&name).ok_or_else(|| missing("--id-column", &name))?)
            }
            IdSource::Default => find("id").or_else(|| find("custom_id")),
        };
        Ok(CsvRows {
            reader,
            factory,
            prompt,
            id_column,
            record: csv::StringRecord::new(),
            row: 0,
            done: false,
        })
    }

    fn extract(&self) -> Extracted {
        let prompt = match &self.prompt {
            CsvPrompt::Column(index) => self.record.get(*index).unwrap_or("").to_string(),
            CsvPrompt::Template { template, columns } => template
                .fill(|name| {
                    columns
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, i)| Cow::Borrowed(self.record.get(*i).unwrap_or("")))
                })
                .unwrap_or_default(),
        };
        Extracted::Prompt {
            prompt,
            overrides: None,
        }
    }
}

impl Iterator for CsvRows {
    type Item = Result<Row, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let item = self.read_next();
            if item.is_some() {
                return item;
            }
        }
        None
    }
}

impl CsvRows {
    /// The next row; `None` for a skipped row or the end (then `done` is set).
    fn read_next(&mut self) -> Option<Result<Row, Error>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                self.row += 1;
                if self.factory.skips(self.row) {
                    return None;
                }
                let line = self.record.position().map_or(0, |p| p.line());
                let id = self
                    .id_column
                    .map(|i| self.record.get(i).unwrap_or("").to_string());
                let extracted = Ok(self.extract());
                Some(self.factory.make(self.row, line, id, extracted))
            }
            Err(e) => {
                self.row += 1;
                let line = e.position().map_or(0, |p| p.line());
                let message = csv_error_message(&e);
                if e.is_io_error() {
                    self.done = true;
                }
                Some(self.factory.unreadable(self.row, line, message))
            }
        }
    }
}

fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("record has {len} fields, but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        csv::ErrorKind::Io(err) => format!("read error: {err}"),
        _ => e.to_string(),
    }
}

/// Counts records (not lines: quoted fields may span lines) without building strings.
pub(crate) fn count_records(file: std::fs::File) -> Option<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let mut record = csv::ByteRecord::new();
    let mut n = 0;
    while reader.read_byte_record(&mut record).ok()? {
        n += 1;
    }
    Some(n)
}
