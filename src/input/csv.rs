//! CSV input: a header row, then one row per record. Columns are checked against the template,
//! `--prompt-column` and `--id-column` before the first record is read. Records are read by the
//! strict [`RecordReader`]; here each is checked against the header (field count, UTF-8, NUL
//! bytes) and broken records get messages that name the column and say what to do.

use std::borrow::Cow;
use std::io::{BufReader, Read};
use std::path::Path;

use super::csv_record::{Broken, Next, Problem, RawRecord, RecordReader};
use super::encoding::{first_non_utf8, first_nul, reencode_hint, starts_utf16};
use super::keep::{KeepColumns, Kept};
use super::source::{ReadRecord, Records, Source};
use super::{Extracted, IdSource, PromptSource, Row, RowFactory};
use super::{InputOptions, RowStream};
use crate::error::Error;
use serde_json::Value;

/// How to get the prompt from a record, resolved to column indexes.
enum CsvPrompt {
    Template {
        template: super::Template,
        columns: Vec<(String, usize)>,
    },
    Column(usize),
}

/// A record's fields, checked: as many as the header has columns, each UTF-8 without NUL.
struct Fields {
    text: String,
    /// Where each field ends in `text` (always at a character boundary).
    ends: Vec<usize>,
}

impl Fields {
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..self.ends[i]).unwrap_or("")
    }
}

/// Streams rows from a CSV reader.
pub(crate) struct CsvRows {
    reader: RecordReader<BufReader<Box<dyn Read + Send>>>,
    factory: RowFactory,
    header: Header,
    prompt: CsvPrompt,
    id_column: Option<usize>,
    /// `--model-column`.
    model_column: Option<usize>,
    /// `--keep-columns`: (name, index) of each kept column, in order.
    kept: Vec<(String, usize)>,
    record: RawRecord,
    row: u64,
    done: bool,
}

/// The header's column names.
struct Header {
    names: Vec<String>,
}

impl Header {
    /// Reads and checks the header (the first record); every problem is fatal.
    fn read(
        reader: &mut RecordReader<BufReader<Box<dyn Read + Send>>>,
        path: &Path,
    ) -> Result<Self, Error> {
        let mut record = RawRecord::default();
        let fatal =
            |line, message: String| Error::input(path, line, format!("in the header: {message}"));
        match reader.read(&mut record).map_err(|e| read_error(path, e))? {
            Next::End => Err(Error::input(
                path,
                1,
                "the file is empty: a CSV input needs a header row naming its columns",
            )),
            Next::Broken(broken) => Err(fatal(
                broken.line,
                broken_message(&broken, &header_field(broken.field)),
            )),
            Next::Record => {
                let utf16 = starts_utf16(record.field(0));
                let fields = check_text(&record, path, utf16, header_field)
                    .map_err(|(line, message)| fatal(line, message))?;
                let names = (0..record.len()).map(|i| fields.get(i).to_string());
                Ok(Header {
                    names: names.collect(),
                })
            }
        }
    }

    /// `column `name``, or `column 3 (no name)` for an unnamed one.
    fn label(&self, i: usize) -> String {
        match self.names.get(i).map(String::as_str) {
            Some("") | None => format!("column {} (no name)", i + 1),
            Some(name) => format!("column `{name}`"),
        }
    }

    /// The index of the column a flag names; it must exist, once, with a non-empty name.
    fn resolve(&self, flag: &str, name: &str, path: &Path) -> Result<usize, Error> {
        self.find(flag, name, path)?
            .ok_or_else(|| Error::input(path, 1, self.missing_message(flag, name)))
    }

    /// Like [`Header::resolve`], but a missing column is `None`.
    fn find(&self, flag: &str, name: &str, path: &Path) -> Result<Option<usize>, Error> {
        if name.is_empty() {
            return Err(Error::Config(format!(
                "{flag} names a column with an empty name; give the column a name in the header"
            )));
        }
        let found: Vec<usize> = (0..self.names.len())
            .filter(|&i| self.names[i] == name)
            .collect();
        match found[..] {
            [] => Ok(None),
            [index] => Ok(Some(index)),
            _ => {
                let numbers: Vec<String> = found.iter().map(|i| (i + 1).to_string()).collect();
                Err(Error::input(
                    path,
                    1,
                    format!(
                        "{flag} names column `{name}`, which the header has {} times (columns {}); \
                         rename all but one",
                        found.len(),
                        numbers.join(", ")
                    ),
                ))
            }
        }
    }

    fn missing_message(&self, flag: &str, name: &str) -> String {
        let existing: Vec<String> = self.names.iter().map(|h| format!("`{h}`")).collect();
        format!(
            "{flag} names column `{name}`, which the header lacks; columns are: {}{}",
            existing.join(", "),
            self.likely_mistake(name)
        )
    }

