//! Streaming input: CSV, JSONL and Parquet files become [`Row`]s one at a time, never the whole
//! file.
//!
//! Each format's reader turns a record into a prompt or messages; `RowFactory` (shared) turns
//! those into a request, assigns the row id, rejects duplicate ids and applies `--skip-invalid`.

mod csv;
mod csv_record;
pub(crate) mod duplicate_ids;
mod encoding;
mod json_keys;
pub(crate) mod jsonl;
pub(crate) mod keep;
pub(crate) mod models;
mod options;
pub(crate) mod parquet;
pub(crate) mod source;

use source::Source;
pub(crate) mod template;
pub(crate) mod validate;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::api::request::{BuildError, ChatRequest, RequestDefaults, RequestOptions};
use crate::error::Error;
use crate::paths::FileKind;
use duplicate_ids::IdCheck;
pub(crate) use keep::{KeepColumns, Kept};
pub use options::{InputFormat, InputOptions, DEFAULT_PROMPT_COLUMN};
pub use template::Template;

/// One input record, ready for the worker pool.
#[derive(Debug)]
pub(crate) struct Row {
    /// 1-based number of the data record (CSV records after the header; non-blank JSONL lines).
    pub row: u64,
    /// Line in the input file where the record starts (for messages); for a record that could
    /// not be read, the line its message names (e.g. where a quote that never closes opens).
    pub line: u64,
    /// The row id, always a string.
    pub id: String,
    /// Whether the id came from the input (else it is the row number).
    pub explicit_id: bool,
    /// What to do with the row.
    pub content: RowContent,
    /// `--keep-columns`: the row's kept input values.
    pub kept: Option<Kept>,
    /// The position in `--model`'s list of the model this row's request goes to (0 for a row
    /// that names its own model): a (row, slot) pair is one unit of work, with one record.
    pub slot: u32,
    /// The same row for the next models of the list (slots 1, 2, …), until `models::PerModel`
    /// hands each out as a row of its own.
    pub(crate) more: Vec<RowContent>,
    /// The row names its own model (a JSONL `model`, a Batch line's `body.model`): it has this
    /// one unit whatever `--model`'s list.
    pub own_model: bool,
}

/// How the error record of a malformed row under --skip-invalid starts.
const MALFORMED_PREFIX: &str = "invalid input at ";

impl Row {
    /// What is wrong with the row, as `file:line: what`, when it cannot be sent.
    pub(crate) fn problem(&self, path: &Path) -> Option<String> {
        match &self.content {
            RowContent::Request(_) => None,
            RowContent::Invalid { message, .. } => {
                Some(match message.strip_prefix(MALFORMED_PREFIX) {
                    Some(located) => located.to_string(),
                    None => format!("{}:{}: {message}", path.display(), self.line),
                })
            }
        }
    }

    /// Whether the row is a record that cannot be read (malformed, a duplicate id): a run
    /// stops there unless `--skip-invalid` (an empty prompt only gets an error record).
    pub(crate) fn is_malformed(&self) -> bool {
        matches!(&self.content, RowContent::Invalid { message, .. } if message.starts_with(MALFORMED_PREFIX))
    }

    /// The model the row's request goes to (for a row without a request, the model its record
    /// is filed under).
    pub(crate) fn model(&self) -> &str {
        match &self.content {
            RowContent::Request(request) => &request.model,
            RowContent::Invalid { model, .. } => model,
        }
    }

    /// The fingerprint of the row's request (`""` when it has none).
    pub(crate) fn fingerprint(&self) -> &str {
        match &self.content {
            RowContent::Request(request) => &request.fingerprint,
            RowContent::Invalid { .. } => "",
        }
    }
}

/// A row is either sent, or written straight out as an error record.
#[derive(Debug)]
pub(crate) enum RowContent {
    /// Send this request.
    Request(ChatRequest),
    /// No request: an error record with this prompt and message (empty prompt, or a malformed
    /// record under --skip-invalid), filed under `model`.
    Invalid {
        prompt: String,
        message: String,
        model: String,
    },
}

