//! A strict, streaming CSV record reader: RFC 4180 with LF or CRLF line ends.
//!
//! The `csv` crate is lenient where a prompt batch cannot afford it: a quote that never closes
//! swallows the rest of the file into one field, `"abc"def` becomes `abcdef`, a lone CR ends a
//! record. This reader accepts exactly: fields separated by `,`; records ended by LF, CRLF or the
//! end of the input; a field either unquoted (no `"`, CR or LF in it) or wholly quoted (`""` for
//! a quote, anything else verbatim, line ends included). Blank lines are skipped; a UTF-8
//! byte-order mark at the start is dropped. Anything else is a [`Broken`] record.
//!
//! Lines are physical lines of the input (a quoted field may span several). After a broken
//! record the reader resynchronizes so that the lines that follow are read as records again:
//! when a quoted field is at fault (it never closes, or its closing quote is followed by text),
//! reading resumes on the line after the one where its quote opened — the bytes read since are
//! read again, from memory, so this works on standard input too; otherwise reading resumes on the
//! line after the one where the problem is.

use std::io::{self, BufRead};

use super::encoding::UTF8_BOM;

/// One record: its fields' bytes back to back, and where each field ends.
#[derive(Debug, Default)]
pub(crate) struct RawRecord {
    /// Physical line where the record starts (1-based).
    pub line: u64,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RawRecord {
    /// Number of fields.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of field `i` (empty when there is no such field).
    pub(super) fn field(&self, i: usize) -> &[u8] {
        let start = self.start(i);
        self.ends.get(i).map_or(&[], |&end| &self.bytes[start..end])
    }

    /// The physical line of byte `offset` of field `i` (line ends inside quoted fields count).
    pub(super) fn line_of(&self, i: usize, offset: usize) -> u64 {
        let upto = (self.start(i) + offset).min(self.bytes.len());
        self.line + count_newlines(&self.bytes[..upto])
    }

    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(self.bytes.len()),
        }
    }

    fn clear(&mut self, line: u64) {
        self.line = line;
        self.bytes.clear();
        self.ends.clear();
    }

    fn end_field(&mut self) {
        self.ends.push(self.bytes.len());
    }
}

/// What is wrong with a broken record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A quoted field whose quote never closes: it runs to the end of the input, on `last_line`.
    UnclosedQuote { last_line: u64 },
    /// A quoted field's closing quote (on `close_line`) is followed by `after` (the rest of that
    /// line) instead of `,` or a line end.
    TextAfterQuote { close_line: u64, after: String },
    /// A `"` inside an unquoted field; `after_space`: only spaces precede it in the field.
    StrayQuote { after_space: bool },
    /// A CR not followed by LF outside quotes.
    LoneCr,
}

/// A record the reader could not read; it has already skipped past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    pub problem: Problem,
    /// The line to report: where the quote opened for a quoted field at fault, else where the
    /// problem is.
    pub line: u64,
    /// The line where the record starts.
    pub record_line: u64,
    /// 0-based index of the field at fault.
    pub field: usize,
}

/// The outcome of one read.
#[derive(Debug)]
pub(crate) enum Next {
    /// A record was read into the caller's [`RawRecord`].
    Record,
    /// A broken record (skipped).
    Broken(Broken),
    /// The end of the input.
    End,
}

/// Where the reader is inside the current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: either the first of `""`, or the closing quote.
    QuoteInQuoted,
    /// A CR outside quotes: it must be followed by LF.
    Cr,
}

/// Reads [`RawRecord`]s from a buffered reader, strictly (see the module docs).
pub(crate) struct RecordReader<R> {
    inner: R,
    /// Bytes to read again before `inner` (after a broken quoted field).
    replay: Vec<u8>,
    replay_at: usize,
    /// The physical line of the next byte.
    line: u64,
    started: bool,
}

impl<R: BufRead> RecordReader<R> {
    pub(super) fn new(inner: R) -> Self {
        RecordReader {
            inner,
            replay: Vec::new(),
            replay_at: 0,
            line: 1,
            started: false,
        }
    }

