//! What a run checks and takes from the batch state before it starts, whichever transport it
//! uses: a live run refused over running batches, the spend a `--fallback live` row carries,
//! the files beside the output that `report` names.

use super::options::Via;
use super::state::{Entry, State};
use super::{state, unmatched};
use crate::api::ApiClient;
use crate::error::Error;
use crate::events::notice;
use crate::input::RowSet;
use crate::job::Job;
use crate::money::spent::Carried;

/// A live run on an output whose batch state holds no batch but paid answers that failed
/// `--json-schema` (an earlier batch run stopped before resending their rows): the live
/// records of those rows take that spend, as after `--fallback live`; rows with a record
/// (`done`) hold theirs already.
pub(crate) fn carried_into_live_run(
    opts: &Job,
    output: &std::path::Path,
    done: Option<&RowSet>,
) -> Result<Carried, Error> {
    if opts.via != Via::Live {
        return Ok(Carried::default());
    }
    let Some(state) = State::load(&state::path_for(output))? else {
        return Ok(Carried::default());
    };
    if state.simulated || !state.same_models(&opts.request.models) {
        return Ok(Carried::default());
    }
    let mut spent = state.spent;
    if let Some(done) = done {
        spent.retain(|unit, _| !done.contains(*unit));
    }
    Ok(Carried::new(
        spent.clone(),
        spent,
        opts.request.models_per_row(),
    ))
}

/// The rows a `--via batch` state beside `output` holds, for a run's dedup plan (`reuse`): a
/// row in one of its batches (claimed by identity, the rule a submission pass uses), or one it
/// keeps a retry or a paid answer for. `None` when there is no state. The plan never copies an
/// answer into such a row (the batch will answer it) and counts it as its request's first row.
pub(crate) fn rows_held(
    output: &std::path::Path,
) -> Result<Option<crate::reuse::plan::Held>, Error> {
    let Some(state) = State::load(&state::path_for(output))? else {
        return Ok(None);
    };
    let models = state.models_per_row();
    let mut claims = super::claims::Claims::new();
    for entry in &state.batches {
        for row in &entry.rows {
            claims.add(row.id(), row.fingerprint(), ());
        }
    }
    let mut units = RowSet::default();
    for &unit in state.retry.keys().chain(state.spent.keys()) {
        units.insert(unit);
    }
    Ok(Some(Box::new(move |row: &crate::input::Row| {
        let unit = crate::input::models::unit(row.row, u64::from(row.slot), models);
        let custom_id = super::split::custom_id(&row.id, row.slot, models);
        units.contains(unit)
            || claims
                .claim(&custom_id, row.explicit_id, row.fingerprint())
                .is_some()
    })))
}

/// Paid `--via batch` work beside an output that no record holds (yet), for `report`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Beside {
    /// Batches the state names that may be running (not collected yet), and their rows.
    pub batches_running: u64,
    pub rows_in_batches: u64,
    /// Paid answers kept in `OUTPUT.unmatched.jsonl` and what they cost (priced ones).
    pub unmatched_answers: u64,
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub unmatched_usd: f64,
    pub unmatched_file: String,
}

/// What [`Beside`] finds next to `output`.
pub fn beside(output: &std::path::Path) -> Result<Beside, Error> {
    let mut found = Beside::default();
    if let Some(state) = State::load(&state::path_for(output))? {
        for entry in state.batches.iter().filter(|b| state.may_have_batch(b)) {
            if !state.simulated {
                found.batches_running += 1;
                found.rows_in_batches += entry.rows.len() as u64;
            }
        }
    }
    let kept = unmatched::path_for(output);
    (found.unmatched_answers, found.unmatched_usd) = unmatched::totals(&kept)?;
    found.unmatched_file = kept.display().to_string();
    Ok(found)
}

/// After a live run completed (the live part of a `--fallback live` run, or a live run on an
/// output with a batch state): every row has a record, and those the batch part paid failed
/// `--json-schema` answers for hold them, so the state file forgets that spend and the rows to
/// retry (and goes, once empty). Spend no live attempt took is said.
pub(crate) fn forget_carried_spend(
    output: &std::path::Path,
    carried: &Carried,
) -> Result<(), Error> {
    let path = state::path_for(output);
    let Some(mut state) = State::load(&path)? else {
        return Ok(());
    };
    let (rows, left) = carried.left();
    Carried::say_unrecorded(rows, &left);
    state.spent.clear();
    // Every row has a record: no row is left to send again, and an uploaded file whose
    // batch was never created will not be.
    let with_batch: Vec<bool> = state
        .batches
        .iter()
        .map(|b| state.may_have_batch(b))
        .collect();
    let mut keep = with_batch.into_iter();
    state.batches.retain(|_| keep.next().unwrap_or(true));
    if state.batches.is_empty() {
        state.retry.clear();
    }
    state.save(&path)
}