impl RowContent {
    /// The content of a row read by the ids-only pre-pass: only its id matters.
    fn ids_only() -> Self {
        RowContent::Invalid {
            prompt: String::new(),
            message: String::new(),
            model: String::new(),
        }
    }
}

/// A stream of rows; an `Err` item stops the run (after the rows before it).
pub(crate) type RowStream = Box<dyn Iterator<Item = Result<Row, Error>> + Send>;

/// A set of row numbers (one bit per row up to the largest): the rows a resumed run skips.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowSet {
    words: Vec<u64>,
}

impl RowSet {
    /// Adds a row number.
    pub(crate) fn insert(&mut self, row: u64) {
        let word = (row / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (row % 64);
    }

    /// Adds every number of `other`.
    pub(crate) fn union_with(&mut self, other: &RowSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (word, theirs) in self.words.iter_mut().zip(&other.words) {
            *word |= theirs;
        }
    }

    /// Whether a row number is in the set.
    pub(crate) fn contains(&self, row: u64) -> bool {
        self.words
            .get((row / 64) as usize)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    /// The numbers in the set, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let base = i as u64 * 64;
            (0..64u64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| base + bit)
        })
    }
}

/// Where a record's prompt comes from.
#[derive(Debug, Clone)]
pub(crate) enum PromptSource {
    Template(Template),
    Column(String),
}

/// Where a record's id comes from, once the input's fields are known.
#[derive(Debug, Clone)]
pub(crate) enum IdSource {
    /// This column/field must be present.
    Required(String),
    /// Default: `id`, else `custom_id`, else the row number.
    Default,
}

/// What a format reader extracted from one record, before it becomes a request.
pub(crate) enum Extracted {
    Prompt {
        prompt: String,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Messages {
        messages: Vec<serde_json::Value>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    },
}

impl Extracted {
    /// The record's messages (a prompt as one user message) and request overrides.
    fn into_parts(
        self,
    ) -> (
        Vec<serde_json::Value>,
        Option<serde_json::Map<String, serde_json::Value>>,
    ) {
        match self {
            Extracted::Prompt { prompt, overrides } => {
                (vec![crate::api::messages::user_message(prompt)], overrides)
            }
            Extracted::Messages {
                messages,
                overrides,
            } => (messages, overrides),
        }
    }

    /// The same record, naming its own model when `model` (a `--model-column` value) is not
    /// empty.
    pub(crate) fn with_own_model(self, model: Option<&str>) -> Self {
        let Some(model) = model.map(str::trim).filter(|m| !m.is_empty()) else {
            return self;
        };
        let mut fields = serde_json::Map::new();
        fields.insert("model".into(), serde_json::Value::String(model.to_string()));
        match self {
            Extracted::Prompt { prompt, .. } => Extracted::Prompt {
                prompt,
                overrides: Some(fields),
            },
            Extracted::Messages { messages, .. } => Extracted::Messages {
                messages,
                overrides: Some(fields),
            },
        }
    }
}

/// The model a record's request overrides name (`None` when they name none), as text.
fn own_model_of(overrides: Option<&serde_json::Map<String, serde_json::Value>>) -> Option<String> {
    overrides?
        .get("model")
        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
}

/// A record's id once checked against the earlier rows' ids.
struct CheckedId {
    /// The id: the record's, else the row number.
    id: String,
    /// Whether the id came from the record.
    explicit: bool,
    /// Under `report_all`, why the id is a duplicate (the row becomes invalid).
    duplicate: Option<String>,
}

impl CheckedId {
    /// The row with this id holding `contents`: the first for slot 0, the rest for the next
    /// models of the list; its kept values are the reader's to fill in.
    fn into_row(self, row: u64, line: u64, contents: Vec<RowContent>, own_model: bool) -> Row {
        let mut contents = contents.into_iter();
        let content = contents
            .next()
            .expect("one content per model, at least one model");
        Row {
            row,
            line,
            id: self.id,
            explicit_id: self.explicit,
            content,
            kept: None,
            slot: 0,
            more: contents.collect(),
            own_model,
        }
    }
}

/// Shared per-row logic of every format: request building, ids, duplicate check, --skip-invalid.
pub(crate) struct RowFactory {
    pub path: PathBuf,
    defaults: RequestDefaults,
    skip_invalid: bool,
    /// How duplicate ids are found: a bounded in-memory set of 128-bit keys, then (file inputs
    /// with more ids) the rows a pre-pass found (`duplicates.rs`); memory stays bounded.
    ids: IdCheck,
    /// What the pre-pass reads (the same input, the same options).
    options: (InputOptions, RequestOptions),
    /// The pre-pass's own reading: only ids matter, no request is built.
    ids_only: bool,
    /// Rows to skip without building them (done by an earlier run; the resume plan's pass
    /// over the same input already validated them).
    skip: Option<RowSet>,
    /// `--limit N`: rows past N are passed over unparsed (a broken record beyond the smoke
    /// test's rows must not stop it).
    limit: Option<u64>,
    /// Every problem becomes an invalid row, duplicate ids included (`validate`, `estimate`).
    report_all: bool,
    /// `--keep-columns` (not for the ids-only pre-pass).
    pub keep: Option<KeepColumns>,
}

impl RowFactory {
    fn new(opts: &InputOptions, request: &RequestOptions, skip: Option<RowSet>) -> Self {
        RowFactory {
            path: opts.path.clone(),
            defaults: RequestDefaults::from_options(request),
            skip_invalid: opts.skip_invalid,
            ids: IdCheck::Memory(HashSet::default()),
            options: (opts.clone(), request.clone()),
            ids_only: false,
            skip,
            limit: opts.limit,
            report_all: false,
            keep: opts.keep_columns.clone(),
        }
    }

