//! The answers of the final batches one collection writes: their output and error files are
//! streamed to one temporary file in the output's folder (unlinked at once, so nothing is left
//! behind, whatever the exit), and only where each row's line lies is kept in memory (about 40
//! bytes a row), so memory stays flat however large the files; a row's line is read back and
//! parsed when its record is written. A line says what happened to its row ([`LineOutcome`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use serde::Deserialize;
use serde_json::Value;

use crate::api::classify::{classify_status, one_line};
use crate::api::{response, Completion, FailureKind};
use crate::error::Error;
use crate::util::spill::SpillFile;

/// What the answer to one row of a batch says.
pub(super) enum LineOutcome {
    Answer(Completion),
    /// An error record with this message.
    Permanent(String),
    /// Worth another batch.
    Transient(String),
}

/// Downloaded output and error files, and where each row's line is in them.
pub(super) struct Answers {
    temp: SpillFile,
    /// Batch row (its key in the collection: `rows` of [`index`](Self::index)) → its line.
    spots: HashMap<u64, Spot>,
    /// Lines that contradict a row's line: another answer (paid too: kept beside the output,
    /// never dropped) or an error line beside an answer.
    pub(super) contradictions: Vec<Contradiction>,
    /// Lines whose `custom_id` names no row of their batch (a server's mistake; an answer
    /// there may be paid): (offset, length, custom_id, whether it is an answer).
    foreign: Vec<(u64, usize, String, bool)>,
}

/// Where a line lies in the downloads, and whether it holds an answer (a 2xx response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spot {
    at: u64,
    len: usize,
    answer: bool,
}

/// A row with more than one line in a batch's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Contradiction {
    /// The batch row (its key in the collection).
    pub row: u64,
    /// The line that is not the row's record: (offset, length).
    pub other: (u64, usize),
    /// Whether that other line is an answer (paid for) rather than an error.
    pub other_is_answer: bool,
}

/// What [`Answers::index`] reads of a line.
#[derive(Deserialize)]
struct LineHead {
    custom_id: Value,
    #[serde(default)]
    response: Option<ResponseHead>,
}

#[derive(Deserialize)]
struct ResponseHead {
    #[serde(default)]
    status_code: u64,
}

impl Answers {
    /// An empty set of answers, its file in the output's folder.
    pub(super) fn new() -> Result<Self, Error> {
        let dir = crate::util::spill::dir();
        let temp = SpillFile::create(&dir).map_err(|e| {
            Error::io(
                format!(
                    "creating a temporary file for batch answers in {}",
                    dir.display()
                ),
                e,
            )
        })?;
        Ok(Answers {
            temp,
            spots: HashMap::new(),
            contradictions: Vec::new(),
            foreign: Vec::new(),
        })
    }

    /// The file downloads are appended to.
    pub(super) fn file(&self) -> &File {
        &self.temp.file
    }

    /// Where the next download begins.
    pub(super) fn end(&self) -> u64 {
        self.temp.file.metadata().map_or(0, |m| m.len())
    }

    /// Notes where the lines appended from offset `from` on are, for those whose `custom_id`
    /// names a batch row of `rows` (`custom_id` → key); returns how many such lines there are. A row's answer is its
    /// line whatever else its files say: a second answer that differs, or an error line, is
    /// a contradiction (an identical repeat is not).
    pub(super) fn index(&mut self, from: u64, rows: &HashMap<&str, u64>) -> Result<u64, Error> {
        let io = |e| Error::io("reading a batch download back", e);
        // A handle of its own, so that `place` may read lines back meanwhile (by offset).
        let mut file = self.temp.file.try_clone().map_err(io)?;
        file.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut line = Vec::new();
        let mut at = from;
        let mut lines = 0;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 {
                return Ok(lines);
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if let Ok(head) = serde_json::from_slice::<LineHead>(text) {
                let answer = head
                    .response
                    .is_some_and(|r| (200..300).contains(&r.status_code));
                let custom_id = id_text(&head.custom_id);
                match rows.get(custom_id.as_str()) {
                    Some(&row) => {
                        lines += 1;
                        let spot = Spot {
                            at,
                            len: text.len(),
                            answer,
                        };
                        self.place(row, spot, text)?;
                    }
                    None => self.foreign.push((at, text.len(), custom_id, answer)),
                }
            }
            at += read as u64;
        }
    }

    /// Gives `row` the line at `spot` unless it has one already; an answer wins over an
    /// error line, the first answer over a later different one.
    fn place(&mut self, row: u64, spot: Spot, text: &[u8]) -> Result<(), Error> {
        let Some(&held) = self.spots.get(&row) else {
            self.spots.insert(row, spot);
            return Ok(());
        };
        if held.len == spot.len && self.line_at(held.at, held.len)? == text {
            return Ok(());
        }
        let (keep, other) = if spot.answer && !held.answer {
            (spot, held)
        } else {
            (held, spot)
        };
        self.spots.insert(row, keep);
        // Two error lines: nothing paid, nothing to report.
        if keep.answer || other.answer {
            self.contradictions.push(Contradiction {
                row,
                other: (other.at, other.len),
                other_is_answer: other.answer,
            });
        }
        Ok(())
    }

