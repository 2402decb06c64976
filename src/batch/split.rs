//! Writing Batch API input files: one line per request,
//! `{"custom_id": ID, "method": "POST", "url": "/v1/chat/completions", "body": BODY}` with the
//! exact body a live run would send, and a new file whenever the next line would pass the
//! requests-per-file or bytes-per-file limit (50,000 and 200 MB at OpenAI unless set).

use super::state::RowRef;

/// One finished input file and the rows it holds, in line order.
#[derive(Debug, Default)]
pub struct InputFile {
    pub content: Vec<u8>,
    pub rows: Vec<RowRef>,
    /// Worst-case cost of its requests at batch prices.
    pub worst_case_usd: f64,
}

/// Splits lines into files within the limits.
#[derive(Debug)]
pub struct Splitter {
    max_requests: usize,
    max_bytes: u64,
    current: InputFile,
}

/// The `custom_id` of a (row, model) unit, unique within a batch: the row id with one model;
/// with several, `ID#SLOT` (the model's position in the list; a row naming its own model has
/// slot 0). Every id gets the suffix, so two units never share one (ids are unique).
pub fn custom_id(id: &str, slot: u32, models: u64) -> String {
    if models > 1 {
        format!("{id}#{slot}")
    } else {
        id.to_string()
    }
}

/// The Batch API line of one request.
pub fn line(custom_id: &str, body: &[u8]) -> Vec<u8> {
    let id = serde_json::Value::String(custom_id.to_string()).to_string();
    let mut line = Vec::with_capacity(body.len() + id.len() + 80);
    line.extend_from_slice(b"{\"custom_id\":");
    line.extend_from_slice(id.as_bytes());
    line.extend_from_slice(b",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":");
    line.extend_from_slice(body);
    line.extend_from_slice(b"}\n");
    line
}

impl Splitter {
    pub fn new(max_requests: usize, max_bytes: u64) -> Self {
        Splitter {
            max_requests: max_requests.max(1),
            max_bytes,
            current: InputFile::default(),
        }
    }

    /// Whether a line of `len` bytes can ever fit in a file.
    pub fn fits(&self, len: usize) -> bool {
        len as u64 <= self.max_bytes
    }

    /// Adds a line (which must fit); returns the file it completed, if adding it would have
    /// passed a limit (the line then starts the next file).
    pub fn push(&mut self, line: Vec<u8>, row: RowRef, worst_case_usd: f64) -> Option<InputFile> {
        let full = !self.current.rows.is_empty()
            && (self.current.rows.len() >= self.max_requests
                || (self.current.content.len() + line.len()) as u64 > self.max_bytes);
        let finished = full.then(|| std::mem::take(&mut self.current));
        self.current.content.extend_from_slice(&line);
        self.current.rows.push(row);
        self.current.worst_case_usd += worst_case_usd;
        finished
    }

    /// The last, partly filled file, if any.
    pub fn finish(self) -> Option<InputFile> {
        (!self.current.rows.is_empty()).then_some(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64) -> RowRef {
        RowRef(n, n.to_string(), String::new(), 1)
    }

    #[test]
    fn files_split_at_the_request_and_byte_limits() {
        let body = br#"{"model":"m","messages":[]}"#;
        let one = line("a\"b", body);
        let parsed: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(parsed["custom_id"], "a\"b");
        assert_eq!(parsed["body"]["model"], "m");
        assert_eq!(parsed["url"], "/v1/chat/completions");

        let mut by_count = Splitter::new(2, u64::MAX);
        let mut files = Vec::new();
        for n in 1..=5 {
            files.extend(by_count.push(one.clone(), row(n), 0.5));
        }
        files.extend(by_count.finish());
        let sizes: Vec<usize> = files.iter().map(|f| f.rows.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(files[0].worst_case_usd, 1.0);
        assert_eq!(files[2].rows[0].row(), 5);

        let mut by_bytes = Splitter::new(100, (one.len() * 3) as u64);
        let mut files = Vec::new();
        for n in 1..=7 {
            files.extend(by_bytes.push(one.clone(), row(n), 0.0));
        }
        files.extend(by_bytes.finish());
        let sizes: Vec<usize> = files.iter().map(|f| f.rows.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(files
            .iter()
            .all(|f| f.content.len() as u64 <= (one.len() * 3) as u64));
        assert!(!by_bytes_fits(one.len()));
    }

    fn by_bytes_fits(len: usize) -> bool {
        Splitter::new(1, (len - 1) as u64).fits(len)
    }
}
