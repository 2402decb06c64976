//! Streaming reader of a run's output file (JSONL or CSV, chosen by extension like the writer:
//! `.csv` is CSV, anything else JSONL), one [`Record`] at a time, shared by resume, `report` and
//! `estimate --from-output`. A Parquet output (`-o x.parquet`) is read from its JSONL
//! checkpoint.
//!
//! A run that was killed mid-write (or stopped by a full disk) can leave a torn last record: a
//! last line (JSONL) or record (CSV) with no line terminator, or — in CSV — a last record with
//! fewer fields than the header (cut right after a line break inside a quoted multi-line field,
//! which leaves the file ending with a newline and an unterminated quote). Such a record is
//! skipped and remembered ([`Records::torn`]) when it cannot be parsed (JSONL) or does not have
//! every column / cannot be parsed (CSV). Any other unparsable line is an error naming
//! `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::Error;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::output::record::{Record, COLUMNS};

/// Where the records of an output file come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    /// JSONL lines in the OpenAI Batch output shape, each record under `promptbatch`.
    OpenaiBatch,
}

/// How an OpenAI Batch-shaped line starts (`format::OpenAiBatch` writes them).
const BATCH_LINE_START: &[u8] = b"{\"id\":\"batch_req_";

impl Format {
    /// `.csv` → CSV; anything else is JSONL, in the OpenAI Batch shape when its first line is.
    pub fn for_path(path: &Path) -> Self {
        if super::format::is_csv(path) {
            return Format::Csv;
        }
        let first_line = File::open(path).ok().and_then(|file| {
            BufReader::new(file)
                .split(b'\n')
                .map_while(Result::ok)
                .find(|line| !line.trim_ascii().is_empty())
        });
        match first_line {
            Some(line) if line.trim_ascii_start().starts_with(BATCH_LINE_START) => {
                Format::OpenaiBatch
            }
            _ => Format::Jsonl,
        }
    }

    /// `"jsonl"`, `"csv"` or `"openai-batch"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::OpenaiBatch => "openai-batch",
        }
    }

    /// The format a writer appends in.
    pub fn output_format(self) -> super::format::OutputFormat {
        match self {
            Format::Jsonl => super::format::OutputFormat::Jsonl,
            Format::Csv => super::format::OutputFormat::Csv,
            Format::OpenaiBatch => super::format::OutputFormat::OpenaiBatch,
        }
    }
}

/// An OpenAI Batch-shaped line, read for its record.
#[derive(serde::Deserialize)]
struct BatchLine<T> {
    promptbatch: T,
}

/// A torn (incomplete, unparsable) last record that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Line where the torn record starts (1-based).
    pub line: u64,
    /// Why it could not be read.
    pub reason: String,
}

enum Source {
    Jsonl {
        reader: BufReader<File>,
        buf: Vec<u8>,
        line: u64,
        /// Bytes read so far.
        consumed: u64,
    },
    Csv {
        reader: Box<csv::Reader<BufReader<File>>>,
        headers: csv::StringRecord,
        /// The record read ahead (to know whether the current one is the last).
        ahead: Option<Result<csv::StringRecord, csv::Error>>,
        /// Whether the file ends with a line terminator (else its last record may be torn).
        terminated: bool,
        /// The record last returned (for [`Records::last_extras`]).
        last: csv::StringRecord,
    },
}

impl Source {
    /// The CSV source of `file` (at `path`), its header read and checked.
    fn csv(mut file: File, path: &Path) -> Result<Self, Error> {
        let terminated = ends_with_newline(&mut file)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(BufReader::with_capacity(1 << 16, file));
        let headers = reader
            .headers()
            .map_err(|e| Error::input(path, 1, format!("unreadable CSV header: {e}")))?
            .clone();
        check_csv_header(path, &headers)?;
        Ok(Source::Csv {
            reader: Box::new(reader),
            headers,
            ahead: None,
            terminated,
            last: csv::StringRecord::new(),
        })
    }
}

/// The file whose records an output at `path` has: itself, or for `-o x.parquet` its JSONL
/// checkpoint (which has every one of them); a Parquet output without one is an error.
fn records_path(path: &Path) -> Result<PathBuf, Error> {
    if !crate::paths::is_parquet(path) {
        return Ok(path.to_path_buf());
    }
    let checkpoint = crate::paths::checkpoint(path);
    if !checkpoint.exists() {
        return Err(Error::Config(format!(
            "{} is Parquet and has no checkpoint {}: pass a run's JSONL or CSV output",
            path.display(),
            checkpoint.display()
        )));
    }
    Ok(checkpoint)
}

