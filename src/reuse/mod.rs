//! Paying once for each distinct request (between the prepare stage and the transports).
//!
//! Before the send ([`before_send`]): the rows still to send are joined with the answers
//! already held (`plan.rs`) — the ok records of `--reuse` outputs and of this output — and the
//! rows so answered get their records at once (`fill.rs`); of the rest, with dedup on, only the
//! first row of each distinct request is sent, the later ones (*followers*) are skipped. After
//! the send ([`after_send`]), the followers are joined with this output again and get the
//! record of the row they repeat: its answer, or its error. A kill at any point leaves rows
//! without a record, which the same command answers the same way (or sends).
//!
//! A row a `--via batch` state beside the output holds (in a batch in flight, or waiting for a
//! retry) is never copied into nor skipped: the batch answers it, and it counts as its request's
//! first row, so the rows repeating it wait for that answer (`batch::before_run::rows_held`).

mod fill;
pub(crate) mod options;
pub(crate) mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::events::notice;
use crate::input::{self, RowSet};
use crate::job::prepare::{Followers, Prepared};
use crate::job::Job;
use crate::output::format::OutputFormat;
use crate::output::Writer;
use crate::progress::Counters;
use crate::util::human::group;
use plan::{Accept, AnswerSource, Counts};

pub use options::ReuseOptions;

/// Makes the test of the rows another transport holds, for one plan (see [`before_send`]).
pub(crate) type HeldRows<'a> = dyn Fn() -> Result<Option<plan::Held>, Error> + Sync + 'a;

pub(crate) use crate::output::record::{DUPLICATE_OF, REUSED_FROM, SAVED_USD};

/// Before the send: writes the records of rows an answer already held covers, and takes the
/// followers out of the rows to send. `None` when nothing waits for the send. `held` makes,
/// for each plan, the test of the rows a `--via batch` state beside the output holds (`None`
/// without one): they are neither copied into nor skipped, and they count as the first row
/// of their request.
pub(crate) async fn before_send(
    opts: &Job,
    prepared: &mut Prepared,
    counters: &Arc<Counters>,
    held: &HeldRows<'_>,
) -> Result<Option<Followers>, Error> {
    if !opts.reuse.any() || opts.input.reads_once() {
        return Ok(None);
    }
    let mut sources = earlier_outputs(&opts.reuse, Some(&prepared.output))?;
    let has_records = std::fs::metadata(&prepared.output).is_ok_and(|m| m.len() > 0);
    if opts.reuse.dedup && has_records {
        sources.push(AnswerSource::of(&prepared.output, true, false)?);
    }
    let planning = std::time::Instant::now();
    // Simulated answers answer a run against a simulator only: the endpoint is asked only
    // when the answers look simulated (before the plan), or some were left out (then again).
    let ask_first = opts.dry_run.is_none() && sources.iter().any(AnswerSource::looks_simulated);
    let mut accept = Accept {
        simulated: opts.dry_run.is_some() || (ask_first && prepared.client.is_simulator().await),
    };
    let skip = prepared.done.clone().unwrap_or_default();
    let mut planned = plan_blocking(opts, &sources, accept, &skip, held()?).await?;
    if !accept.simulated
        && !ask_first
        && planned.counts.simulated_left_out > 0
        && prepared.client.is_simulator().await
    {
        accept.simulated = true;
        planned = plan_blocking(opts, &sources, accept, &skip, held()?).await?;
    }
    let counts = planned.counts;
    say_plan(opts, &counts, planning.elapsed());
    if counts.units > 0 {
        counters.log_event(
            "pay_once",
            serde_json::json!({
                "rows": counts.units,
                "reused": counts.from_earlier,
                "from_output": counts.from_own,
                "duplicates": counts.followers,
                "plan_s": planning.elapsed().as_secs_f64(),
            }),
        );
    }
    let answered = counts.from_own + counts.from_earlier + counts.followers;
    let new_output = std::fs::metadata(&prepared.output).map_or(true, |m| m.len() == 0);
    if answered > 0 && new_output && crate::paths::is_csv(&prepared.output) {
        prepared.kept_columns = crate::output::record::with_marker_columns(&prepared.kept_columns);
    }
    let job = opts.clone();
    let writing = WriteTo::of(prepared);
    let counters = counters.clone();
    let (skip, followers) = tokio::task::spawn_blocking(move || {
        let mut skip = skip;
        if counts.from_own + counts.from_earlier > 0 {
            let filling = std::time::Instant::now();
            let rows = input::open(&job.input, &job.request, Some(skip.clone()))?;
            let written =
                writing.fill(&job, &counters, &sources, rows, planned.fills, &mut skip)?;
            notice!(
                "wrote the records of {} rows answered by answers already held, in {:.1} s",
                group(written),
                filling.elapsed().as_secs_f64()
            );
        }
        skip.union_with(&planned.followers);
        Ok::<_, Error>((skip, planned.followers))
    })
    .await
    .map_err(|e| {
        Error::Config(format!(
            "writing the records of rows already answered stopped: {e}"
        ))
    })??;
    if answered == 0 {
        return Ok(None);
    }
    prepared.rows = input::open(&opts.input, &opts.request, Some(skip.clone()))?;
    prepared.done = Some(skip);
    Ok((counts.followers > 0).then_some(Followers {
        units: followers,
        count: counts.followers,
        simulated: accept.simulated,
    }))
}