    /// Whether row number `row` is skipped (done by an earlier run for every model of the
    /// list, or past `--limit`).
    pub(crate) fn skips(&self, row: u64) -> bool {
        let units = self.defaults.model_count() as u64;
        self.limit.is_some_and(|limit| row > limit)
            || self
                .skip
                .as_ref()
                .is_some_and(|s| (0..units).all(|slot| s.contains(models::unit(row, slot, units))))
    }

    /// Turns a record into a row: `extract` gives what the record holds (or the reason it could
    /// not be read), and is not called when no request is to be built (the ids-only pre-pass,
    /// a duplicate id). `id` is `None` when the record has no explicit id (then the row number
    /// is used).
    pub(crate) fn make(
        &mut self,
        row: u64,
        line: u64,
        id: Option<String>,
        extract: impl FnOnce() -> Result<Extracted, String>,
    ) -> Result<Row, Error> {
        let mut id = self.check_id(row, line, id)?;
        if self.ids_only {
            return Ok(id.into_row(row, line, vec![RowContent::ids_only()], false));
        }
        let extracted = match id.duplicate.take() {
            Some(message) => Err(message),
            None => extract(),
        };
        let (built, own_model) = self.build(extracted);
        let contents = self.contents(built, line, own_model.as_deref())?;
        Ok(id.into_row(row, line, contents, own_model.is_some()))
    }

    /// The row's id (its number when the record has none), checked against the earlier rows':
    /// a duplicate stops the run, or (`report_all`) makes the row invalid.
    fn check_id(&mut self, row: u64, line: u64, id: Option<String>) -> Result<CheckedId, Error> {
        let Some(id) = id else {
            return Ok(CheckedId {
                id: row.to_string(),
                explicit: false,
                duplicate: None,
            });
        };
        let options = &self.options;
        let prepass = || {
            (!options.0.reads_once()).then(|| duplicate_ids::duplicate_rows(&options.0, &options.1))
        };
        let mut duplicate = None;
        if self.ids.is_duplicate(row, &id, prepass)? {
            let message = format!(
                "duplicate id `{id}` (an earlier row has it too); ids must be unique \
                 (choose another column with --id-column, or fix the input)"
            );
            if !self.report_all {
                return Err(Error::input(&self.path, line, message));
            }
            duplicate = Some(message);
        }
        Ok(CheckedId {
            id,
            explicit: true,
            duplicate,
        })
    }