/// Warns when the output at `path` has a rewrite journal (`replace.rs`): it is being rewritten,
/// or a rewrite was interrupted, and may lack records until a run finishes that.
fn warn_if_rewriting(path: &Path) {
    if super::replace::suffixed(path, ".rewrite").exists() {
        tracing::warn!(
            "{} is being rewritten, or a rewrite was interrupted: it may lack some records \
             until the next `promptbatch run` on it finishes the rewrite",
            path.display()
        );
    }
}

/// An error naming `path` unless the CSV `headers` have the columns of promptbatch's output
/// schema that reading needs.
fn check_csv_header(path: &Path, headers: &csv::StringRecord) -> Result<(), Error> {
    let required = [
        "id",
        "status",
        "model",
        "prompt_tokens",
        "completion_tokens",
    ];
    if headers.is_empty() || !required.iter().all(|c| headers.iter().any(|h| h == *c)) {
        return Err(Error::input(
            path,
            1,
            format!(
                "the CSV header is not promptbatch's output schema (expected the \
                 columns {}); is this the output of `promptbatch run`?",
                COLUMNS.join(",")
            ),
        ));
    }
    Ok(())
}

/// An iterator of `(line, record)` over an output file; an `Err` item ends the iteration.
/// `T` is what each record is read as: the whole [`Record`], or a struct of some of its fields
/// (resume reads only what it needs, which is much faster).
pub struct Records<T = Record> {
    path: PathBuf,
    format: Format,
    source: Source,
    torn: Option<Torn>,
    done: bool,
    /// Where the record last returned starts in the file (bytes).
    last_start: u64,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Records<T> {
    /// Opens an output file; a missing or unreadable file, or a CSV header that is not the output
    /// schema, is an error naming the file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let path = records_path(path)?;
        let file = File::open(&path).map_err(|e| {
            Error::io(
                format!(
                    "cannot open output file {} (check the path: it must be the -o OUTPUT of a \
                     `promptbatch run`)",
                    path.display()
                ),
                e,
            )
        })?;
        warn_if_rewriting(&path);
        let format = Format::for_path(&path);
        let source = match format {
            Format::Jsonl | Format::OpenaiBatch => Source::Jsonl {
                reader: BufReader::with_capacity(1 << 16, file),
                buf: Vec::new(),
                line: 0,
                consumed: 0,
            },
            Format::Csv => Source::csv(file, &path)?,
        };
        Ok(Records {
            path,
            format,
            source,
            torn: None,
            done: false,
            last_start: 0,
            kind: PhantomData,
        })
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether a CSV file's header starts with today's output schema (an output of an older
    /// version may lack newer columns; records appended to it must not be longer than its
    /// header). Kept input columns may follow the schema's.
    pub fn has_current_header(&self) -> bool {
        match &self.source {
            Source::Csv { headers, .. } => {
                headers.len() >= COLUMNS.len() && headers.iter().take(COLUMNS.len()).eq(COLUMNS)
            }
            Source::Jsonl { .. } => true,
        }
    }

    /// A CSV file's columns beyond the output schema (kept input columns), in order; none for
    /// JSONL (each line carries its own).
    pub fn extra_columns(&self) -> Vec<String> {
        match &self.source {
            Source::Csv { headers, .. } => headers
                .iter()
                .filter(|h| !COLUMNS.contains(h))
                .map(str::to_string)
                .collect(),
            Source::Jsonl { .. } => Vec::new(),
        }
    }

    /// The fields of the record last returned beyond the output schema (kept input columns),
    /// by output name; `None` when it has none. For rewrites, which must keep them.
    pub fn last_extras(&self) -> Option<crate::input::Kept> {
        match &self.source {
            Source::Jsonl { buf, .. } => jsonl_extras(buf, self.format),
            Source::Csv { headers, last, .. } => csv_extras(headers, last),
        }
    }

    /// [`Records::last_extras`] of a record that holds one of `names` as a field, cheaply
    /// `None` for a JSONL record whose line does not even contain one of them.
    pub(crate) fn last_extras_naming(&self, names: &[&str]) -> Option<crate::input::Kept> {
        if let Source::Jsonl { buf, .. } = &self.source {
            if !names_any(buf, names) {
                return None;
            }
        }
        self.last_extras()
            .filter(|extras| names.iter().any(|name| extras.contains_key(*name)))
    }

    /// Where the record last returned starts in the file (bytes): [`RecordAt::read`] reads it
    /// again from there.
    pub(crate) fn last_start(&self) -> u64 {
        self.last_start
    }

    /// The torn last record that was skipped, once the iteration has ended.
    pub fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }

    fn next_jsonl(&mut self) -> Option<Result<(u64, T), Error>> {
        let Source::Jsonl {
            reader,
            buf,
            line,
            consumed,
        } = &mut self.source
        else {
            return None;
        };
        loop {
            buf.clear();
            self.last_start = *consumed;
            match reader.read_until(b'\n', buf) {
                Ok(0) => return None,
                Ok(n) => *consumed += n as u64,
                Err(e) => {
                    return Some(Err(Error::io(
                        format!("cannot read {} after line {line}", self.path.display()),
                        e,
                    )))
                }
            }
            *line += 1;
            let terminated = buf.last() == Some(&b'\n');
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let parsed = match self.format {
                Format::OpenaiBatch => {
                    serde_json::from_slice::<BatchLine<T>>(text).map(|line| line.promptbatch)
                }
                _ => serde_json::from_slice::<T>(text),
            };
            return match parsed {
                Ok(record) => Some(Ok((*line, record))),
                Err(e) if !terminated => {
                    self.torn = Some(Torn {
                        line: *line,
                        reason: e.to_string(),
                    });
                    None
                }
                Err(e) => Some(Err(Error::input(
                    &self.path,
                    *line,
                    format!(
                        "not an output record: {e} (the file must hold one promptbatch record \
                         per line; fix or remove this line)"
                    ),
                ))),
            };
        }
    }

    fn next_csv(&mut self) -> Option<Result<(u64, T), Error>> {
        let Source::Csv {
            reader,
            headers,
            ahead,
            terminated,
            last,
        } = &mut self.source
        else {
            return None;
        };
        let current = match ahead.take() {
            Some(r) => r,
            None => read_one(reader)?,
        };
        let next = read_one(reader);
        let is_last = next.is_none();
        *ahead = next;
        let may_be_torn = is_last && !*terminated;
        let record = match current {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv_line);
                if may_be_torn {
                    self.torn = Some(Torn {
                        line,
                        reason: csv_error_message(&e),
                    });
                    return None;
                }
                return Some(Err(Error::input(
                    &self.path,
                    line,
                    format!("unreadable CSV record: {}", csv_error_message(&e)),
                )));
            }
        };
        let line = record.position().map_or(0, csv_line);
        self.last_start = record.position().map_or(0, csv::Position::byte);
        // A last record with fewer fields than the header is torn even when the file ends with a
        // newline: the cut fell right after a line break inside a quoted multi-line field.
        let short = record.len() < headers.len();
        if is_last && (short || (may_be_torn && record.len() != headers.len())) {
            self.torn = Some(Torn {
                line,
                reason: format!(
                    "{} of {} columns before the end of the file",
                    record.len(),
                    headers.len()
                ),
            });
            return None;
        }
        let read = record.deserialize::<T>(Some(headers));
        *last = record;
        match read {
            Ok(r) => Some(Ok((line, r))),
            Err(e) if may_be_torn => {
                self.torn = Some(Torn {
                    line,
                    reason: csv_error_message(&e),
                });
                None
            }
            Err(e) => Some(Err(Error::input(
                &self.path,
                line,
                format!(
                    "not an output record: {} (the file must hold one promptbatch record per \
                     CSV record; fix or remove this record)",
                    csv_error_message(&e)
                ),
            ))),
        }
    }
}

