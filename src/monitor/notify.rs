//! `--notify-url URL`: one JSON POST with the summary when a run ends, however it ends. (To be
//! written.)

use crate::job::Job;
use crate::progress::Summary;

/// Posts the summary of the run to `url`.
pub(crate) async fn send(url: &str, opts: &Job, summary: &Summary) {
    let _ = (url, opts, summary);
}

/// Posts that the run failed with `error` to `url`.
pub(crate) async fn send_failure(url: &str, opts: &Job, error: &crate::error::Error) {
    let _ = (url, opts, error);
}