    /// The requests of what a record holds, and the model the record names itself, if any (a
    /// row naming its own model has one unit, even when it cannot be sent).
    fn build(
        &self,
        extracted: Result<Extracted, String>,
    ) -> (Result<Vec<ChatRequest>, BuildError>, Option<String>) {
        let mut own_model = None;
        let built = extracted.map_err(BuildError::Malformed).and_then(|e| {
            let (messages, overrides) = e.into_parts();
            own_model = own_model_of(overrides.as_ref());
            self.requests(messages, overrides.as_ref())
        });
        (built, own_model)
    }

    /// What the row holds, one content per unit: its requests, or its error records (an empty
    /// prompt; a malformed record under `--skip-invalid` or `report_all`). Any other malformed
    /// record stops the run.
    fn contents(
        &self,
        built: Result<Vec<ChatRequest>, BuildError>,
        line: u64,
        own_model: Option<&str>,
    ) -> Result<Vec<RowContent>, Error> {
        Ok(match built {
            Ok(requests) => requests.into_iter().map(RowContent::Request).collect(),
            Err(BuildError::EmptyPrompt { prompt }) => {
                self.invalid(prompt, "empty prompt: nothing to send".into(), own_model)
            }
            Err(BuildError::Malformed(message)) if self.skip_invalid || self.report_all => {
                let message = format!("{MALFORMED_PREFIX}{}:{line}: {message}", self.path.display());
                self.invalid(String::new(), message, own_model)
            }
            Err(BuildError::Malformed(message)) => {
                return Err(Error::input(
                    &self.path,
                    line,
                    format!("{message} (fix the record, or pass --skip-invalid to record it as an error and go on)"),
                ))
            }
        })
    }

    /// The row's requests: one per model of `--model`'s list, or one when the row names its own
    /// model.
    fn requests(
        &self,
        messages: Vec<serde_json::Value>,
        overrides: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Vec<ChatRequest>, BuildError> {
        let count = if RequestDefaults::names_own_model(overrides) {
            1
        } else {
            self.defaults.model_count()
        };
        let mut requests = Vec::with_capacity(count);
        for slot in 1..count {
            requests.push(self.defaults.build_for(slot, messages.clone(), overrides)?);
        }
        requests.insert(0, self.defaults.build(messages, overrides)?);
        Ok(requests)
    }

    /// A row without a request: the same error record for each model of the list, or once
    /// under the row's own model.
    fn invalid(&self, prompt: String, message: String, own_model: Option<&str>) -> Vec<RowContent> {
        let models: Vec<&str> = match own_model {
            Some(model) => vec![model],
            None => (0..self.defaults.model_count())
                .map(|slot| self.defaults.model(slot))
                .collect(),
        };
        models
            .into_iter()
            .map(|model| RowContent::Invalid {
                prompt: prompt.clone(),
                message: message.clone(),
                model: model.to_string(),
            })
            .collect()
    }

    /// A record the format reader could not parse at all (broken quoting, invalid JSON).
    pub(crate) fn unreadable(
        &mut self,
        row: u64,
        line: u64,
        message: String,
    ) -> Result<Row, Error> {
        self.make(row, line, None, || Err(message))
    }
}

/// The input format for these options (by extension when `auto`).
pub(crate) fn resolve_format(opts: &InputOptions) -> InputFormat {
    match opts.input_format {
        InputFormat::Auto => match FileKind::of(&opts.path) {
            Some(FileKind::Csv) => InputFormat::Csv,
            Some(FileKind::Parquet) => InputFormat::Parquet,
            Some(FileKind::Jsonl) => InputFormat::Jsonl,
            None if opts.reads_once() => InputFormat::Jsonl,
            None => sniff(&opts.path),
        },
        other => other,
    }
}

/// The source of a resolved format (`Auto` is resolved first: [`resolve_format`]).
pub(crate) fn source_for(format: InputFormat) -> &'static dyn Source {
    match format {
        InputFormat::Csv => &csv::Csv,
        InputFormat::Parquet => &parquet::Parquet,
        InputFormat::Jsonl | InputFormat::Auto => &jsonl::Jsonl,
    }
}

/// The format of a file whose name does not say (`.txt`, no extension): Parquet by its magic
/// bytes, JSONL when its first character (after a BOM and blanks) opens a JSON object, else
/// CSV.
fn sniff(path: &Path) -> InputFormat {
    use std::io::Read as _;
    let mut head = [0u8; 512];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..read];
    if head.starts_with(b"PAR1") {
        return InputFormat::Parquet;
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => InputFormat::Jsonl,
        Some(_) => InputFormat::Csv,
    }
}