impl<T: DeserializeOwned> Iterator for Records<T> {
    type Item = Result<(u64, T), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.format {
            Format::Jsonl | Format::OpenaiBatch => self.next_jsonl(),
            Format::Csv => self.next_csv(),
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Whether a JSONL line may have one of `names` as a field: it holds one of them in quotes (a
/// quick test before parsing the line again; no allocation, on every record of a `report`).
fn names_any(line: &[u8], names: &[&str]) -> bool {
    names.iter().any(|name| {
        memchr::memmem::find_iter(line, name.as_bytes())
            .any(|at| at > 0 && line[at - 1] == b'"' && line.get(at + name.len()) == Some(&b'"'))
    })
}

/// The fields of a JSONL line beyond the output schema; `None` when it has none.
fn jsonl_extras(line: &[u8], format: Format) -> Option<crate::input::Kept> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line.trim_ascii()).ok()?;
    if format == Format::OpenaiBatch {
        match object.remove(super::format::BATCH_RECORD_KEY) {
            Some(serde_json::Value::Object(record)) => object = record,
            _ => return None,
        }
    }
    object.retain(|name, _| !COLUMNS.contains(&name.as_str()));
    (!object.is_empty()).then(|| Box::new(object))
}

/// The values of a CSV record's columns beyond the output schema; `None` when it has none.
fn csv_extras(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Option<crate::input::Kept> {
    let extras: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .zip(record.iter())
        .filter(|(name, _)| !COLUMNS.contains(name))
        .map(|(name, value)| (name.to_string(), value.into()))
        .collect();
    (!extras.is_empty()).then(|| Box::new(extras))
}

/// Reads single records of an output file again by where they start ([`Records::last_start`]),
/// with their fields beyond the schema in [`Record::kept`].
pub(crate) struct RecordAt {
    path: PathBuf,
    reader: BufReader<File>,
    /// Where `reader` is in the file (`u64::MAX`: unknown, seek first).
    at: u64,
    format: Format,
    /// A CSV file's header.
    headers: Option<csv::StringRecord>,
    buf: Vec<u8>,
}

/// How far ahead a JSONL read skips by reading on instead of seeking.
const SKIP_AHEAD: u64 = 1 << 16;

/// Names of the fields beyond the schema a copied answer takes from its record.
const EXTRAS_TAKEN: [&str; 2] = [super::record::SAVED_USD, super::record::RESPONSE];

impl RecordAt {
    /// Opens the file a [`Records`] of `path` reads.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let records = Records::<serde::de::IgnoredAny>::open(path)?;
        let headers = match &records.source {
            Source::Csv { headers, .. } => Some(headers.clone()),
            Source::Jsonl { .. } => None,
        };
        let path = records.path.clone();
        let file = File::open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        Ok(RecordAt {
            format: records.format,
            path,
            reader: BufReader::with_capacity(1 << 16, file),
            at: 0,
            headers,
            buf: Vec::new(),
        })
    }

    /// The record that starts at byte `start`, with its fields beyond the schema in
    /// `kept` (for JSONL: only when it has `saved_usd` or `response`).
    pub(crate) fn read(&mut self, start: u64) -> Result<Record, Error> {
        let path = self.path.clone();
        let unreadable = |e: String| {
            Error::Config(format!(
                "{}: the record at byte {start} cannot be read again ({e}): was the file changed during the run?",
                path.display()
            ))
        };
        let Some(headers) = &self.headers else {
            self.buf.clear();
            match start.checked_sub(self.at) {
                // Just ahead: read on (a file read in order costs one read per 64 KB).
                Some(ahead) if ahead <= SKIP_AHEAD => {
                    self.reader
                        .seek_relative(ahead as i64)
                        .map_err(|e| unreadable(e.to_string()))?;
                    let n = self
                        .reader
                        .read_until(b'\n', &mut self.buf)
                        .map_err(|e| unreadable(e.to_string()))?;
                    self.at = start + n as u64;
                }
                // Elsewhere: read the line alone, leaving the buffer where it is.
                _ => read_line_at(self.reader.get_ref(), start, &mut self.buf)
                    .map_err(|e| unreadable(e.to_string()))?,
            }
            let text = self.buf.trim_ascii();
            let parsed = match self.format {
                Format::OpenaiBatch => {
                    serde_json::from_slice::<BatchLine<Record>>(text).map(|l| l.promptbatch)
                }
                _ => serde_json::from_slice::<Record>(text),
            };
            let mut record = parsed.map_err(|e| unreadable(e.to_string()))?;
            if names_any(text, &EXTRAS_TAKEN) {
                record.kept = jsonl_extras(text, self.format);
            }
            return Ok(record);
        };
        // The CSV reader reads ahead: where it leaves the file is unknown.
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| unreadable(e.to_string()))?;
        self.at = u64::MAX;
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(&mut self.reader);
        let mut line = csv::StringRecord::new();
        match csv.read_record(&mut line) {
            Ok(true) => {}
            Ok(false) => return Err(unreadable("end of file".into())),
            Err(e) => return Err(unreadable(csv_error_message(&e))),
        }
        let mut record: Record = line
            .deserialize(Some(headers))
            .map_err(|e| unreadable(csv_error_message(&e)))?;
        record.kept = csv_extras(headers, &line);
        Ok(record)
    }
}

