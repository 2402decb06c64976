//! `--ordered`: the output is the checkpoint, so records are appended as rows finish (a finished
//! row is on disk within the usual sync interval, and `kill -9` re-pays at most the rows in
//! flight); when the run ends, the output is put in input order (by `row`) here, in place and
//! crash-safely (`replace.rs`). An output already in order is left untouched. With several
//! models (`--model a,b`), a row's records follow the list's order; a record of a model not in
//! the list (a row's own model, a model dropped from the list) comes after them.
//!
//! One pass finds each record's bytes, row and model (only those fields are parsed); if they
//! are out of order, the records are copied byte for byte, by (row, model), into the new
//! contents. Memory: 24 bytes per record during the sort.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Deserialize;

use super::replace::replace_with;
use crate::error::Error;
use crate::output::read::Format;

/// Where one record's bytes are, and its place: `row × (models + 1) + the model's position`.
#[derive(Debug, Clone, Copy)]
struct Span {
    place: u64,
    start: u64,
    end: u64,
}

/// The place of a record of `row` for `model` when rows go to `models`, in order.
fn place(row: u64, model: Option<&str>, models: &[String]) -> u64 {
    let position = models
        .iter()
        .position(|m| Some(m.as_str()) == model)
        .unwrap_or(models.len());
    row.saturating_mul(models.len() as u64 + 1)
        .saturating_add(position as u64)
}

/// Puts the records of the output at `path` in input order: by row, then by the position of
/// their model in `models` (`--model`'s list). Returns how many records were moved into place
/// (0: already in order).
pub(crate) fn sort_by_row(path: &Path, models: &[String]) -> Result<u64, Error> {
    let (header_end, mut spans) = match Format::for_path(path) {
        Format::Jsonl => jsonl_spans::<RowOnly>(path, models)?,
        Format::OpenaiBatch => jsonl_spans::<BatchRowOnly>(path, models)?,
        Format::Csv => csv_spans(path, models)?,
    };
    if spans.is_sorted_by_key(|s| s.place) {
        return Ok(0);
    }
    spans.sort_by_key(|s| s.place);
    let mut file = File::open(path).map_err(|e| read_error(path, e))?;
    let header = Span {
        place: 0,
        start: 0,
        end: header_end,
    };
    replace_with(path, |out| {
        let mut buf = Vec::new();
        for span in std::iter::once(&header).chain(&spans) {
            buf.resize((span.end - span.start) as usize, 0);
            file.seek(SeekFrom::Start(span.start))
                .and_then(|_| file.read_exact(&mut buf))
                .and_then(|()| out.write_all(&buf))
                .map_err(|e| read_error(path, e))?;
        }
        Ok(())
    })?;
    Ok(spans.len() as u64)
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("cannot put {} in input order", path.display()), e)
}

/// The row and model of a JSONL line.
trait HasRow: serde::de::DeserializeOwned {
    fn row(&self) -> u64;
    fn model(&self) -> Option<&str>;
}

#[derive(Deserialize)]
struct RowOnly {
    row: u64,
    #[serde(default)]
    model: Option<String>,
}

impl HasRow for RowOnly {
    fn row(&self) -> u64 {
        self.row
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// The row of an OpenAI Batch-shaped line (its record is under `promptbatch`).
#[derive(Deserialize)]
struct BatchRowOnly {
    promptbatch: RowOnly,
}

impl HasRow for BatchRowOnly {
    fn row(&self) -> u64 {
        self.promptbatch.row
    }

    fn model(&self) -> Option<&str> {
        self.promptbatch.model()
    }
}

/// The records of a JSONL output (no header: blank lines are dropped).
fn jsonl_spans<R: HasRow>(path: &Path, models: &[String]) -> Result<(u64, Vec<Span>), Error> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let (mut spans, mut line, mut offset) = (Vec::new(), Vec::new(), 0u64);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| read_error(path, e))? as u64;
        if n == 0 {
            return Ok((0, spans));
        }
        let text = line.trim_ascii();
        if !text.is_empty() {
            let record: R = serde_json::from_slice(text).map_err(|e| {
                Error::Config(format!("cannot put {} in input order: {e}", path.display()))
            })?;
            spans.push(Span {
                place: place(record.row(), record.model(), models),
                start: offset,
                end: offset + n,
            });
        }
        offset += n;
    }
}

/// The records of a CSV output, after its header.
fn csv_spans(path: &Path, models: &[String]) -> Result<(u64, Vec<Span>), Error> {
    let len = std::fs::metadata(path)
        .map_err(|e| read_error(path, e))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let headers = reader.headers().map_err(|e| csv_error(path, e))?;
    let row_column = headers
        .iter()
        .position(|h| h == "row")
        .ok_or_else(|| Error::Config(format!("{} has no `row` column", path.display())))?;
    let model_column = headers.iter().position(|h| h == "model");
    let mut record = csv::ByteRecord::new();
    let mut starts_rows = Vec::new();
    let header_end = reader.position().byte();
    loop {
        let start = reader.position().byte();
        if !reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            break;
        }
        let row = std::str::from_utf8(record.get(row_column).unwrap_or_default())
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let model = model_column
            .and_then(|c| record.get(c))
            .and_then(|m| std::str::from_utf8(m).ok());
        starts_rows.push((start, place(row, model, models)));
    }
    let ends = starts_rows
        .iter()
        .skip(1)
        .map(|&(start, _)| start)
        .chain([len]);
    let spans = starts_rows
        .iter()
        .zip(ends)
        .map(|(&(start, place), end)| Span { place, start, end })
        .collect();
    Ok((header_end, spans))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Config(format!("cannot put {} in input order: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format as fmt;
    use crate::output::read::Records;
    use crate::output::record::{Record, Status};

    fn record(row: u64) -> Record {
        Record {
            id: format!("r{row}"),
            row,
            prompt: format!("line one\nline \"{row}\""),
            completion: Some("ok".into()),
            finish_reason: None,
            model: "m".into(),
            prompt_tokens: 1,
            cached_tokens: 0,
            completion_tokens: 1,
            reasoning_tokens: 0,
            total_tokens: 2,
            latency_ms: 1,
            attempts: 1,
            status: Status::Ok,
            error: None,
            response_id: None,
            cost_usd: None,
            fingerprint: String::new(),
            simulated: false,
            kept: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn sorted_rows(name: &str) -> (u64, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let mut encoder = fmt::for_path(&path);
        let mut bytes = encoder.header();
        for row in [3, 1, 4, 2, 5] {
            encoder.encode(&record(row), &mut bytes);
        }
        std::fs::write(&path, bytes).unwrap();
        let moved = sort_by_row(&path, &["m".to_string()]).unwrap();
        let rows = Records::<Record>::open(&path)
            .unwrap()
            .map(|r| r.unwrap().1.row)
            .collect();
        assert_eq!(
            sort_by_row(&path, &["m".to_string()]).unwrap(),
            0,
            "already in order"
        );
        (moved, rows)
    }

    #[test]
    fn csv_with_multi_line_fields_is_put_in_row_order() {
        assert_eq!(sorted_rows("out.csv"), (5, vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn jsonl_is_put_in_row_order() {
        assert_eq!(sorted_rows("out.jsonl"), (5, vec![1, 2, 3, 4, 5]));
    }
}
