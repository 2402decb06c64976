//! Submitting: rows cut into Batch input files, each uploaded and made a batch, every step
//! recorded in the state before the next (an upload whose batch was not recorded is looked up
//! before a batch is created for it).

use super::claims::Claims;
use super::client::{BatchObject, Created};
use super::options::Fallback;
use super::split::Splitter;
use super::state::{Entry, RowRef};
use super::{abort_at, split, unix_now, BatchRun, Submitted};
use crate::error::Error;
use crate::events::notice;
use crate::input::{self, RowContent};
use crate::output::Writer;
use crate::progress::shutdown::Shutdown;

impl BatchRun<'_> {
    /// Batches an interrupted run left half-submitted: an entry whose upload did not finish is
    /// dropped (its rows are submitted again: uploads are not billed); an uploaded file whose
    /// create was never sent gets its batch; one whose create got no answer is looked for
    /// first ([`find_created`](Self::find_created)).
    pub(super) async fn finish_submissions(&mut self) -> Result<(), Error> {
        let before = self.state.batches.len();
        self.state.batches.retain(|e| e.input_file_id.is_some());
        if self.state.batches.len() != before {
            self.save()?;
        }
        for i in 0..self.state.batches.len() {
            let entry = &self.state.batches[i];
            if entry.batch_id.is_some() {
                continue;
            }
            if self.state.maybe_created(entry) {
                if let Some(found) = self.find_created(i).await? {
                    notice!(
                        "found batch {} for the uploaded file {} (created before the last run stopped): it is collected, not created again",
                        found.id,
                        found.input_file_id
                    );
                    self.adopt(i, &found)?;
                    continue;
                }
            }
            self.create(i).await?;
        }
        Ok(())
    }

    /// The batch of entry `index`, whose create was sent without an answer coming back:
    /// `--batch-of-file`'s answer for its file, else the batch of that input file among those
    /// created since its upload (`None`: there is none, so one may be created). A server that
    /// cannot list batches leaves it unknowable: the run stops, saying how to decide.
    pub(super) async fn find_created(&self, index: usize) -> Result<Option<BatchObject>, Error> {
        let entry = &self.state.batches[index];
        let file_id = entry.input_file_id.clone().unwrap_or_default();
        if let Some(told) = self.opts.batch.batch_of_file.get(&file_id) {
            let Some(batch_id) = told else {
                return Ok(None);
            };
            let batch = self.client().get(batch_id).await?;
            if !batch.input_file_id.is_empty() && batch.input_file_id != file_id {
                return Err(Error::Config(format!(
                    "--batch-of-file {file_id}={batch_id}: batch {batch_id} holds the file {}, not {file_id}",
                    batch.input_file_id
                )));
            }
            return Ok(Some(batch));
        }
        // Batches created since the upload (a minute of clock skew allowed).
        let since = entry.submitted_at.saturating_sub(60);
        match self.client().created_since(since).await? {
            Some(recent) => Ok(recent.into_iter().find(|b| b.input_file_id == file_id)),
            None => Err(Error::Config(format!(
                "a batch was being created for the uploaded file {file_id} ({} rows) when the answer was lost (the run was stopped, or the connection dropped), and {} cannot list batches, so promptbatch cannot tell whether that batch exists. \
                 Look for a batch whose input file is {file_id} at the provider: if there is one, run this command again with --batch-of-file {file_id}=BATCH_ID (it is collected); if there is none, with --batch-of-file {file_id}=none (it is created). \
                 Nothing else was sent: a live run or a new batch would pay for these rows twice if that batch exists (the state is in {})",
                crate::util::human::group(entry.rows.len() as u64),
                self.state.endpoint,
                self.state_path.display()
            ))),
        }
    }

    /// Records `batch` as entry `index`'s batch.
    pub(super) fn adopt(&mut self, index: usize, batch: &BatchObject) -> Result<(), Error> {
        let entry = &mut self.state.batches[index];
        entry.batch_id = Some(batch.id.clone());
        entry.status = batch.status.clone();
        self.save()
    }

    /// One pass over `rows`: every row without a record and not in a batch goes into an input
    /// file; each full file is uploaded and becomes a batch.
    pub(super) async fn submit(
        &mut self,
        rows: input::RowStream,
        shutdown: &Shutdown,
    ) -> Result<Submitted, Error> {
        let writer = self.start_writer()?;
        // The writer is finished (its records synced) whatever the pass ends with.
        let submitted = self.submit_rows(rows, shutdown, &writer).await;
        let written = writer.finish();
        let submitted = submitted?;
        written?;
        Ok(submitted)
    }

    /// [`submit`](Self::submit)'s pass, writing error records of rows that cannot be sent to
    /// `writer`.
    pub(super) async fn submit_rows(
        &mut self,
        rows: input::RowStream,
        shutdown: &Shutdown,
        writer: &Writer,
    ) -> Result<Submitted, Error> {
        let mut pass = Pass {
            in_flight: Claims::new(),
            pending: self.pending_rows(),
            // With --fallback live the rows to retry wait for the live runner, not a new batch.
            retry_live: self.opts.batch.fallback == Fallback::Live,
            splitter: Splitter::new(self.opts.batch.max_requests, self.opts.batch.max_bytes),
        };
        for entry in &self.state.batches {
            for r in &entry.rows {
                pass.in_flight.add(r.id(), r.fingerprint(), ());
            }
        }
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        let mut end = Submitted::All;
        'reading: while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                if shutdown.stop_dispatch.is_cancelled() {
                    end = Submitted::Halted;
                    break 'reading;
                }
                let taken = match item {
                    Ok(row) => self.take_row(row, &mut pass, writer).await?,
                    Err(e) => Some(Submitted::Failed(e)),
                };
                if let Some(stop) = taken {
                    end = stop;
                    break 'reading;
                }
            }
        }
        drop(chunks);
        self.finish_pass(end, pass).await
    }

    /// One row of a pass: written as an error record when it cannot be sent, passed over when
    /// a batch in flight holds it (or, with `--fallback live`, when it waits for the live
    /// runner), else added to the next input file (submitted once full). `Some` ends the pass.
    async fn take_row(
        &mut self,
        row: input::Row,
        pass: &mut Pass,
        writer: &Writer,
    ) -> Result<Option<Submitted>, Error> {
        let unit = self.unit(&row);
        if pass.retry_live && self.state.retry.contains_key(&unit) {
            return Ok(None);
        }
        let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
        let place = (row.id, row.row, row.line);
        let request = match row.content {
            RowContent::Invalid {
                prompt, message, ..
            } => {
                let record = self.error_record(place, prompt, None, message, 0);
                self.write(writer, record, unit).await;
                return Ok(None);
            }
            RowContent::Request(request) => request,
        };
        if pass
            .in_flight
            .claim(&custom_id, row.explicit_id, &request.fingerprint)
            .is_some()
        {
            return Ok(None);
        }
        if pass.pending >= self.opts.batch.max_pending {
            return Ok(Some(Submitted::Full));
        }
        let line = split::line(&custom_id, &request.body);
        if !pass.splitter.fits(line.len()) {
            let message = format!(
                "the request is {} bytes as a Batch API line, more than --batch-max-bytes {}: send this row with --via live",
                line.len(),
                self.opts.batch.max_bytes
            );
            let prompt = request.prompt.clone();
            let record = self.error_record(place, prompt, Some(&request), message, 0);
            self.write(writer, record, unit).await;
            return Ok(None);
        }
        let worst = self.worst_case(&request)?;
        let attempts = self.state.retry.get(&unit).copied().unwrap_or(0) + 1;
        let row_ref = RowRef(unit, custom_id, request.fingerprint, attempts);
        pass.pending += 1;
        if let Some(file) = pass.splitter.push(&request.model, line, row_ref, worst) {
            if !self.submit_file(file).await? {
                return Ok(Some(Submitted::Budget));
            }
        }
        Ok(None)
    }

    /// The end of a pass: the last input files submitted (unless the pass was cut short), and,
    /// when every row was read, the rows to retry that were not submitted again forgotten
    /// (they left the input).
    async fn finish_pass(&mut self, mut end: Submitted, pass: Pass) -> Result<Submitted, Error> {
        if matches!(end, Submitted::All | Submitted::Full) {
            for file in pass.splitter.finish() {
                if !self.submit_file(file).await? {
                    end = Submitted::Budget;
                    break;
                }
            }
        }
        if matches!(end, Submitted::All) && !pass.retry_live && !self.state.retry.is_empty() {
            self.state.retry.clear();
            self.state.drop_spent_not_in_flight();
            self.save()?;
        }
        Ok(end)
    }

    /// Uploads a file and creates its batch; `false` when --max-cost refuses it.
    pub(super) async fn submit_file(&mut self, file: split::InputFile) -> Result<bool, Error> {
        if let Some(cap) = self.opts.cost.max_cost {
            // Answers that failed --json-schema were paid for, though no record holds them yet.
            let spent = self.spent_before
                + self.counters.cost_totals().spent_usd()
                + self.state.unrecorded_spend_usd();
            let reserved: f64 = self.state.batches.iter().map(|b| b.worst_case_usd).sum();
            if spent + reserved + file.worst_case_usd > cap {
                notice!(
                    "--max-cost: the next batch ({} rows) could cost up to {} at batch prices, which would pass the cap of {} ({} spent, {} reserved by batches in flight); it was not submitted",
                    crate::util::human::group(file.rows.len() as u64),
                    crate::util::human::format_usd(file.worst_case_usd),
                    crate::util::human::format_usd(cap),
                    crate::util::human::format_usd(spent),
                    crate::util::human::format_usd(reserved)
                );
                return Ok(false);
            }
        }
        for row in &file.rows {
            self.state.retry.remove(&row.row());
        }
        let rows = file.rows.len();
        self.state.batches.push(Entry {
            input_file_id: None,
            batch_id: None,
            status: "uploading".into(),
            submitted_at: unix_now(),
            worst_case_usd: file.worst_case_usd,
            rows: file.rows,
        });
        let index = self.state.batches.len() - 1;
        // Not saved yet: an entry without a file id is dropped on resume anyway (its rows are
        // submitted again; an upload is not billed).
        let name = format!(
            "promptbatch-{}-{}.jsonl",
            self.output
                .file_name()
                .map_or_else(|| "output".into(), |n| n.to_string_lossy()),
            index + 1
        );
        let file_id = match self.client().upload(file.content, &name).await {
            Ok(id) => id,
            Err(e) => {
                self.state.batches.pop();
                self.save()?;
                return Err(e);
            }
        };
        if !self.quiet {
            notice!(
                "uploaded {file_id}: {}",
                crate::util::human::count(rows as u64, "request")
            );
        }
        let entry = &mut self.state.batches[index];
        entry.input_file_id = Some(file_id);
        entry.status = "uploaded".into();
        self.save()?;
        abort_at("after-upload");
        self.create(index).await?;
        Ok(true)
    }

    /// Creates the batch of entry `index` (uploaded, no batch yet). The entry is `creating`
    /// in the state from before the request is sent until its answer is saved; a create that
    /// gets no answer is looked for ([`find_created`](Self::find_created)) before it is sent
    /// again.
    pub(super) async fn create(&mut self, index: usize) -> Result<(), Error> {
        let file_id = self.state.batches[index]
            .input_file_id
            .clone()
            .unwrap_or_default();
        let metadata = serde_json::json!({
            "promptbatch_output": self.output.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
        let mut unanswered = 0;
        let batch = loop {
            self.state.batches[index].status = "creating".into();
            self.save()?;
            let created = self
                .client()
                .create(
                    &file_id,
                    &self.opts.batch.completion_window,
                    metadata.clone(),
                )
                .await?;
            match created {
                Created::Batch(batch) => break *batch,
                Created::Unknown(why) => {
                    notice!("creating the batch of {file_id} got no answer ({why}); looking for it before creating another");
                    if let Some(found) = self.find_created(index).await? {
                        break found;
                    }
                    unanswered += 1;
                    if unanswered > self.opts.retry.max_retries {
                        return Err(Error::FatalApi(format!(
                            "creating the batch of {file_id} got no answer {unanswered} times ({why}); the batch state is kept, re-run the same command to go on"
                        )));
                    }
                    tokio::time::sleep(self.opts.retry.backoff(unanswered)).await;
                }
            }
        };
        abort_at("create-unsaved");
        self.adopt(index, &batch)?;
        self.counters.log_event(
            "batch_submitted",
            serde_json::json!({"batch": batch.id, "rows": self.state.batches[index].rows.len()}),
        );
        notice!(
            "batch {} submitted: {} rows (state in {})",
            batch.id,
            crate::util::human::group(self.state.batches[index].rows.len() as u64),
            self.state_path.display()
        );
        abort_at("after-create");
        Ok(())
    }
}

/// What one pass over the input threads through its rows.
struct Pass {
    /// The rows the batches in flight hold (by custom id and fingerprint).
    in_flight: Claims<()>,
    /// Rows in batches, submitted or about to be (`--batch-max-pending` counts them).
    pending: u64,
    /// `--fallback live`: rows to retry are left to the live runner.
    retry_live: bool,
    splitter: Splitter,
}
