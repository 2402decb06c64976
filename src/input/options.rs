//! Where the rows come from and how a row becomes a prompt: [`InputOptions`], shared by `run`,
//! `estimate` and `validate`, and the one place that knows whether the input can be read twice
//! (a file can; standard input and rows handed over in memory cannot).

use crate::util::choice::Choice;
use std::io::Read;
use std::path::PathBuf;

use crate::paths::is_stdin;
use std::sync::{Arc, Mutex};

use super::keep::KeepColumns;
use super::Shard;

/// The column (CSV) or field (JSONL) holding the prompt when no template is given.
pub const DEFAULT_PROMPT_COLUMN: &str = "prompt";

/// Input file format.
/// (Its [`Choice`] lets `--help` list the values; the library never imports the CLI.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Chosen from the file extension (.csv → csv, .parquet → parquet, anything else → jsonl).
    #[default]
    Auto,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet (a file, read by row group; not standard input).
    Parquet,
}

impl Choice for InputFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (InputFormat::Auto, "auto", "Chosen from the file extension (.csv → csv, .parquet → parquet, anything else → jsonl)"),
        (InputFormat::Csv, "csv", "CSV with a header row"),
        (InputFormat::Jsonl, "jsonl", "One JSON object per line"),
        (InputFormat::Parquet, "parquet", "Apache Parquet (a file, read by row group; not standard input)"),
    ];
}

/// Where the rows come from and how a row becomes a prompt.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// The input file; `-` is standard input. For rows handed over in memory
    /// ([`InputOptions::from_reader`]) it is only the name messages show.
    pub path: PathBuf,
    /// The input's format.
    pub input_format: InputFormat,
    /// Column or field holding the prompt, when no template is given.
    pub prompt_column: String,
    /// Prompt template filled from the row's columns, e.g. `Summarize {title}: {text}`.
    pub template: Option<String>,
    /// Column or field holding the row id. `None`: `id` if present, else `custom_id`, else the
    /// row number.
    pub id_column: Option<String>,
    /// CSV or Parquet column naming the row's model (an empty value: `--model`'s list).
    pub model_column: Option<String>,
    /// Turn malformed input records into error records instead of stopping.
    pub skip_invalid: bool,
    /// Only the first N data rows.
    pub limit: Option<u64>,
    /// Only the rows of shard K of N.
    pub shard: Option<Shard>,
    /// Input columns copied into each record.
    pub keep_columns: Option<KeepColumns>,
    /// Rows handed over in memory: read once, by the first opening.
    pub(crate) memory: Option<MemoryInput>,
}

/// A reader of rows in memory, taken by the first (and only) opening.
#[derive(Clone)]
pub(crate) struct MemoryInput(Arc<Mutex<Option<Box<dyn Read + Send>>>>);

impl std::fmt::Debug for MemoryInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryInput")
    }
}

impl InputOptions {
    /// The file at `path` (`-`: standard input), with every other option at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        InputOptions {
            path: path.into(),
            input_format: InputFormat::Auto,
            prompt_column: DEFAULT_PROMPT_COLUMN.to_string(),
            template: None,
            id_column: None,
            model_column: None,
            skip_invalid: false,
            limit: None,
            shard: None,
            keep_columns: None,
            memory: None,
        }
    }

    /// Rows read from `reader` (CSV or JSONL text, by `format`; `Auto` means JSONL), named
    /// `name` in messages. Like standard input it is read once: a run over it cannot resume an
    /// output that already has records.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        format: InputFormat,
        reader: impl Read + Send + 'static,
    ) -> Self {
        let format = match format {
            InputFormat::Auto => InputFormat::Jsonl,
            other => other,
        };
        InputOptions {
            input_format: format,
            memory: Some(MemoryInput(Arc::new(Mutex::new(Some(Box::new(reader)))))),
            ..InputOptions::new(name)
        }
    }

    /// Whether the input can be read only once (standard input, rows in memory): no second
    /// pass (row count, duplicate-id pre-pass, resume plan) is possible.
    pub fn reads_once(&self) -> bool {
        self.memory.is_some() || is_stdin(&self.path)
    }

    /// Whether this is standard input.
    pub fn is_stdin(&self) -> bool {
        self.memory.is_none() && is_stdin(&self.path)
    }

    /// Opens the input for reading: the file, standard input, or the rows in memory (once).
    pub(crate) fn open_reader(&self) -> Result<Box<dyn Read + Send>, crate::error::Error> {
        if let Some(memory) = &self.memory {
            let taken = memory.0.lock().ok().and_then(|mut reader| reader.take());
            return taken.ok_or_else(|| {
                crate::error::Error::Config(format!(
                    "the rows of {} were handed over in memory and are already read: they can be read only once",
                    self.path.display()
                ))
            });
        }
        if self.is_stdin() {
            return Ok(Box::new(std::io::stdin()));
        }
        let file = std::fs::File::open(&self.path).map_err(|e| {
            crate::error::Error::io(
                format!("cannot open input {} (check the path)", self.path.display()),
                e,
            )
        })?;
        Ok(Box::new(file))
    }
}