    /// A hint for a column that is not found: spaces around a name, or another separator.
    fn likely_mistake(&self, name: &str) -> String {
        if let Some(spaced) = self.names.iter().find(|h| h.trim() == name) {
            return format!(
                " (`{spaced}` has spaces around its name: remove them from the header)"
            );
        }
        match &self.names[..] {
            [only] if only.contains(';') || only.contains('\t') => " (the header is a single \
                column: is the file separated by `;` or tabs? Only `,` separates fields; re-save \
                it as comma-separated CSV)"
                .to_string(),
            _ => String::new(),
        }
    }
}

impl CsvRows {
    /// Reads the header and resolves every named column; a missing one is an error listing the
    /// columns that exist.
    pub(super) fn new(
        reader: Box<dyn Read + Send>,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<Self, Error> {
        let mut reader = RecordReader::new(BufReader::with_capacity(1 << 16, reader));
        let header = Header::read(&mut reader, &factory.path)?;
        let path = &factory.path;
        let prompt = match prompt {
            PromptSource::Template(template) => {
                let mut columns = Vec::new();
                for name in template.fields() {
                    columns.push((name.to_string(), header.resolve("--template", name, path)?));
                }
                CsvPrompt::Template { template, columns }
            }
            PromptSource::Column(name) => CsvPrompt::Column(header.resolve(
                "--prompt-column (default `prompt`)",
                &name,
                path,
            )?),
        };
        let id_column = match ids {
            IdSource::Required(name) => Some(header.resolve("--id-column", &name, path)?),
            IdSource::Default => match header.find("the default id column", "id", path)? {
                Some(index) => Some(index),
                None => header.find("the default id column", "custom_id", path)?,
            },
        };
        let model_column = match &factory.options.0.model_column {
            Some(name) => Some(header.resolve("--model-column", name, path)?),
            None => None,
        };
        let kept = match &factory.keep {
            None => Vec::new(),
            Some(KeepColumns::All) => header.names.iter().cloned().zip(0..).collect(),
            Some(KeepColumns::Named(names)) => names
                .iter()
                .map(|name| Ok((name.clone(), header.resolve("--keep-columns", name, path)?)))
                .collect::<Result<_, Error>>()?,
        };
        Ok(CsvRows {
            reader,
            factory,
            header,
            prompt,
            id_column,
            model_column,
            kept,
            record: RawRecord::default(),
            row: 0,
            done: false,
        })
    }

    fn extract(prompt: &CsvPrompt, fields: &Fields) -> Extracted {
        let prompt = match prompt {
            CsvPrompt::Column(index) => fields.get(*index).to_string(),
            CsvPrompt::Template { template, columns } => template
                .fill(|name| {
                    columns
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, i)| Cow::Borrowed(fields.get(*i)))
                })
                .unwrap_or_default(),
        };
        Extracted::Prompt {
            prompt,
            overrides: None,
        }
    }

    /// The kept columns' values (strings) of a record.
    fn kept_values(&self, fields: &Fields) -> Kept {
        let values = self
            .kept
            .iter()
            .map(|(name, i)| (name.clone(), Value::String(fields.get(*i).to_string())));
        Box::new(values.collect())
    }

    /// Checks the record just read against the header: `(line, what is wrong)` if it fails.
    fn check(&self) -> Result<Fields, (u64, String)> {
        let (len, columns) = (self.record.len(), self.header.names.len());
        if len != columns {
            return Err((
                self.record.line,
                format!(
                    "record has {len} field{}, but the header has {columns}; every record needs \
                     one field per column (quote a field that contains a comma)",
                    if len == 1 { "" } else { "s" }
                ),
            ));
        }
        check_text(&self.record, &self.factory.path, false, |i| {
            self.header.label(i)
        })
    }
}