/// Reads the line starting at byte `start` of `file` into `buf` (newline included, if any), in
/// small positioned reads.
fn read_line_at(file: &File, start: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 2048;
    let mut chunk = [0u8; CHUNK];
    let mut at = start;
    loop {
        let n = file.read_at(&mut chunk, at)?;
        if n == 0 {
            return Ok(());
        }
        if let Some(end) = memchr::memchr(b'\n', &chunk[..n]) {
            buf.extend_from_slice(&chunk[..=end]);
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
}

/// The records of a Parquet output without its checkpoint (e.g. written by `export`), as JSONL
/// in a temporary file (unlinked: gone at exit, whatever the exit) for [`Records::of_copy`] and
/// [`RecordAt::of_copy`].
pub(crate) fn parquet_records_copy(path: &Path) -> Result<crate::util::spill::SpillFile, Error> {
    use std::io::Write;
    let dir = crate::util::spill::dir();
    let failed = |e: std::io::Error| {
        Error::io(
            format!(
                "cannot copy the records of {} to a temporary file in {}",
                path.display(),
                dir.display()
            ),
            e,
        )
    };
    let copy = crate::util::spill::SpillFile::create(&dir).map_err(failed)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, &copy.file);
    crate::input::parquet::each_row_as_json(path, |object| {
        serde_json::to_writer(&mut out, &object).map_err(|e| failed(e.into()))?;
        out.write_all(b"\n").map_err(failed)
    })?;
    out.flush().map_err(failed)?;
    drop(out);
    Ok(copy)
}

impl<T: DeserializeOwned> Records<T> {
    /// The records of a JSONL `copy` ([`parquet_records_copy`]) of the output at `path`
    /// (named in messages).
    pub(crate) fn of_copy(copy: &File, path: &Path) -> Result<Self, Error> {
        let mut file = copy
            .try_clone()
            .map_err(|e| Error::io(format!("cannot read the copy of {}", path.display()), e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot read the copy of {}", path.display()), e))?;
        Ok(Records {
            path: path.to_path_buf(),
            format: Format::Jsonl,
            source: Source::Jsonl {
                reader: BufReader::with_capacity(1 << 16, file),
                buf: Vec::new(),
                line: 0,
                consumed: 0,
            },
            torn: None,
            done: false,
            last_start: 0,
            kind: PhantomData,
        })
    }
}

impl RecordAt {
    /// Reads records of a JSONL `copy` ([`parquet_records_copy`]) of the output at `path`.
    pub(crate) fn of_copy(copy: &File, path: &Path) -> Result<Self, Error> {
        let file = copy
            .try_clone()
            .map_err(|e| Error::io(format!("cannot read the copy of {}", path.display()), e))?;
        Ok(RecordAt {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            at: u64::MAX,
            format: Format::Jsonl,
            headers: None,
            buf: Vec::new(),
        })
    }
}

/// The 1-based file line of a CSV position: after the header has been read, the csv crate counts
/// record lines one short (its first record is reported at line 1).
fn csv_line(position: &csv::Position) -> u64 {
    position.line() + 1
}

/// A csv error without the crate's own (off by one) position: the caller names `file:line`.
fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 ({err})"),
        _ => e.to_string(),
    }
}

/// Reads one CSV record; `None` at the end of the file.
fn read_one(
    reader: &mut csv::Reader<BufReader<File>>,
) -> Option<Result<csv::StringRecord, csv::Error>> {
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Some(Ok(record)),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Whether the file at `path` ends with `\n` (an empty or missing file counts as terminated).
pub(crate) fn file_ends_with_newline(path: &Path) -> bool {
    File::open(path)
        .and_then(|mut f| ends_with_newline(&mut f))
        .unwrap_or(true)
}

/// Whether the file's last byte is `\n` (an empty file counts as terminated); rewinds the file.
fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    let mut terminated = true;
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        terminated = last[0] == b'\n';
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(terminated)
}