/// The plan of the rows not in `skip`, on a blocking thread.
async fn plan_blocking(
    opts: &Job,
    sources: &[AnswerSource],
    accept: Accept,
    skip: &RowSet,
    held: Option<plan::Held>,
) -> Result<plan::Planned, Error> {
    let (job, sources, skip) = (opts.clone(), sources.to_vec(), skip.clone());
    tokio::task::spawn_blocking(move || {
        let rows = input::open(&job.input, &job.request, Some(skip))?;
        let models = job.request.models_per_row();
        plan::plan(&sources, accept, rows, models, None, job.reuse.dedup, held)
    })
    .await
    .map_err(|e| Error::Config(format!("the dedup plan stopped: {e}")))?
}

/// After the send: each follower gets the record of the row it repeats (its answer or its
/// error). A follower whose row has no record yet (the run stopped first) keeps none: the same
/// command answers it later.
pub(crate) async fn after_send(
    opts: &Job,
    followers: Option<Followers>,
    writing: WriteTo,
    counters: &Arc<Counters>,
) -> Result<(), Error> {
    let Some(followers) = followers else {
        return Ok(());
    };
    let job = opts.clone();
    // This run's answers are simulated: the endpoint is a simulator.
    let accept = Accept {
        simulated: followers.simulated
            || counters
                .simulated_records
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
    };
    let filling = counters.clone();
    let written = tokio::task::spawn_blocking(move || {
        let counters = filling;
        let sources = [AnswerSource::of(&writing.output, true, true)?];
        let models = job.request.models_per_row();
        let rows = input::open(&job.input, &job.request, None)?;
        let planned = plan::plan(
            &sources,
            accept,
            rows,
            models,
            Some(&followers.units),
            false,
            None,
        )?;
        let rows = input::open(&job.input, &job.request, None)?;
        let mut filled = RowSet::default();
        writing.fill(&job, &counters, &sources, rows, planned.fills, &mut filled)
    })
    .await
    .map_err(|e| Error::Config(format!("writing the duplicates' records stopped: {e}")))??;
    let left = followers.count.saturating_sub(written);
    counters.log_event(
        "duplicates_copied",
        serde_json::json!({"rows": written, "left": left}),
    );
    if left > 0 {
        notice!(
            "{} rows repeat a request whose row has no record yet: they get none either; the same command sends or answers them",
            group(left)
        );
    }
    Ok(())
}

/// The units of an input a run would not send (for `estimate`): those repeating an earlier
/// unit's request (with dedup) and those a `--reuse` output answers. `None` when neither
/// applies (dedup off and no `--reuse`, or an input read only once).
pub(crate) struct NotSent {
    pub units: RowSet,
    pub duplicates: u64,
    pub reused: u64,
}

