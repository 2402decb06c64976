//! Writing Batch API input files: one line per request,
//! `{"custom_id": ID, "method": "POST", "url": "/v1/chat/completions", "body": BODY}` with the
//! exact body a live run would send, and a new file whenever the next line would pass the
//! requests-per-file or bytes-per-file limit (50,000 and 200 MB at OpenAI unless set).
//!
//! A file holds one model's requests: providers refuse a batch that mixes models (Gemini and
//! Novita say so; a batch runs one model). With `--model a,b`, or rows naming their own model,
//! each model fills its own file; at most [`OPEN_FILES`] are open at once (the fullest is sent
//! when another model needs one), so memory stays bounded whatever the number of models.

use std::collections::HashMap;

use super::state::RowRef;

/// Models with a file being filled at once.
pub(super) const OPEN_FILES: usize = 8;

/// One finished input file and the rows it holds, in line order.
#[derive(Debug, Default)]
pub(super) struct InputFile {
    pub content: Vec<u8>,
    pub rows: Vec<RowRef>,
    /// Worst-case cost of its requests at batch prices.
    pub worst_case_usd: f64,
}

/// Splits lines into files within the limits, one model per file.
#[derive(Debug)]
pub(super) struct Splitter {
    max_requests: usize,
    max_bytes: u64,
    /// The file being filled for each model.
    open: HashMap<String, InputFile>,
}

/// The `custom_id` of a (row, model) unit, unique within a batch: the row id with one model;
/// with several, `ID#SLOT` (the model's position in the list; a row naming its own model has
/// slot 0). Every id gets the suffix, so two units never share one (ids are unique).
pub(super) fn custom_id(id: &str, slot: u32, models: u64) -> String {
    if models > 1 {
        format!("{id}#{slot}")
    } else {
        id.to_string()
    }
}

/// The Batch API line of one request.
pub(super) fn line(custom_id: &str, body: &[u8]) -> Vec<u8> {
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
    pub(super) fn new(max_requests: usize, max_bytes: u64) -> Self {
        Splitter {
            max_requests: max_requests.max(1),
            max_bytes,
            open: HashMap::new(),
        }
    }

    /// Whether a line of `len` bytes can ever fit in a file.
    pub(super) fn fits(&self, len: usize) -> bool {
        len as u64 <= self.max_bytes
    }

    /// Adds a line (which must fit) to `model`'s file; returns a file ready to send: that one,
    /// when adding the line would have passed a limit (the line then starts the next), or the
    /// fullest other model's, when `model` needs a file and [`OPEN_FILES`] are open.
    pub(super) fn push(
        &mut self,
        model: &str,
        line: Vec<u8>,
        row: RowRef,
        worst_case_usd: f64,
    ) -> Option<InputFile> {
        let mut finished = None;
        if !self.open.contains_key(model) && self.open.len() >= OPEN_FILES {
            let fullest = self
                .open
                .iter()
                .max_by_key(|(_, file)| file.content.len())
                .map(|(name, _)| name.clone());
            finished = fullest.and_then(|name| self.open.remove(&name));
        }
        let current = self.open.entry(model.to_string()).or_default();
        let full = !current.rows.is_empty()
            && (current.rows.len() >= self.max_requests
                || (current.content.len() + line.len()) as u64 > self.max_bytes);
        if full {
            finished = Some(std::mem::take(current));
        }
        current.content.extend_from_slice(&line);
        current.rows.push(row);
        current.worst_case_usd += worst_case_usd;
        finished
    }

    /// The partly filled files, by model name.
    pub(super) fn finish(self) -> Vec<InputFile> {
        let mut files: Vec<(String, InputFile)> = self.open.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files.into_iter().map(|(_, file)| file).collect()
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
            files.extend(by_count.push("m", one.clone(), row(n), 0.5));
        }
        files.extend(by_count.finish());
        let sizes: Vec<usize> = files.iter().map(|f| f.rows.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(files[0].worst_case_usd, 1.0);
        assert_eq!(files[2].rows[0].row(), 5);

        let mut by_bytes = Splitter::new(100, (one.len() * 3) as u64);
        let mut files = Vec::new();
        for n in 1..=7 {
            files.extend(by_bytes.push("m", one.clone(), row(n), 0.0));
        }
        files.extend(by_bytes.finish());
        let sizes: Vec<usize> = files.iter().map(|f| f.rows.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(files
            .iter()
            .all(|f| f.content.len() as u64 <= (one.len() * 3) as u64));
        assert!(!by_bytes_fits(one.len()));
    }

    #[test]
    fn each_file_holds_one_models_lines_and_few_are_open_at_once() {
        let line_of = |m: &str| line("x", format!(r#"{{"model":"{m}"}}"#).as_bytes());
        let model_of = |file: &InputFile| -> Vec<String> {
            let text = String::from_utf8(file.content.clone()).unwrap();
            let mut models: Vec<String> = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["body"]["model"].as_str().unwrap().to_string()
                })
                .collect();
            models.dedup();
            models
        };
        // Two models alternating, files of 3.
        let mut two = Splitter::new(3, u64::MAX);
        let mut files = Vec::new();
        for n in 1..=10 {
            let m = if n % 2 == 0 { "a" } else { "b" };
            files.extend(two.push(m, line_of(m), row(n), 0.0));
        }
        files.extend(two.finish());
        let shape: Vec<(Vec<String>, usize)> =
            files.iter().map(|f| (model_of(f), f.rows.len())).collect();
        let one = |m: &str, n| (vec![m.to_string()], n);
        assert_eq!(shape, [one("b", 3), one("a", 3), one("a", 2), one("b", 2)]);
        // More models than OPEN_FILES: the fullest open file goes first; every line once.
        let mut many = Splitter::new(100, u64::MAX);
        let mut files = Vec::new();
        let models: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        for n in 0..200u64 {
            let m = &models[(n * n % 20) as usize];
            files.extend(many.push(m, line_of(m), row(n), 0.0));
            assert!(many.open.len() <= OPEN_FILES);
        }
        files.extend(many.finish());
        assert!(files.iter().all(|f| model_of(f).len() == 1));
        let mut rows: Vec<u64> = files
            .iter()
            .flat_map(|f| f.rows.iter().map(|r| r.row()))
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..200).collect::<Vec<_>>());
    }

    fn by_bytes_fits(len: usize) -> bool {
        Splitter::new(1, (len - 1) as u64).fits(len)
    }
}