    /// Reads the next record into `record`.
    pub(super) fn read(&mut self, record: &mut RawRecord) -> io::Result<Next> {
        if !self.started {
            self.started = true;
            self.skip_bom()?;
        }
        let mut scan = Scan::new(self.line);
        record.clear(self.line);
        loop {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                self.line = scan.line;
                return self.at_end(scan, record);
            }
            let mut used = 0;
            let mut stop = None;
            for &byte in chunk {
                used += 1;
                if let Some(step) = scan.step(byte, record) {
                    stop = Some(step);
                    break;
                }
            }
            self.consume(used);
            self.line = scan.line;
            match stop {
                None => {}
                Some(Step::Record) => return Ok(Next::Record),
                Some(Step::Broken(problem, byte)) => {
                    return self.broken(problem, byte, &scan, record).map(Next::Broken)
                }
            }
        }
    }

    /// The end of the input in state `scan`.
    fn at_end(&mut self, scan: Scan, record: &mut RawRecord) -> io::Result<Next> {
        match scan.state {
            State::FieldStart if scan.blank => Ok(Next::End),
            State::FieldStart | State::Unquoted | State::QuoteInQuoted => {
                record.end_field();
                Ok(Next::Record)
            }
            State::Cr => Ok(Next::Broken(scan.broken(Problem::LoneCr, record))),
            State::Quoted => {
                // After a final LF the next line does not exist.
                let last_line = scan.line - u64::from(record.bytes.ends_with(b"\n"));
                let problem = Problem::UnclosedQuote { last_line };
                self.replay_after_quote_line(&scan, record, &[]);
                Ok(Next::Broken(scan.broken(problem, record)))
            }
        }
    }

    /// Skips past a broken record whose problem was found at `byte` (already consumed).
    fn broken(
        &mut self,
        problem: Problem,
        byte: u8,
        scan: &Scan,
        record: &RawRecord,
    ) -> io::Result<Broken> {
        let mut rest = vec![byte];
        self.read_line_into(&mut rest)?;
        let problem = match problem {
            Problem::TextAfterQuote { close_line, .. } => {
                let after = String::from_utf8_lossy(trim_line_end(&rest)).into_owned();
                if scan.quote_line < close_line {
                    let mut tail = vec![b'"'];
                    tail.extend_from_slice(&rest);
                    self.replay_after_quote_line(scan, record, &tail);
                }
                Problem::TextAfterQuote { close_line, after }
            }
            other => other,
        };
        Ok(scan.broken(problem, record))
    }

    /// Arranges for the lines after the one where the current quoted field opened to be read
    /// again, followed by `tail` (raw bytes read after the field's content).
    fn replay_after_quote_line(&mut self, scan: &Scan, record: &RawRecord, tail: &[u8]) {
        let content = &record.bytes[scan.field_start..];
        let Some(newline) = content.iter().position(|&b| b == b'\n') else {
            return;
        };
        // Inside quotes every `"` was written `""`: quoting the content again gives back the
        // bytes as they were read.
        let mut bytes = Vec::with_capacity(content.len() + tail.len());
        for &b in &content[newline + 1..] {
            bytes.push(b);
            if b == b'"' {
                bytes.push(b'"');
            }
        }
        bytes.extend_from_slice(tail);
        bytes.extend_from_slice(&self.replay[self.replay_at..]);
        self.replay = bytes;
        self.replay_at = 0;
        self.line = scan.quote_line + 1;
    }

    /// Appends the bytes up to and including the next LF (or the end of the input) to `out`.
    fn read_line_into(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                return Ok(());
            }
            let (used, found) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            out.extend_from_slice(&chunk[..used]);
            self.consume(used);
            if found {
                self.line += 1;
                return Ok(());
            }
        }
    }

    /// Drops a UTF-8 byte-order mark at the start of the input.
    fn skip_bom(&mut self) -> io::Result<()> {
        let mut start = Vec::with_capacity(UTF8_BOM.len());
        while start.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(&start) {
            let chunk = self.inner.fill_buf()?;
            let Some(&byte) = chunk.first() else { break };
            start.push(byte);
            self.inner.consume(1);
        }
        if start != UTF8_BOM {
            self.replay = start;
            self.replay_at = 0;
        }
        Ok(())
    }

    /// The next bytes to read (replayed ones first); empty at the end of the input.
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.replay_at < self.replay.len() {
            return Ok(&self.replay[self.replay_at..]);
        }
        self.inner.fill_buf()
    }

    /// Marks `n` bytes of [`RecordReader::fill`]'s answer as read.
    fn consume(&mut self, n: usize) {
        if self.replay_at < self.replay.len() {
            self.replay_at += n;
            if self.replay_at == self.replay.len() {
                self.replay = Vec::new();
                self.replay_at = 0;
            }
        } else {
            self.inner.consume(n);
        }
    }
}

/// What one byte did to the record.
enum Step {
    Record,
    /// A broken record, found at this byte.
    Broken(Problem, u8),
}