/// Opens the input and checks everything that can be checked before the first row (header,
/// template columns, id column). Rows are read lazily from the returned stream; rows in `skip`
/// are passed over without being parsed further.
pub(crate) fn open(
    opts: &InputOptions,
    request: &RequestOptions,
    skip: Option<RowSet>,
) -> Result<RowStream, Error> {
    open_with(opts, request, skip, false)
}

/// Like [`open`], but every problem a record can have (malformed, duplicate id, empty prompt)
/// becomes an invalid row and reading goes on, so one pass finds them all.
pub(crate) fn open_reporting_all(
    opts: &InputOptions,
    request: &RequestOptions,
) -> Result<RowStream, Error> {
    open_with(opts, request, None, true)
}

/// Like [`open`] without the duplicate-id check: for the resume plan, which finds duplicates by
/// sorting (`duplicate_ids::key`) and hands them over with `duplicate_ids::remember`.
pub(crate) fn open_unchecked(
    opts: &InputOptions,
    request: &RequestOptions,
) -> Result<RowStream, Error> {
    open_mode(opts, request, None, false, Reading::Unchecked)
}

/// The pre-pass of `duplicates.rs`: rows with their ids only (content empty), no duplicate check.
fn open_ids_only(opts: &InputOptions, request: &RequestOptions) -> Result<RowStream, Error> {
    open_mode(opts, request, None, false, Reading::IdsOnly)
}

fn open_with(
    opts: &InputOptions,
    request: &RequestOptions,
    skip: Option<RowSet>,
    report_all: bool,
) -> Result<RowStream, Error> {
    open_mode(opts, request, skip, report_all, Reading::Checked)
}

/// What a reading does with ids.
#[derive(PartialEq, Eq)]
enum Reading {
    /// Rows are built and duplicate ids found.
    Checked,
    /// Rows are built, ids not checked (the resume plan checks them by sorting).
    Unchecked,
    /// Only ids, not checked (the duplicate-id pre-pass).
    IdsOnly,
}

fn open_mode(
    opts: &InputOptions,
    request: &RequestOptions,
    skip: Option<RowSet>,
    report_all: bool,
    reading: Reading,
) -> Result<RowStream, Error> {
    request.check_models().map_err(Error::Config)?;
    let prompt = match &opts.template {
        Some(text) => PromptSource::Template(Template::parse(text).map_err(Error::Config)?),
        None => PromptSource::Column(opts.prompt_column.clone()),
    };
    let ids = match &opts.id_column {
        Some(name) => IdSource::Required(name.clone()),
        None => IdSource::Default,
    };
    let source = source_for(resolve_format(opts));
    if let (Some(column), false) = (&opts.model_column, source.has_header()) {
        return Err(Error::Config(format!(
            "--model-column {column}: JSONL rows name their own model with a `model` field (a \
             Batch API line with `body.model`); --model-column is for CSV and Parquet inputs"
        )));
    }
    source.check(opts)?;
    let skip_units = if request.models.len() > 1 {
        skip.clone()
    } else {
        None
    };
    let mut factory = RowFactory::new(opts, request, skip);
    factory.report_all = report_all;
    if reading != Reading::Checked {
        factory.ids = IdCheck::Off;
    }
    factory.ids_only = reading == Reading::IdsOnly;
    if factory.ids_only {
        factory.keep = None;
    }
    let rows = source.rows(opts, factory, prompt, ids)?;
    let rows: RowStream = match opts.limit {
        Some(limit) => Box::new(FirstRows { rows, limit }),
        None => rows,
    };
    // After `--limit` (which counts rows, not (row, model) units).
    let rows: RowStream = match request.models.len() {
        0 | 1 => rows,
        units => Box::new(models::PerModel::new(rows, skip_units, units as u64)),
    };
    Ok(match opts.shard {
        Some(shard) => Box::new(rows.filter(move |item| match item {
            Ok(row) => shard.holds(&row.id),
            Err(_) => true,
        })),
        None => rows,
    })
}

