//! `promptbatch cancel OUTPUT`: cancel every batch the state names that is still running.

use super::client::BatchClient;
use super::state;
use super::state::State;
use crate::api::ApiClient;
use crate::error::Error;
use crate::events::notice;

/// `promptbatch cancel OUTPUT`: cancels every batch the state of OUTPUT names that is still
/// running. Returns how many were cancelled. The state is kept: a later run collects what the
/// batches finished and submits their other rows again.
pub async fn cancel(
    output: &std::path::Path,
    endpoint: &crate::api::EndpointOptions,
) -> Result<u64, Error> {
    if !state::path_for(output).exists() {
        return Err(Error::Config(format!(
            "{} does not exist: no batch of {} is known (nothing to cancel)",
            state::path_for(output).display(),
            output.display()
        )));
    }
    // The run that collects these batches holds this lock and writes the state too.
    let lock = crate::output::lock::OutputLock::acquire(output).map_err(|e| {
        Error::Config(format!(
            "{e}\nto cancel its batches, stop that run first (Ctrl-C: the batches keep running), then cancel"
        ))
    })?;
    let state_path = state::path_for(lock.path());
    let Some(mut state) = State::load(&state_path)? else {
        return Err(Error::Config(format!(
            "{} does not exist: no batch of {} is known (nothing to cancel)",
            state_path.display(),
            output.display()
        )));
    };
    let options = crate::api::ClientOptions {
        concurrency: 1,
        timeout: endpoint.timeout,
        connect_timeout: endpoint.connect_timeout,
        ca_certs: endpoint.ca_certs.clone(),
    };
    let api = ApiClient::new(&endpoint.base_url, endpoint.key()?, &options)?;
    let shown = api.scrub(api.api_base().as_str());
    if shown != state.endpoint {
        return Err(Error::Config(format!(
            "the batches of {} were submitted to {}, not to {shown}: pass --base-url {}",
            output.display(),
            state.endpoint,
            state.endpoint
        )));
    }
    let client = BatchClient::new(&api, crate::api::retry::RetryPolicy::default());
    let mut cancelled = 0;
    let unknown: Vec<String> = state
        .batches
        .iter()
        .filter(|b| state.maybe_created(b))
        .filter_map(|b| b.input_file_id.clone())
        .collect();
    for file in unknown {
        notice!(
            "the uploaded file {file} may have a batch (its create got no answer): the next `run --via batch` looks for it, or cancel the batch of {file} at the provider"
        );
    }
    for entry in &mut state.batches {
        let Some(id) = &entry.batch_id else { continue };
        let batch = client.get(id).await?;
        if batch.is_final() {
            continue;
        }
        let batch = client.cancel(id).await?;
        notice!("batch {id}: {} ({} rows)", batch.status, entry.rows.len());
        entry.status = batch.status;
        cancelled += 1;
    }
    state.save(&state_path)?;
    Ok(cancelled)
}
