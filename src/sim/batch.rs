//! The simulator's OpenAI Batch API: `POST /v1/files` (multipart, `purpose=batch`),
//! `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches` (newest first),
//! `GET /v1/batches/{id}` and `POST /v1/batches/{id}/cancel`.
//!
//! A batch is `validating`, then `in_progress` until `batch_time` after its creation, then
//! `completed`: each input line is answered as `POST /v1/chat/completions` would answer it (the
//! same deterministic completion, `#sim:status=NNN` and `#sim:quota` directives included,
//! `#sim:fail=N` failing the first N batches that carry the line's body with a 503),
//! 200 answers into the output file and the others into the error file, in the documented line
//! shape `{id, custom_id, response: {status_code, request_id, body}, error}`. On request the first
//! `batch_fail` batches created end `failed` (nothing answered, `errors` says why) and the first
//! `batch_expire` ones end `expired` (the first half of their lines answered, the rest in the
//! error file with the code `batch_expired`); the first `batch_cut_downloads` downloads send half
//! the announced bytes and close the connection, the first `batch_bad_downloads` answer 200
//! with an HTML page; the first `batch_drop_creates` creates make the batch and drop the
//! connection unanswered; `batch_no_list` answers 404 to the list. A prompt with
//! `#sim:batch-twice` gets a second, different answer line, one with `#sim:batch-also-error`
//! an error line too, one with `#sim:batch-foreign` an answer under a `custom_id` the batch did
//! not hold. A batch whose lines name more than one model
//! ends `failed` (`mismatched_model`), as the providers refuse it. A cancelled batch answers
//! nothing. Everything is
//! kept in memory; `/_sim/stats` reports files and batches created and output downloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{json, Value};

use super::{completion_body, json_response, Directives, Dropped, Sim, SimResponse};
use crate::api::messages::last_user_text;
use crate::util::fingerprint::fnv1a;

/// Whether a path belongs to the Batch API.
pub(super) fn serves(path: &str) -> bool {
    path.ends_with("/files")
        || path.contains("/files/")
        || path.ends_with("/batches")
        || path.contains("/batches/")
}

/// Files and batches held by one simulator.
#[derive(Default)]
pub(super) struct Store {
    files: Mutex<HashMap<String, Bytes>>,
    batches: Mutex<Vec<SimBatch>>,
    files_created: AtomicU64,
    batches_created: AtomicU64,
    downloads: AtomicU64,
    cancels: AtomicU64,
    /// `POST /v1/batches` received (for `batch_drop_creates`).
    creates: AtomicU64,
    /// Ids given out so far (files and batches share the counter).
    next_id: AtomicU64,
}

/// One batch.
struct SimBatch {
    id: String,
    input_file_id: String,
    /// 1-based creation order (decides expiry and failure on request).
    ordinal: u64,
    created: Instant,
    created_at: u64,
    total: u64,
    metadata: Value,
    /// Set once the batch reached its final status.
    end: Option<End>,
}