impl ReadRecord for CsvRows {
    fn read_next(&mut self) -> Option<Result<Row, Error>> {
        self.read_record()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// CSV with a header row.
pub(crate) struct Csv;

impl Source for Csv {
    fn has_header(&self) -> bool {
        true
    }

    fn rows(
        &self,
        opts: &InputOptions,
        factory: RowFactory,
        prompt: PromptSource,
        ids: IdSource,
    ) -> Result<RowStream, Error> {
        let rows = CsvRows::new(opts.open_reader()?, factory, prompt, ids)?;
        Ok(Box::new(Records(rows)))
    }

    fn count(&self, path: &Path) -> Option<u64> {
        count_records(std::fs::File::open(path).ok()?)
    }

    fn header(&self, opts: &InputOptions) -> Result<Vec<String>, Error> {
        header_names(opts.open_reader()?, &opts.path)
    }
}

impl CsvRows {
    /// The next row; `None` for a skipped row or the end (then `done` is set).
    fn read_record(&mut self) -> Option<Result<Row, Error>> {
        let next = match self.reader.read(&mut self.record) {
            Ok(next) => next,
            Err(e) => {
                self.done = true;
                return Some(Err(read_error(&self.factory.path, e)));
            }
        };
        if let Next::End = next {
            self.done = true;
            return None;
        }
        self.row += 1;
        if self.factory.skips(self.row) {
            return None;
        }
        let fields = match next {
            Next::Broken(broken) => {
                let message = broken_message(&broken, &self.header.label(broken.field));
                return Some(self.factory.unreadable(self.row, broken.line, message));
            }
            _ => self.check(),
        };
        let line = self.record.line;
        Some(match fields {
            Ok(fields) => {
                let id = self.id_column.map(|i| fields.get(i).to_string());
                let model = self.model_column.map(|i| fields.get(i));
                let extracted = || Ok(Self::extract(&self.prompt, &fields).with_own_model(model));
                let made = self.factory.make(self.row, line, id, extracted);
                match self.factory.keep.is_some() {
                    true => made.map(|row| Row {
                        kept: Some(self.kept_values(&fields)),
                        ..row
                    }),
                    false => made,
                }
            }
            Err((line, message)) => self.factory.unreadable(self.row, line, message),
        })
    }
}

/// The record's fields as text; `(line, message)` for the first field that is not UTF-8 or holds
/// a NUL byte. `label` names a field by its index.
fn check_text(
    record: &RawRecord,
    path: &Path,
    utf16: bool,
    label: impl Fn(usize) -> String,
) -> Result<Fields, (u64, String)> {
    let mut text = String::new();
    let mut ends = Vec::with_capacity(record.len());
    for i in 0..record.len() {
        let bytes = record.field(i);
        let field = std::str::from_utf8(bytes).map_err(|e| {
            let line = record.line_of(i, e.valid_up_to());
            let at = first_non_utf8(bytes).unwrap_or_default();
            let hint = reencode_hint(path, utf16);
            (
                line,
                format!("{} is not UTF-8 ({at} of the field); {hint}", label(i)),
            )
        })?;
        if let Some(at) = first_nul(field) {
            let offset = field.find('\0').unwrap_or(0);
            let hint = reencode_hint(path, true);
            return Err((
                record.line_of(i, offset),
                format!(
                    "{} contains a NUL byte ({at} of the field): the file is binary or UTF-16, \
                     not UTF-8 text; {hint}",
                    label(i)
                ),
            ));
        }
        text.push_str(field);
        ends.push(text.len());
    }
    Ok(Fields { text, ends })
}

/// What is wrong with a broken record and what to do; `column` names the field at fault.
fn broken_message(broken: &Broken, column: &str) -> String {
    let starts = match broken.record_line < broken.line {
        true => format!(" (the record starts at line {})", broken.record_line),
        false => String::new(),
    };
    let body = match &broken.problem {
        Problem::UnclosedQuote { last_line } => {
            let swallowed = match *last_line > broken.line {
                true => format!(
                    " (lines {}–{last_line} would become part of it)",
                    broken.line
                ),
                false => String::new(),
            };
            format!(
                "a quote opens a field ({column}) here and never closes: the field would run to \
                 the end of the file{swallowed}; close the quote, and write a quote inside a \
                 quoted field as two (\"\")"
            )
        }
        Problem::TextAfterQuote { close_line, after } if *close_line > broken.line => format!(
            "a quote opens a field ({column}) here and closes at line {close_line}, followed by \
             `{}`: the quote here is probably never closed, or a quote inside the field is not \
             doubled (\"\")",
            preview(after)
        ),
        Problem::TextAfterQuote { after, .. } => format!(
            "text `{}` after the closing quote of a quoted field ({column}); a quote inside a \
             quoted field must be doubled (\"\")",
            preview(after)
        ),
        Problem::StrayQuote { after_space: true } => format!(
            "a space before the opening quote of a field ({column}): the quote must be the \
             field's first character (write `,\"…\"`, not `, \"…\"`)"
        ),
        Problem::StrayQuote { after_space: false } => format!(
            "a quote inside an unquoted field ({column}); quote the whole field and double the \
             quote inside it (`ab\"c` → `\"ab\"\"c\"`)"
        ),
        Problem::LoneCr => format!(
            "a carriage return (CR) that does not end a line ({column}); lines must end with LF \
             or CRLF, and a CR inside a field must be quoted (a file with classic-Mac CR line \
             ends: convert it with `tr '\\r' '\\n'`)"
        ),
    };
    format!("{body}{starts}")
}

/// At most 20 characters of `text`, then `…`.
fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(20).collect();
    match chars.next() {
        Some(_) => format!("{head}…"),
        None => head,
    }
}

/// A header field by position (the header's fields are the column names).
fn header_field(i: usize) -> String {
    format!("field {}", i + 1)
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("reading {}", path.display()), e)
}

/// The column names of a CSV input's header.
pub(crate) fn header_names(
    reader: Box<dyn Read + Send>,
    path: &Path,
) -> Result<Vec<String>, Error> {
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 16, reader));
    Ok(Header::read(&mut reader, path)?.names)
}

/// Counts records (not lines: quoted fields may span lines; a broken record counts as one row,
/// as it does when read).
pub(crate) fn count_records(file: std::fs::File) -> Option<u64> {
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 16, file));
    let mut record = RawRecord::default();
    let mut n: u64 = 0;
    loop {
        match reader.read(&mut record).ok()? {
            Next::End => return Some(n.saturating_sub(1)),
            Next::Record | Next::Broken(_) => n += 1,
        }
    }
}
