//! The Batch API over HTTP: upload an input file (`POST /files`, multipart, `purpose=batch`),
//! create a batch (`POST /batches`), read one (`GET /batches/{id}`) or the recent ones
//! (`GET /batches?limit=100`), cancel one, and stream a file to disk (`GET /files/{id}/content`).
//!
//! It rides on the run's [`ApiClient`]: the same base URL, key, trusted certificates, proxies and
//! timeout. Transient failures (5xx, 429, dropped connections) are retried with the run's
//! backoff; a 404 on `files` or `batches` (or a LiteLLM proxy's 500 "files_settings is not set")
//! means the provider has no Batch API and says so in one line. Every message has the key and the URL's user-info scrubbed.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::api::classify::{classify_status, one_line};
use crate::api::retry::RetryPolicy;
use crate::api::{ApiClient, FailureKind};
use crate::error::Error;

/// A batch as the API describes it (fields the run uses; others ignored, missing ones empty).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct BatchObject {
    pub id: String,
    pub status: String,
    pub input_file_id: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub expired_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub cancelled_at: Option<u64>,
    pub request_counts: Option<RequestCounts>,
    pub errors: Option<Value>,
}

/// `request_counts` of a batch.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(super) struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

impl BatchObject {
    /// Whether the batch reached a final status.
    pub(super) fn is_final(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "failed" | "expired" | "cancelled"
        )
    }

    /// When the batch reached its final status (unix seconds), if it says.
    pub(super) fn ended_at(&self) -> Option<u64> {
        self.completed_at
            .or(self.expired_at)
            .or(self.failed_at)
            .or(self.cancelled_at)
    }

    /// The batch's own `errors` (a failed batch says why), on one line.
    pub(super) fn errors_text(&self) -> Option<String> {
        let data = self.errors.as_ref()?.get("data")?.as_array()?;
        let texts: Vec<String> = data
            .iter()
            .filter_map(|e| {
                let message = e.get("message").and_then(Value::as_str)?;
                Some(match e.get("code").and_then(Value::as_str) {
                    Some(code) => format!("{message} ({code})"),
                    None => message.to_string(),
                })
            })
            .collect();
        (!texts.is_empty()).then(|| one_line(&texts.join("; ")))
    }
}

#[derive(Deserialize)]
struct FileObject {
    id: String,
}

#[derive(Deserialize)]
struct BatchList {
    #[serde(default)]
    data: Vec<BatchObject>,
    #[serde(default)]
    has_more: bool,
}

/// Pages of `GET batches` read at most when looking for a batch (100 batches each).
const MAX_LIST_PAGES: usize = 20;

/// The Batch API of the run's endpoint.
pub(super) struct BatchClient<'a> {
    api: &'a ApiClient,
    retry: RetryPolicy,
}

impl<'a> BatchClient<'a> {
    pub(super) fn new(api: &'a ApiClient, retry: RetryPolicy) -> Self {
        BatchClient { api, retry }
    }

    /// Uploads a Batch input file; returns its file id.
    pub(super) async fn upload(&self, content: Vec<u8>, name: &str) -> Result<String, Error> {
        let boundary = format!("promptbatch-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(content.len() + 400);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let answer = self
            .call(Method::POST, "files", Some((content_type, body.into())))
            .await?;
        let file: FileObject = parse(&answer, "POST files")?;
        Ok(file.id)
    }

    /// Creates a batch of the uploaded file `input_file_id`. An answer of 429 or 5xx (the
    /// server said no batch was made) is retried with the run's backoff; a request that got
    /// no whole answer (a dropped connection, a timeout, a body cut short) is not: the batch
    /// may exist, and a second create would pay for its rows twice ([`Created::Unknown`]).
    pub(super) async fn create(
        &self,
        input_file_id: &str,
        completion_window: &str,
        metadata: Value,
    ) -> Result<Created, Error> {
        let request = serde_json::json!({
            "input_file_id": input_file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": completion_window,
            "metadata": metadata,
        });
        let body: Bytes = request.to_string().into();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let sent = self
                .send(
                    Method::POST,
                    "batches",
                    Some(("application/json".into(), body.clone())),
                )
                .await;
            let failure = match sent {
                Ok(response) => match response.bytes().await {
                    Ok(answer) => {
                        return parse(&answer, "POST batches").map(|b| Created::Batch(Box::new(b)))
                    }
                    Err(e) => return Ok(Created::Unknown(self.api.scrub(&e.to_string()))),
                },
                Err(failure) => failure,
            };
            match failure {
                Attempt::Final(e) => return Err(e),
                Attempt::Unanswered(message) => return Ok(Created::Unknown(message)),
                Attempt::Transient(message) if attempts > self.retry.max_retries => {
                    return Err(Error::FatalApi(format!(
                        "POST {}: gave up after {attempts} attempts: {message}; the batch state is kept, re-run the same command to go on",
                        self.shown("batches")
                    )))
                }
                Attempt::Transient(message) => {
                    tracing::warn!("POST {}: {message}; retrying", self.shown("batches"));
                    tokio::time::sleep(self.retry.backoff(attempts)).await;
                }
            }
        }
    }