/// How a batch ended.
struct End {
    status: &'static str,
    at: u64,
    completed: u64,
    failed: u64,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    errors: Option<Value>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn not_found(what: &str) -> SimResponse {
    json_response(
        404,
        &json!({"error": {"message": format!("No such {what}"), "type": "invalid_request_error", "code": "not_found"}}),
    )
}

fn bad_request(message: &str) -> SimResponse {
    json_response(
        400,
        &json!({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_request"}}),
    )
}

impl Store {
    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Relaxed) + 1;
        format!("{prefix}{n:06}")
    }

    fn add_file(&self, content: Bytes) -> String {
        let id = self.new_id("file-sim");
        if let Ok(mut files) = self.files.lock() {
            files.insert(id.clone(), content);
        }
        id
    }

    /// The counters `/_sim/stats` reports under `batch`.
    pub(super) fn stats(&self) -> Value {
        let batches: Vec<Value> = self
            .batches
            .lock()
            .map(|b| {
                b.iter()
                    .map(|b| {
                        json!({
                            "id": b.id,
                            "input_file_id": b.input_file_id,
                            "total": b.total,
                            "status": b.end.as_ref().map_or("in_progress", |e| e.status),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "files_created": self.files_created.load(Relaxed),
            "batches_created": self.batches_created.load(Relaxed),
            "downloads": self.downloads.load(Relaxed),
            "cancels": self.cancels.load(Relaxed),
            "batches": batches,
        })
    }
}

impl Sim {
    /// Answers one Batch API request.
    pub(super) async fn batch(&self, req: Request<Incoming>) -> Result<SimResponse, Dropped> {
        if let Some(refused) = self.refuse_key(&req) {
            return Ok(refused);
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|_| Dropped)?
            .to_bytes();
        let after = |marker: &str| path.split_once(marker).map(|(_, rest)| rest.to_string());
        Ok(match (method, after("/files/"), after("/batches/")) {
            (Method::POST, None, None) if path.ends_with("/files") => {
                self.upload(&content_type, &body)
            }
            (Method::GET, Some(rest), None) => match rest.strip_suffix("/content") {
                Some(id) => self.file_content(id),
                None => not_found("file"),
            },
            (Method::POST, None, None) if path.ends_with("/batches") => {
                let created = self.create(&body);
                let ordinal = self.batches.creates.fetch_add(1, Relaxed) + 1;
                if ordinal <= u64::from(self.options.batch_drop_creates) {
                    return Err(Dropped);
                }
                created
            }
            (Method::GET, None, None) if path.ends_with("/batches") => {
                if self.options.batch_no_list {
                    not_found("route")
                } else {
                    self.list()
                }
            }
            (Method::GET, None, Some(id)) => self.batch_object(&id),
            (Method::POST, None, Some(rest)) => match rest.strip_suffix("/cancel") {
                Some(id) => self.cancel(id),
                None => not_found("batch"),
            },
            _ => not_found("route"),
        })
    }

    /// `POST /v1/files`: a multipart form with `purpose=batch` and `file`.
    fn upload(&self, content_type: &str, body: &[u8]) -> SimResponse {
        let Some(boundary) = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
        else {
            return bad_request("expected multipart/form-data with a boundary");
        };
        let parts = multipart_parts(body, &boundary);
        let field = |name: &str| {
            parts
                .iter()
                .find(|(headers, _)| headers.contains(&format!("name=\"{name}\"")))
                .map(|(_, content)| content.clone())
        };
        if field("purpose").as_deref() != Some(b"batch".as_slice()) {
            return bad_request("`purpose` must be `batch`");
        }
        let Some(content) = field("file") else {
            return bad_request("the form has no `file` part");
        };
        let bytes = content.len();
        let id = self.batches.add_file(Bytes::from(content));
        self.batches.files_created.fetch_add(1, Relaxed);
        json_response(
            200,
            &json!({"id": id, "object": "file", "bytes": bytes, "created_at": unix_now(), "filename": "batch.jsonl", "purpose": "batch"}),
        )
    }

    /// `GET /v1/files/{id}/content`.
    fn file_content(&self, id: &str) -> SimResponse {
        let content = self
            .batches
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(id).cloned());
        match content {
            Some(content) => {
                let download = self.batches.downloads.fetch_add(1, Relaxed) + 1;
                let mut response = json_response(200, &Value::Null);
                if download <= u64::from(self.options.batch_bad_downloads) {
                    *response.body_mut() = Full::new(Bytes::from_static(
                        b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n",
                    ));
                } else if download <= u64::from(self.options.batch_cut_downloads) {
                    // The whole length announced, half of it sent: hyper closes the connection
                    // when the body ends short.
                    response.headers_mut().insert(
                        "content-length",
                        content.len().to_string().parse().expect("digits"),
                    );
                    *response.body_mut() = Full::new(content.slice(..content.len() / 2));
                } else {
                    *response.body_mut() = Full::new(content);
                }
                response.headers_mut().insert(
                    "content-type",
                    "application/octet-stream".parse().expect("static header"),
                );
                response
            }
            None => not_found("file"),
        }
    }

    /// `POST /v1/batches`.
    fn create(&self, body: &[u8]) -> SimResponse {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body is not JSON");
        };
        let input_file_id = request["input_file_id"].as_str().unwrap_or("").to_string();
        if request["endpoint"].as_str() != Some("/v1/chat/completions") {
            return bad_request("`endpoint` must be /v1/chat/completions");
        }
        if request["completion_window"].as_str() != Some("24h") {
            return bad_request("`completion_window` must be 24h");
        }
        let total = match self.batches.files.lock() {
            Ok(files) => match files.get(&input_file_id) {
                Some(content) => content
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u64,
                None => return not_found("file"),
            },
            Err(_) => return not_found("file"),
        };
        let id = self.batches.new_id("batch_sim");
        let ordinal = self.batches.batches_created.fetch_add(1, Relaxed) + 1;
        let batch = SimBatch {
            id,
            input_file_id,
            ordinal,
            created: Instant::now(),
            created_at: unix_now(),
            total,
            metadata: request.get("metadata").cloned().unwrap_or(Value::Null),
            end: None,
        };
        let object = self.describe(&batch);
        if let Ok(mut batches) = self.batches.batches.lock() {
            batches.push(batch);
        }
        json_response(200, &object)
    }

    /// `GET /v1/batches`: every batch, newest first.
    fn list(&self) -> SimResponse {
        let ids: Vec<String> = self
            .batches
            .batches
            .lock()
            .map(|b| b.iter().rev().map(|b| b.id.clone()).collect())
            .unwrap_or_default();
        let data: Vec<Value> = ids.iter().filter_map(|id| self.advance(id)).collect();
        json_response(
            200,
            &json!({"object": "list", "data": data, "has_more": false}),
        )
    }

    /// `GET /v1/batches/{id}`.
    fn batch_object(&self, id: &str) -> SimResponse {
        match self.advance(id) {
            Some(object) => json_response(200, &object),
            None => not_found("batch"),
        }
    }

    /// `POST /v1/batches/{id}/cancel`.
    fn cancel(&self, id: &str) -> SimResponse {
        let Ok(mut batches) = self.batches.batches.lock() else {
            return not_found("batch");
        };
        let Some(batch) = batches.iter_mut().find(|b| b.id == id) else {
            return not_found("batch");
        };
        if batch.end.is_none() {
            self.batches.cancels.fetch_add(1, Relaxed);
            batch.end = Some(End {
                status: "cancelled",
                at: unix_now(),
                completed: 0,
                failed: 0,
                output_file_id: None,
                error_file_id: None,
                errors: None,
            });
        }
        json_response(200, &self.describe(batch))
    }

    /// The batch's object, after ending it if its time has come.
    fn advance(&self, id: &str) -> Option<Value> {
        let (due, ordinal, input_file_id) = {
            let batches = self.batches.batches.lock().ok()?;
            let batch = batches.iter().find(|b| b.id == id)?;
            let due = batch.end.is_none() && batch.created.elapsed() >= self.options.batch_time;
            (due, batch.ordinal, batch.input_file_id.clone())
        };
        if due {
            let end = self.finish(ordinal, &input_file_id);
            let mut batches = self.batches.batches.lock().ok()?;
            let batch = batches.iter_mut().find(|b| b.id == id)?;
            // A cancel that came in meanwhile wins.
            batch.end.get_or_insert(end);
        }
        let batches = self.batches.batches.lock().ok()?;
        let batch = batches.iter().find(|b| b.id == id)?;
        Some(self.describe(batch))
    }

    /// Processes a batch's input file: its final status and its output and error files.
    fn finish(&self, ordinal: u64, input_file_id: &str) -> End {
        let now = unix_now();
        if ordinal <= u64::from(self.options.batch_fail) {
            return End::failed(
                now,
                json!({"object": "list", "data": [{"code": "simulated_failure", "message": "batch failed on request (--batch-fail)", "param": null, "line": null}]}),
            );
        }
        let expire = ordinal <= u64::from(self.options.batch_expire);
        let input = self
            .batches
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(input_file_id).cloned())
            .unwrap_or_default();
        let lines: Vec<&[u8]> = input
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(errors) = mixed_models(&lines) {
            return End::failed(now, errors);
        }
        let answered = if expire { lines.len() / 2 } else { lines.len() };
        let (mut output, mut errors) = (Vec::new(), Vec::new());
        let (mut completed, mut failed) = (0, 0);
        for (i, line) in lines.iter().enumerate() {
            let request: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
            let custom_id = request.get("custom_id").cloned().unwrap_or(Value::Null);
            let line_id = format!("batch_req_{:016x}", fnv1a(line));
            if i >= answered {
                let entry = json!({"id": line_id, "custom_id": custom_id, "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}});
                push_line(&mut errors, &entry);
                failed += 1;
                continue;
            }
            let body = request.get("body").cloned().unwrap_or(Value::Null);
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            let (status, answer) = self.answer_line(&body, &raw);
            let entry = json!({
                "id": line_id,
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": format!("req_{:016x}", fnv1a(&raw)), "body": answer},
                "error": null,
            });
            if status == 200 {
                push_line(&mut output, &entry);
                completed += 1;
                contradict(line, &entry, &mut output, &mut errors);
            } else {
                push_line(&mut errors, &entry);
                failed += 1;
            }
        }
        let output_file_id = (!output.is_empty()).then(|| self.batches.add_file(output.into()));
        let error_file_id = (!errors.is_empty()).then(|| self.batches.add_file(errors.into()));
        End {
            status: if expire { "expired" } else { "completed" },
            at: now,
            completed,
            failed,
            output_file_id,
            error_file_id,
            errors: None,
        }
    }

    /// The batch object as the API shows it.
    fn describe(&self, batch: &SimBatch) -> Value {
        let (status, counts) = match &batch.end {
            Some(end) => (end.status, (end.completed, end.failed)),
            None if batch.created.elapsed() < self.options.batch_time / 4 => ("validating", (0, 0)),
            None => ("in_progress", (0, 0)),
        };
        let at = |name: &str| match &batch.end {
            Some(end) if end.status == name => json!(end.at),
            _ => Value::Null,
        };
        json!({
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": batch.end.as_ref().and_then(|e| e.errors.clone()),
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.end.as_ref().and_then(|e| e.output_file_id.clone()),
            "error_file_id": batch.end.as_ref().and_then(|e| e.error_file_id.clone()),
            "created_at": batch.created_at,
            "expires_at": batch.created_at + 86_400,
            "completed_at": at("completed"),
            "failed_at": at("failed"),
            "expired_at": at("expired"),
            "cancelled_at": at("cancelled"),
            "request_counts": {"total": batch.total, "completed": counts.0, "failed": counts.1},
            "metadata": batch.metadata,
        })
    }
}

impl Sim {
    /// How one request of a batch is answered: the live answer, without latency or random
    /// faults; `#sim:fail=N[:STATUS]` fails the first N batches that carry this exact body, and
    /// `#sim:prose=N` answers prose in the first N (as a live request would be answered).
    fn answer_line(&self, body: &Value, raw: &[u8]) -> (u16, Value) {
        let (status, mut answer) = answer_line(body, raw);
        if status != 200 {
            return (status, answer);
        }
        self.mark(&mut answer);
        // The lines of a batch are answered one after the other: each finds the cache as the
        // lines before it left it.
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let prefix = self.prefix_on_arrival(body, messages);
        self.cache_usage(&mut answer, prefix);
        let prompt = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| last_user_text(m))
            .unwrap_or_default();
        let directives = Directives::parse(&prompt);
        if directives.fail > 0 {
            if let Ok(mut counts) = self.fail_counts.lock() {
                let seen = counts.entry(fnv1a(raw)).or_insert(0);
                if *seen < directives.fail {
                    *seen += 1;
                    let status = directives.fail_status;
                    return (
                        status,
                        json!({"error": {"message": "simulated failure (#sim:fail)", "type": "server_error", "code": "overloaded"}}),
                    );
                }
            }
        }
        // A poisoned count (a panicked handler) answers as asked, without the prose.
        let _ = self.prose_first(&mut answer, raw, &directives);
        (status, answer)
    }
}

impl End {
    /// A batch that failed at `at` without answering anything, `errors` saying why.
    fn failed(at: u64, errors: Value) -> Self {
        End {
            status: "failed",
            at,
            completed: 0,
            failed: 0,
            output_file_id: None,
            error_file_id: None,
            errors: Some(errors),
        }
    }
}

/// A batch runs one model, as at the providers: the `errors` of a file whose lines name
/// several (the first line that differs), or `None`.
fn mixed_models(lines: &[&[u8]]) -> Option<Value> {
    let model_of = |line: &[u8]| -> Option<String> {
        let value: Value = serde_json::from_slice(line).ok()?;
        value["body"]["model"].as_str().map(str::to_string)
    };
    let first = model_of(lines.first()?)?;
    let (n, other) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| model_of(l).filter(|m| *m != first).map(|m| (i + 1, m)))?;
    Some(json!({"object": "list", "data": [{
        "code": "mismatched_model",
        "message": format!("all requests of a batch must use the same model: line {n} uses `{other}`, line 1 `{first}`"),
        "param": "body.model",
        "line": n,
    }]}))
}

/// How one request of a batch is answered: the live answer, without latency or random faults.
fn answer_line(body: &Value, raw: &[u8]) -> (u16, Value) {
    let Some(messages) = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return (
            400,
            json!({"error": {"message": "`messages` must be a non-empty array", "type": "invalid_request_error", "code": "invalid_messages"}}),
        );
    };
    let prompt = last_user_text(messages);
    let directives = Directives::parse(&prompt);
    if directives.quota {
        return (
            429,
            json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}}),
        );
    }
    if let Some(status) = directives.status {
        let message = format!("simulated HTTP {status} (requested by #sim:status)");
        let kind = directives
            .kind
            .clone()
            .unwrap_or_else(|| "invalid_request_error".into());
        return (
            status,
            json!({"error": {"message": message, "type": kind, "code": "simulated"}}),
        );
    }
    (200, completion_body(body, messages, &prompt, raw))
}