    /// Forgets what was downloaded from `from` on (a download found short, to be done again)
    /// for the rows of `rows`.
    pub(super) fn rollback(&mut self, from: u64, rows: &HashMap<&str, u64>) -> Result<(), Error> {
        for row in rows.values() {
            if self.spots.get(row).is_some_and(|s| s.at >= from) {
                self.spots.remove(row);
            }
        }
        self.contradictions.retain(|c| c.other.0 < from);
        self.foreign.retain(|f| f.0 < from);
        self.temp
            .file
            .set_len(from)
            .map_err(|e| Error::io("a batch download's temporary file", e))
    }

    /// The lines of the last batch indexed whose `custom_id` names none of its rows: (its
    /// line, custom_id, whether it is an answer).
    pub(super) fn take_foreign(&mut self) -> Result<Vec<(Vec<u8>, String, bool)>, Error> {
        std::mem::take(&mut self.foreign)
            .into_iter()
            .map(|(at, len, id, answer)| Ok((self.line_at(at, len)?, id, answer)))
            .collect()
    }

    /// Whether `row` has a line.
    pub(super) fn has(&self, row: u64) -> bool {
        self.spots.contains_key(&row)
    }

    /// The raw line at (`at`, `len`).
    pub(super) fn line_at(&self, at: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut line = vec![0; len];
        self.temp
            .file
            .read_exact_at(&mut line, at)
            .map_err(|e| Error::io("reading a batch download back", e))?;
        Ok(line)
    }

    /// The raw line of `row`, if it has one.
    pub(super) fn line_of(&self, row: u64) -> Result<Option<Vec<u8>>, Error> {
        match self.spots.get(&row) {
            Some(spot) => self.line_at(spot.at, spot.len).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `row`'s line is an answer (paid for).
    pub(super) fn is_answer(&self, row: u64) -> bool {
        self.spots.get(&row).is_some_and(|s| s.answer)
    }

    /// What `row`'s line says (read back from the file).
    pub(super) fn read(&self, row: u64) -> Result<Option<LineOutcome>, Error> {
        Ok(self
            .line_of(row)?
            .and_then(|line| read_line(&line).map(|(_, outcome)| outcome)))
    }
}

/// A `custom_id` as text (a string as it is, any other JSON value as JSON).
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line of an output or error file: its `custom_id` and what it says.
pub(super) fn read_line(line: &[u8]) -> Option<(String, LineOutcome)> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let custom_id = id_text(value.get("custom_id")?);
    let response = value.get("response").filter(|r| !r.is_null());
    if let Some(response) = response {
        let status = response
            .get("status_code")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u16;
        let body = response.get("body").cloned().unwrap_or(Value::Null);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if (200..300).contains(&status) {
            return Some((
                custom_id,
                match crate::api::DEFAULT.decode(&bytes) {
                    Ok(completion) => LineOutcome::Answer(response::Completion {
                        body: bytes.into(),
                        ..completion
                    }),
                    Err(e) => LineOutcome::Transient(format!("HTTP {status}: {e}")),
                },
            ));
        }
        let failure = classify_status(status, &reqwest::header::HeaderMap::new(), &bytes);
        return Some((
            custom_id,
            match failure.kind {
                FailureKind::Transient => LineOutcome::Transient(failure.message),
                _ => LineOutcome::Permanent(failure.message),
            },
        ));
    }
    let error = value.get("error").filter(|e| !e.is_null());
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no response and no error for this row");
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = if code.is_empty() {
        one_line(message)
    } else {
        one_line(&format!("{message} ({code})"))
    };
    Some((custom_id, LineOutcome::Transient(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_error_lines_become_outcomes() {
        let ok = br#"{"id":"r1","custom_id":"a","response":{"status_code":200,"request_id":"q","body":{"id":"c1","model":"m","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}},"error":null}"#;
        let (id, outcome) = read_line(ok).unwrap();
        assert_eq!(id, "a");
        let LineOutcome::Answer(c) = outcome else {
            panic!("not an answer")
        };
        assert_eq!((c.content.as_deref(), c.usage.prompt), (Some("hi"), 3));

        let bad = br#"{"id":"r2","custom_id":"b","response":{"status_code":400,"request_id":"q","body":{"error":{"message":"bad thing","type":"invalid_request_error"}}},"error":null}"#;
        let LineOutcome::Permanent(m) = read_line(bad).unwrap().1 else {
            panic!("not permanent")
        };
        assert!(m.contains("HTTP 400") && m.contains("bad thing"), "{m}");

        let busy = br#"{"id":"r3","custom_id":"c","response":{"status_code":503,"request_id":"q","body":{"error":{"message":"overloaded"}}},"error":null}"#;
        assert!(matches!(
            read_line(busy).unwrap().1,
            LineOutcome::Transient(_)
        ));

        let expired = br#"{"id":"r4","custom_id":"d","response":null,"error":{"code":"batch_expired","message":"too late"}}"#;
        let LineOutcome::Transient(m) = read_line(expired).unwrap().1 else {
            panic!("not transient")
        };
        assert_eq!(m, "too late (batch_expired)");
        assert!(read_line(b"not json").is_none());
    }
}