    /// The batch `id` now.
    pub(super) async fn get(&self, id: &str) -> Result<BatchObject, Error> {
        let answer = self
            .call(Method::GET, &format!("batches/{id}"), None)
            .await?;
        parse(&answer, "GET batches/{id}")
    }

    /// The batches created since `since` (unix seconds; the API lists newest first, so the
    /// listing stops at the first older one), at most [`MAX_LIST_PAGES`] pages of 100; `None`
    /// when the server cannot list batches (404 or 405 to `GET batches`).
    pub(super) async fn created_since(
        &self,
        since: u64,
    ) -> Result<Option<Vec<BatchObject>>, Error> {
        let mut found = Vec::new();
        let mut path = "batches?limit=100".to_string();
        for _ in 0..MAX_LIST_PAGES {
            let answer = match self.call(Method::GET, &path, None).await {
                Err(Error::FatalApi(m)) if m == NO_LISTING => return Ok(None),
                other => other?,
            };
            let list: BatchList = parse(&answer, "GET batches")?;
            let last = list.data.last().map(|b| b.id.clone());
            let older = list
                .data
                .iter()
                .any(|b| b.created_at.is_some_and(|at| at < since));
            found.extend(
                list.data
                    .into_iter()
                    .filter(|b| b.created_at.is_none_or(|at| at >= since)),
            );
            match last {
                Some(last) if list.has_more && !older => {
                    path = format!("batches?limit=100&after={last}")
                }
                _ => break,
            }
        }
        Ok(Some(found))
    }

    /// Cancels the batch `id`.
    pub(super) async fn cancel(&self, id: &str) -> Result<BatchObject, Error> {
        let answer = self
            .call(Method::POST, &format!("batches/{id}/cancel"), None)
            .await?;
        parse(&answer, "POST batches/{id}/cancel")
    }