/// Lines that contradict an answered line, on request of its prompt: `#sim:batch-twice` adds
/// a second line for its `custom_id` with another answer to the output file,
/// `#sim:batch-also-error` a 500 line for it to the error file, `#sim:batch-foreign` an answer
/// line under a `custom_id` the batch did not hold (as faulty servers do).
fn contradict(line: &[u8], entry: &Value, output: &mut Vec<u8>, errors: &mut Vec<u8>) {
    let has = |directive: &[u8]| find(line, directive).is_some();
    if has(b"#sim:batch-twice") {
        let mut second = entry.clone();
        second["id"] = json!(format!("{}-2", entry["id"].as_str().unwrap_or_default()));
        second["response"]["body"]["choices"][0]["message"]["content"] =
            json!("a second answer (#sim:batch-twice)");
        push_line(output, &second);
    }
    if has(b"#sim:batch-foreign") {
        let mut stranger = entry.clone();
        stranger["id"] = json!(format!("{}-f", entry["id"].as_str().unwrap_or_default()));
        stranger["custom_id"] = json!(format!(
            "{}-not-in-this-batch",
            entry["custom_id"].as_str().unwrap_or_default()
        ));
        push_line(output, &stranger);
    }
    if has(b"#sim:batch-also-error") {
        let error = json!({
            "id": format!("{}-e", entry["id"].as_str().unwrap_or_default()),
            "custom_id": entry["custom_id"],
            "response": {"status_code": 500, "request_id": "req_error", "body": {"error": {"message": "simulated server error (#sim:batch-also-error)", "type": "server_error"}}},
            "error": null,
        });
        push_line(errors, &error);
    }
}

fn push_line(file: &mut Vec<u8>, entry: &Value) {
    file.extend_from_slice(entry.to_string().as_bytes());
    file.push(b'\n');
}

/// The parts of a multipart body: (headers, content) of each.
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut positions = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&body[from..], delimiter) {
        positions.push(from + at);
        from += at + delimiter.len();
    }
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        parts.push((headers, part[split + 4..].to_vec()));
    }
    parts
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        match haystack[at..=haystack.len() - needle.len()]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(offset) => {
                at += offset;
                if &haystack[at..at + needle.len()] == needle {
                    return Some(at);
                }
                at += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_split_on_the_boundary() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\nline1\nline2\n\r\n--XX--\r\n";
        let parts = multipart_parts(body, "XX");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, b"batch");
        assert!(parts[1].0.contains("name=\"file\""));
        assert_eq!(parts[1].1, b"line1\nline2\n");
    }

    #[test]
    fn a_line_is_answered_like_a_live_request() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let (status, answer) = answer_line(&body, b"x");
        assert_eq!(status, 200);
        assert_eq!(answer["choices"][0]["message"]["content"], "echo: hi");
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "x #sim:status=400"}]});
        assert_eq!(answer_line(&body, b"y").0, 400);
    }
}