/// `--shard K/N`: the rows whose id's stable hash falls in shard K of N (0-based), so that N
/// copies of a run (one per machine, key or rate limit) split the input between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parses `K/N` with 0 ≤ K < N.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "`{text}` is not a shard: write K/N with 0 <= K < N, e.g. 0/4 … 3/4 \
                 ($JOB_COMPLETION_INDEX/4 in a Kubernetes Indexed Job, $SLURM_ARRAY_TASK_ID/4 in a Slurm array)"
            )
        };
        let (index, count) = text.trim().split_once('/').ok_or_else(usage)?;
        let index: u64 = index.trim().parse().map_err(|_| usage())?;
        let count: u64 = count.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Shard { index, count })
    }

    /// Whether the row with this id belongs to this shard (FNV-1a of the id: stable across
    /// runs, machines and versions).
    pub fn holds(&self, id: &str) -> bool {
        crate::util::fingerprint::fnv1a(id.as_bytes()) % self.count == self.index
    }
}

/// `--limit N`: the rows numbered 1..=N (data records, whatever an earlier run finished).
struct FirstRows {
    rows: RowStream,
    limit: u64,
}

impl Iterator for FirstRows {
    type Item = Result<Row, Error>;

    /// Ends with row N itself: the record after it is never read. (Rows past N that a resumed
    /// run would otherwise reach are passed over unparsed: `RowFactory::skips`.)
    fn next(&mut self) -> Option<Self::Item> {
        if self.limit == 0 {
            return None;
        }
        let item = self.rows.next()?;
        match &item {
            Ok(row) if row.row > self.limit => return None,
            Ok(row) if row.row == self.limit => self.limit = 0,
            _ => {}
        }
        Some(item)
    }
}

/// The columns of a CSV input's header (for `--keep-columns all` into a CSV output, whose header
/// must name them before the first row is read).
pub(crate) fn csv_column_names(opts: &InputOptions) -> Result<Vec<String>, Error> {
    let source = source_for(resolve_format(opts));
    if !source.has_header() {
        return Err(Error::Config(
            "--keep-columns all with a CSV output needs a CSV input (the lines of a JSONL input \
             may each have other fields): name the fields, e.g. --keep-columns ticket_id,label, \
             or write a .jsonl output"
                .into(),
        ));
    }
    if opts.reads_once() {
        return Err(Error::Config(
            "--keep-columns all with a CSV output reads the input's header first, and standard \
             input can be read only once: name the columns, e.g. --keep-columns ticket_id,label"
                .into(),
        ));
    }
    source.header(opts)
}

/// The rows of a Parquet file (`None` when it is not one, or cannot be read).
pub(crate) fn parquet_rows(path: &Path) -> Option<u64> {
    parquet::count_rows(path)
}

/// Counts the data records of an input quickly (for the progress bar's total); `None` for stdin
/// or when the file cannot be read.
pub(crate) fn count_rows(opts: &InputOptions) -> Option<u64> {
    if opts.reads_once() {
        return None;
    }
    if opts.shard.is_some() {
        return None; // which rows fall in the shard is known only once they are read
    }
    let all = source_for(resolve_format(opts)).count(&opts.path)?;
    Some(opts.limit.map_or(all, |limit| all.min(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_set() {
        let mut set = RowSet::default();
        for row in [1, 63, 64, 1000] {
            set.insert(row);
        }
        for row in [1, 63, 64, 1000] {
            assert!(set.contains(row));
        }
        for row in [0, 2, 65, 999, 1001, 1 << 40] {
            assert!(!set.contains(row));
        }
    }
}