/// [`NotSent`] of `input`: the same plan a run makes before its first request, without this
/// run's output (an estimate has none).
pub(crate) fn units_not_sent(
    reuse: &ReuseOptions,
    input: &crate::input::InputOptions,
    request: &crate::api::request::RequestOptions,
) -> Result<Option<NotSent>, Error> {
    if !reuse.any() || input.reads_once() {
        return Ok(None);
    }
    let sources = earlier_outputs(reuse, None)?;
    let rows = input::open_reporting_all(input, request)?;
    let accept = Accept { simulated: false };
    let planned = plan::plan(
        &sources,
        accept,
        rows,
        request.models_per_row(),
        None,
        reuse.dedup,
        None,
    )?;
    let mut units = planned.followers;
    for fill in planned.fills {
        let [unit, _] = fill.map_err(|e| Error::io("cannot read the sorted plan back", e))?;
        units.insert(unit);
    }
    Ok(Some(NotSent {
        units,
        duplicates: planned.counts.followers,
        reused: planned.counts.from_earlier,
    }))
}

/// Where and how filled records are written (what the transports' writer is started with).
#[derive(Clone)]
pub(crate) struct WriteTo {
    pub output: PathBuf,
    pub format: OutputFormat,
    pub kept_columns: Vec<String>,
}

impl WriteTo {
    pub(crate) fn of(prepared: &Prepared) -> Self {
        WriteTo {
            output: prepared.output.clone(),
            format: prepared.output_format,
            kept_columns: prepared.kept_columns.clone(),
        }
    }

    /// Writes the records of `fills` with a writer of its own; adds their units to `filled`.
    fn fill(
        &self,
        job: &Job,
        counters: &Arc<Counters>,
        sources: &[AnswerSource],
        rows: input::RowStream,
        fills: crate::util::spill::Sorted<[u64; 2]>,
        filled: &mut RowSet,
    ) -> Result<u64, Error> {
        let schema = crate::job::prepare::answer_schema(job)?;
        let models = job.request.models_per_row();
        let writer = Writer::start(
            &self.output,
            256,
            self.format,
            self.kept_columns.clone(),
            models,
            crate::job::pipeline::writer_hooks(job, counters),
        )?;
        let ctx = fill::FillContext {
            sources,
            schema: schema.as_ref(),
            keep_response: job.output.keep_response,
            models,
        };
        let written = fill::write_fills(&ctx, rows, fills, &writer.sender, filled);
        let finished = writer.finish();
        let written = written?;
        finished?;
        counters
            .dispatched
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        Ok(written)
    }
}

/// Says what the plan found, before the send.
fn say_plan(opts: &Job, counts: &Counts, took: std::time::Duration) {
    if counts.from_own + counts.from_earlier + counts.followers > 0 {
        notice!(
            "pay once: {} rows still to send, planned in {:.1} s",
            group(counts.units),
            took.as_secs_f64()
        );
    }
    if counts.from_earlier > 0 {
        notice!(
            "--reuse: {} rows are answered from earlier outputs (no request, cost 0)",
            group(counts.from_earlier)
        );
    }
    if counts.from_own > 0 {
        notice!(
            "{} rows repeat a request this output already answered: they get its answer (no request, cost 0)",
            group(counts.from_own)
        );
    }
    if counts.followers > 0 {
        notice!(
            "{} rows repeat a request of another row: it is sent once, and they get its answer (cost 0; --no-dedup sends each)",
            group(counts.followers)
        );
        if opts.request.temperature.is_some_and(|t| t > 0.0) {
            notice!(
                "--temperature is above 0, and the repeated rows share one sampled answer: pass --no-dedup to sample each of them"
            );
        }
    }
}

/// The `--reuse` outputs as answer sources, but `output` (this run's own, read as such).
fn earlier_outputs(
    reuse: &ReuseOptions,
    output: Option<&Path>,
) -> Result<Vec<AnswerSource>, Error> {
    reuse
        .from
        .iter()
        .filter(|path| output.is_none_or(|output| !same_file(path, output)))
        .map(|path| AnswerSource::of(path, false, false))
        .collect()
}

/// Whether two paths name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(a), Ok(b)) if a == b
    )
}