    /// Streams the content of the file `id` (an output or error file) to the end of `file`,
    /// chunk by chunk (memory: one chunk); returns the bytes appended. A download cut short is
    /// retried from the start: the file is first cut back to where this download began.
    pub(super) async fn download_to(&self, id: &str, file: &File) -> Result<u64, Error> {
        let path = format!("files/{id}/content");
        let start = (&*file)
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("a batch download's temporary file", e))?;
        self.retrying(&Method::GET, &path, || async {
            let io = |e| Attempt::Final(Error::io("a batch download's temporary file", e));
            file.set_len(start).map_err(io)?;
            (&*file).seek(SeekFrom::Start(start)).map_err(io)?;
            let mut response = self.send(Method::GET, &path, None).await?;
            let mut written = 0u64;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.cut_short(response.status(), e))?
            {
                (&*file).write_all(&chunk).map_err(io)?;
                written += chunk.len() as u64;
            }
            Ok(written)
        })
        .await
    }

    /// One call, retried on transient failures with the run's backoff; the whole answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, Bytes)>,
    ) -> Result<Bytes, Error> {
        self.retrying(&method, path, || async {
            let response = self.send(method.clone(), path, body.clone()).await?;
            let status = response.status();
            response
                .bytes()
                .await
                .map_err(|e| self.cut_short(status, e))
        })
        .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed transiently more than
    /// the run's retries (waiting the run's backoff between attempts).
    async fn retrying<T, F, Fut>(
        &self,
        method: &Method,
        path: &str,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient(message) | Attempt::Unanswered(message))
                    if attempts > self.retry.max_retries =>
                {
                    return Err(Error::FatalApi(format!(
                        "{method} {}: gave up after {attempts} attempts: {message}; the batch state is kept, re-run the same command to go on",
                        self.shown(path)
                    )))
                }
                Err(Attempt::Transient(message) | Attempt::Unanswered(message)) => {
                    tracing::warn!("{method} {}: {message}; retrying", self.shown(path));
                    tokio::time::sleep(self.retry.backoff(attempts)).await;
                }
            }
        }
    }

    /// An answer's body that could not be read to its end: worth another attempt.
    fn cut_short(&self, status: reqwest::StatusCode, e: reqwest::Error) -> Attempt {
        Attempt::Transient(self.api.scrub(&format!("HTTP {}: {e}", status.as_u16())))
    }

    /// Sends one request; a success's response (its body not read yet), else how it failed.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, Bytes)>,
    ) -> Result<reqwest::Response, Attempt> {
        let (http, auth, timeout) = self.api.parts();
        let url = self.api.api_base().join(path).map_err(|e| {
            Attempt::Final(Error::Config(format!("bad Batch API path {path}: {e}")))
        })?;
        let mut request = http
            .request(method.clone(), url)
            .header(AUTHORIZATION, auth)
            .timeout(timeout);
        if let Some((content_type, body)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let failure = self.api.classify_transport(&e);
                return Err(match failure.kind {
                    FailureKind::Fatal => Attempt::Final(Error::FatalApi(failure.message)),
                    _ => Attempt::Unanswered(failure.message),
                });
            }
        };
        self.api.mark_answered();
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.cut_short(status, e))?;
        if path.starts_with("batches?") && matches!(status.as_u16(), 404 | 405) {
            return Err(Attempt::Final(Error::FatalApi(NO_LISTING.into())));
        }
        if no_batch_api(status.as_u16(), path, &bytes) {
            return Err(Attempt::Final(Error::Config(format!(
                "{} answered {} to {method} {path}: this endpoint has no Batch API (files and batches); run with --via live instead",
                self.api.scrub(self.api.api_base().as_str()),
                status.as_u16()
            ))));
        }
        let failure = classify_status(status.as_u16(), &headers, &bytes);
        let message = self.api.scrub(&failure.message);
        match failure.kind {
            FailureKind::Transient => Err(Attempt::Transient(message)),
            _ => Err(Attempt::Final(Error::FatalApi(format!(
                "{method} {}: {message}",
                self.shown(path)
            )))),
        }
    }

    /// `{base}{path}` as it may be shown.
    fn shown(&self, path: &str) -> String {
        self.api.scrub(&format!("{}{path}", self.api.api_base()))
    }
}

/// What [`BatchClient::created_since`] gets back from a server without `GET batches` (its
/// callers get `None`).
const NO_LISTING: &str = "GET batches is not served";

/// What [`BatchClient::create`] knows of the batch it asked for.
pub(super) enum Created {
    Batch(Box<BatchObject>),
    /// The request got no whole answer (the message says why): the batch may or may not exist.
    Unknown(String),
}

/// How one attempt failed.
enum Attempt {
    /// The server answered that it did nothing (429, 5xx): try again after a backoff.
    Transient(String),
    /// No whole answer came (the request may have been carried out): try again after a
    /// backoff, unless trying again could do it twice.
    Unanswered(String),
    /// Stop: the error says what to do.
    Final(Error),
}

/// Whether an answer says the endpoint has no Batch API: 404 on the `files` or `batches`
/// collection, 405, or a LiteLLM proxy without `files_settings` (it answers 500 "files_settings
/// is not set" to every files and batches call).
fn no_batch_api(status: u16, path: &str, body: &[u8]) -> bool {
    const LITELLM_NO_FILES: &[u8] = b"files_settings is not set";
    let collection = path.starts_with("files") || path.starts_with("batches");
    status == 404 && collection && !path.contains('/')
        || status == 405
        || collection
            && body
                .windows(LITELLM_NO_FILES.len())
                .any(|w| w == LITELLM_NO_FILES)
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::FatalApi(format!(
            "the answer to {what} is not what the Batch API returns ({e}); is --base-url an OpenAI-compatible API with a Batch API? Otherwise run with --via live"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::no_batch_api;

    #[test]
    fn answers_that_mean_no_batch_api() {
        assert!(no_batch_api(404, "files", b""));
        assert!(no_batch_api(404, "batches", b"{}"));
        assert!(
            !no_batch_api(404, "batches/batch_1", b"{}"),
            "an unknown batch is not that"
        );
        assert!(no_batch_api(405, "batches/batch_1/cancel", b""));
        // LiteLLM 1.108.7 without `files_settings` in its config.
        let litellm = br#"{"error":{"message":"files_settings is not set, set it on your config.yaml file.","type":"internal_server_error","param":null,"code":"500"}}"#;
        assert!(no_batch_api(500, "files", litellm));
        assert!(!no_batch_api(500, "files", b"Internal Server Error"));
    }
}