/// The scanner's state within one record.
struct Scan {
    state: State,
    line: u64,
    /// Nothing but line ends so far (a blank line is skipped, not a record).
    blank: bool,
    /// Where the current field's bytes start in the record.
    field_start: usize,
    /// The line where the current quoted field's quote opened.
    quote_line: u64,
}

impl Scan {
    fn new(line: u64) -> Self {
        Scan {
            state: State::FieldStart,
            line,
            blank: true,
            field_start: 0,
            quote_line: line,
        }
    }

    /// Advances over one byte; `Some` when the record ends or breaks here.
    fn step(&mut self, byte: u8, record: &mut RawRecord) -> Option<Step> {
        match (self.state, byte) {
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, _) => {
                record.bytes.push(byte);
                if byte == b'\n' {
                    self.line += 1;
                }
            }
            (State::QuoteInQuoted, b'"') => {
                record.bytes.push(b'"');
                self.state = State::Quoted;
            }
            (State::Cr, b'\n') | (_, b'\n') => return self.line_end(record),
            (State::Cr, _) => return Some(Step::Broken(Problem::LoneCr, byte)),
            (_, b'\r') => self.state = State::Cr,
            (_, b',') => {
                record.end_field();
                self.start_field(record);
                self.blank = false;
            }
            (State::FieldStart, b'"') => {
                self.state = State::Quoted;
                self.quote_line = self.line;
                self.blank = false;
            }
            (State::QuoteInQuoted, _) => {
                // `after` is filled in by the reader, which reads the rest of the line.
                let problem = Problem::TextAfterQuote {
                    close_line: self.line,
                    after: String::new(),
                };
                return Some(Step::Broken(problem, byte));
            }
            (State::Unquoted, b'"') => {
                let field = &record.bytes[self.field_start..];
                let after_space = !field.is_empty() && field.iter().all(|&b| b == b' ');
                return Some(Step::Broken(Problem::StrayQuote { after_space }, byte));
            }
            (State::FieldStart | State::Unquoted, _) => {
                record.bytes.push(byte);
                self.state = State::Unquoted;
                self.blank = false;
            }
        }
        None
    }

    /// An LF outside quotes: the record ends, or a blank line is passed over.
    fn line_end(&mut self, record: &mut RawRecord) -> Option<Step> {
        self.line += 1;
        if self.blank {
            record.clear(self.line);
            self.state = State::FieldStart;
            return None;
        }
        record.end_field();
        Some(Step::Record)
    }

    fn start_field(&mut self, record: &RawRecord) {
        self.state = State::FieldStart;
        self.field_start = record.bytes.len();
    }

    /// The broken record for `problem` found in this state.
    fn broken(&self, problem: Problem, record: &RawRecord) -> Broken {
        let quoted = matches!(
            problem,
            Problem::UnclosedQuote { .. } | Problem::TextAfterQuote { .. }
        );
        Broken {
            line: if quoted { self.quote_line } else { self.line },
            record_line: record.line,
            field: record.len(),
            problem,
        }
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read of `input`: fields as strings, or the broken record.
    fn read_all(input: &[u8]) -> Vec<Result<(u64, Vec<String>), Broken>> {
        let mut reader = RecordReader::new(input);
        let mut record = RawRecord::default();
        let mut out = Vec::new();
        loop {
            match reader.read(&mut record).unwrap() {
                Next::End => return out,
                Next::Broken(b) => out.push(Err(b)),
                Next::Record => out.push(Ok((
                    record.line,
                    (0..record.len())
                        .map(|i| String::from_utf8_lossy(record.field(i)).into_owned())
                        .collect(),
                ))),
            }
        }
    }

    fn ok(line: u64, fields: &[&str]) -> Result<(u64, Vec<String>), Broken> {
        Ok((line, fields.iter().map(|s| s.to_string()).collect()))
    }

    /// Random records written by the `csv` crate (LF or CRLF ends) read back field for field, on
    /// the line where each starts, through buffers as small as one byte.
    #[test]
    fn reads_back_what_the_csv_crate_writes() {
        use rand::{Rng, SeedableRng};
        let alphabet = ["a", "é", "日", ",", "\"", "\n", "\r", "\r\n", " ", ";"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for round in 0..200 {
            let columns = rng.random_range(1..4);
            let records: Vec<Vec<String>> = (0..rng.random_range(1..6))
                .map(|_| {
                    (0..columns)
                        .map(|_| {
                            (0..rng.random_range(0..6))
                                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                                .collect()
                        })
                        .collect()
                })
                .filter(|r: &Vec<String>| r.len() > 1 || !r[0].is_empty())
                .collect();
            let terminator = match round % 2 {
                0 => csv::Terminator::CRLF,
                _ => csv::Terminator::Any(b'\n'),
            };
            let mut writer = csv::WriterBuilder::new()
                .terminator(terminator)
                .from_writer(Vec::new());
            let mut lines = Vec::new();
            for r in &records {
                writer.flush().unwrap();
                lines.push(1 + count_newlines(writer.get_ref()));
                writer.write_record(r).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let capacity = 1 + round % 7;
            let mut reader =
                RecordReader::new(std::io::BufReader::with_capacity(capacity, &bytes[..]));
            let mut record = RawRecord::default();
            for (r, &line) in records.iter().zip(&lines) {
                assert!(
                    matches!(reader.read(&mut record).unwrap(), Next::Record),
                    "{bytes:?}"
                );
                let fields: Vec<&[u8]> = (0..record.len()).map(|i| record.field(i)).collect();
                let expected: Vec<&[u8]> = r.iter().map(|f| f.as_bytes()).collect();
                assert_eq!(fields, expected, "{bytes:?}");
                assert_eq!(record.line, line, "{bytes:?}");
            }
            assert!(matches!(reader.read(&mut record).unwrap(), Next::End));
        }
    }

    /// Random bytes never panic, and every record or broken record is reported on a later line
    /// than the one before (so reading ends after at most one item per line).
    #[test]
    fn random_bytes_advance_line_by_line() {
        use rand::{Rng, SeedableRng};
        let alphabet = b"a,\"\r\n ";
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for _ in 0..2000 {
            let input: Vec<u8> = (0..rng.random_range(0..40))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let lines = 1 + count_newlines(&input);
            let mut reader = RecordReader::new(std::io::BufReader::with_capacity(2, &input[..]));
            let mut record = RawRecord::default();
            let mut last = 0;
            loop {
                let line = match reader.read(&mut record).unwrap() {
                    Next::End => break,
                    Next::Record => record.line,
                    Next::Broken(broken) => broken.line,
                };
                assert!(
                    line > last && line <= lines,
                    "{input:?}: {line} after {last}"
                );
                last = line;
            }
        }
    }

    #[test]
    fn reads_quoted_fields_crlf_blank_lines_and_a_bom() {
        let input = b"\xEF\xBB\xBFa,b\r\n\r\n\"x\r\ny\",\"q\"\"q\"\r\n,\n\nlast,\"\"";
        assert_eq!(
            read_all(input),
            vec![
                ok(1, &["a", "b"]),
                ok(3, &["x\r\ny", "q\"q"]),
                ok(5, &["", ""]),
                ok(7, &["last", ""]),
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opens_and_the_next_lines_are_read_again() {
        let input = b"h\n\"multi\nline\"\n\"open\nnext\n\"\"\n";
        let out = read_all(input);
        assert_eq!(out[0], ok(1, &["h"]));
        assert_eq!(out[1], ok(2, &["multi\nline"]));
        let Err(broken) = &out[2] else { panic!() };
        assert_eq!(broken.line, 4);
        assert_eq!(broken.problem, Problem::UnclosedQuote { last_line: 6 });
        assert_eq!(out[3..], [ok(5, &["next"]), ok(6, &[""])]);
    }

    #[test]
    fn text_after_a_multi_line_quote_resumes_after_the_quote_line() {
        let out = read_all(b"a,\"open\nb,\"c\"\nd,e\n");
        let Err(broken) = &out[0] else { panic!() };
        assert_eq!((broken.line, broken.field), (1, 1));
        assert_eq!(
            broken.problem,
            Problem::TextAfterQuote {
                close_line: 2,
                after: "c\"".into()
            }
        );
        assert_eq!(out[1..], [ok(2, &["b", "c"]), ok(3, &["d", "e"])]);
    }

    #[test]
    fn stray_quotes_and_lone_crs_break_only_their_line() {
        let out = read_all(b"ab\"c,1\n \"x\",2\na\rb,3\nok,4\n");
        let problems: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().map_err(|b| (b.line, b.problem.clone())))
            .collect();
        assert_eq!(
            problems,
            vec![
                Err((1, Problem::StrayQuote { after_space: false })),
                Err((2, Problem::StrayQuote { after_space: true })),
                Err((3, Problem::LoneCr)),
                Ok(&(4, vec!["ok".to_string(), "4".to_string()])),
            ]
        );
    }
}