/// Checks, before the resume plan touches the output, that this run may go on with the batch
/// state an earlier run left beside it: a live run never starts while batches of the output
/// may be running (it would buy their rows a second time and the batch answers would be
/// thrown away), and a batch run collects only batches it can (same endpoint, same `--model`
/// list, not a `--dry-run` over real batches).
pub(crate) fn check_state_before_run(
    opts: &Job,
    output: &std::path::Path,
    client: &ApiClient,
) -> Result<(), Error> {
    let path = state::path_for(output);
    let Some(state) = State::load(&path)? else {
        return Ok(());
    };
    let endpoint = client.scrub(client.api_base().as_str());
    match opts.via {
        Via::Batch => refuse_conflicts(
            &path,
            &state,
            &endpoint,
            opts.dry_run.is_some(),
            &opts.request.models,
        ),
        Via::Live => refuse_live_over_batches(&path, &state, output),
    }
}

/// A live run on an output whose batches may still be running is refused, with what to do.
fn refuse_live_over_batches(
    path: &std::path::Path,
    state: &State,
    output: &std::path::Path,
) -> Result<(), Error> {
    // A --dry-run's batches went to a simulator that is gone; an entry whose create was never
    // sent holds no batch.
    let live: Vec<&Entry> = state
        .batches
        .iter()
        .filter(|b| state.may_have_batch(b))
        .collect();
    if state.simulated || live.is_empty() {
        return Ok(());
    }
    let rows: u64 = live.iter().map(|b| b.rows.len() as u64).sum();
    Err(Error::Config(format!(
        "{} names {} batches ({} rows) a `--via batch` run submitted to {} and has not collected: \
         a live run would buy those rows a second time. Collect them first: run this command \
         with --via batch (it writes their answers and submits the other rows; add --fallback \
         live to send the rows they do not answer live), or `promptbatch cancel {}` and then \
         run with --via batch to collect what they finished",
        path.display(),
        live.len(),
        crate::util::human::group(rows),
        state.endpoint,
        output.display()
    )))
}

/// Why this batch run cannot collect the batches of an earlier one (`Ok` when it can, or
/// when they are only a `--dry-run`'s).
fn refuse_conflicts(
    path: &std::path::Path,
    state: &State,
    endpoint: &str,
    simulated: bool,
    model_list: &[String],
) -> Result<(), Error> {
    if state.simulated || state.batches.is_empty() {
        return Ok(());
    }
    if simulated {
        return Err(Error::Config(format!(
            "{} names {} batches submitted to {}; a --dry-run cannot collect them: run without --dry-run to collect them, or `promptbatch cancel` them first",
            path.display(),
            state.batches.len(),
            state.endpoint
        )));
    }
    if !state.same_models(model_list) {
        let was = if state.model_list.is_empty() {
            format!("{} models", state.models_per_row())
        } else {
            state.model_list.join(",")
        };
        let now = model_list.join(",");
        return Err(Error::Config(format!(
            "{} names {} batches submitted with --model {was}, and this run has --model {now}: run with --model {was} to collect them (or `promptbatch cancel` them), then change the list",
            path.display(),
            state.batches.len(),
        )));
    }
    if state.endpoint != endpoint {
        return Err(Error::Config(format!(
            "{} names {} batches submitted to {}, not to {endpoint}: run with --base-url {} to collect them (or `promptbatch cancel` them there)",
            path.display(),
            state.batches.len(),
            state.endpoint,
            state.endpoint
        )));
    }
    Ok(())
}

/// The state of an earlier run on the same output, checked against this one.
pub(super) fn load_state(
    path: &std::path::Path,
    endpoint: &str,
    simulated: bool,
    model_list: &[String],
) -> Result<State, Error> {
    let Some(mut state) = State::load(path)? else {
        return Ok(State::new(endpoint.to_string(), simulated, model_list));
    };
    refuse_conflicts(path, &state, endpoint, simulated, model_list)?;
    if state.simulated {
        if !state.batches.is_empty() {
            notice!(
                "{}: dropping {} batches of an earlier --dry-run (its simulator is gone); their rows are submitted again",
                path.display(),
                state.batches.len()
            );
        }
        return Ok(State::new(endpoint.to_string(), simulated, model_list));
    }
    if state.batches.is_empty() && !state.same_models(model_list) {
        // Only rows to retry: they may go anywhere (with another model list, their unit
        // numbers mean other units: they are read again as rows without a record instead).
        state.retry.clear();
        state.drop_spent_not_in_flight();
    }
    Ok(State {
        endpoint: endpoint.to_string(),
        models: model_list.len().max(1) as u64,
        model_list: model_list.to_vec(),
        ..state
    })
}
