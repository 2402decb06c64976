//! The writer: the only code that appends to the output file. It runs on its own thread, appends
//! whole records (each encoded completely before it is written, batches written with one
//! `write_all`; a small batch waits 500 µs for more while many requests are in flight) as they
//! arrive — with `--ordered` too: the file is the checkpoint, and it is put in input order at the
//! end (`order.rs`) — and only then releases their rows' concurrency slots and counts them, so
//! after `kill -9` at most `--concurrency` rows were paid for without a record, and the counters
//! never include a record a failed write (a full disk) lost. A companion thread syncs to disk
//! every 2 s while anything is unsynced, and the writer syncs once more at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::format::{self, RecordFormat};
use super::record::Record;
use crate::error::Error;

/// How often written data is forced to disk while the run goes on.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Write out the batch buffer when it grows past this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// A batch of fewer records than this waits [`COALESCE`] for more before it is written, when at
/// least as many requests are in flight (more records are then about to come; with fewer, e.g.
/// `-c 1`, nothing waits). The rows' slots are held that much longer: nothing next to an API's
/// latency, and at 0 ms (a local server) it turns one wake-up, write and slot release per record
/// into one per batch (with the pool fix in `api/client.rs`, a third of the runner's CPU per row).
const COALESCE_RECORDS: usize = 16;
/// How long a small batch waits for more records.
const COALESCE: Duration = Duration::from_micros(500);

/// A finished row's record, with the slot it holds until the record is written.
#[derive(Debug)]
pub(crate) struct Finished {
    pub record: Record,
    /// The row's concurrency slot: released once the record is written, so the rows that are
    /// paid for but not yet in the file never exceed the concurrency.
    /// `None` for an earlier row's error record that the circuit breaker released after that
    /// row's slot was gone.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Checks that the output's folder exists.
pub(crate) fn check_folder(path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::Config(format!(
                "output folder {} does not exist (create it first)",
                parent.display()
            )));
        }
    }
    Ok(())
}

/// What the writer asks of the run.
pub(crate) struct WriterHooks {
    /// Called with each record once it is in the file (to count it, and to hand it on to a
    /// library caller).
    pub written: Box<dyn FnMut(&Record) + Send>,
    /// Requests in flight now (a small batch waits a moment for them to join it).
    pub in_flight: Box<dyn Fn() -> u64 + Send>,
}

/// A running writer thread (and its disk-sync companion).
pub(crate) struct Writer {
    pub sender: mpsc::Sender<Finished>,
    thread: std::thread::JoinHandle<Result<(), Error>>,
    syncer: Syncer,
}

impl Writer {
    /// Opens (or creates) the output file for appending and starts the writer thread.
    /// `written` is called with each record once it is in the file (to count it, and to hand it
    /// on to a library caller).
    /// `kept`: a CSV output's kept input columns (output names, in order).
    pub(crate) fn start(
        path: &Path,
        capacity: usize,
        format: format::OutputFormat,
        kept: Vec<String>,
        models: u64,
        hooks: WriterHooks,
    ) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot create output {}", path.display()), e))?;
        let (sender, receiver) = mpsc::channel(capacity);
        let syncer = Syncer::start(&file)?;
        let mut task = WriterTask {
            path: path.to_path_buf(),
            format: format.encoder(kept, models),
            file,
            buf: Vec::with_capacity(BATCH_BYTES),
            batch: Vec::new(),
            written: hooks.written,
            in_flight: hooks.in_flight,
            dirty: syncer.dirty.clone(),
            slots: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("promptbatch-writer".into())
            .spawn(move || task.run(receiver))
            .map_err(|e| Error::io("cannot start the writer thread", e))?;
        Ok(Writer {
            sender,
            thread,
            syncer,
        })
    }

    /// Waits for the writer to drain its queue, flush and sync (drop every sender first).
    pub(crate) fn finish(self) -> Result<(), Error> {
        drop(self.sender);
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(Error::Config("the writer thread panicked".into())));
        self.syncer.stop();
        result
    }
}

/// Forces written records to disk every [`SYNC_EVERY`] while there is something unsynced, even
/// when no new record arrives (so a quiet stretch never leaves data only in the page cache).
struct Syncer {
    dirty: Arc<AtomicBool>,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn start(file: &File) -> Result<Self, Error> {
        let file = file
            .try_clone()
            .map_err(|e| Error::io("cannot share the output file with the sync thread", e))?;
        let dirty = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let flag = dirty.clone();
        let thread = std::thread::Builder::new()
            .name("promptbatch-sync".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(SYNC_EVERY) {
                    if flag.swap(false, Ordering::AcqRel) {
                        if let Err(e) = file.sync_data() {
                            tracing::warn!("cannot sync the output to disk: {e}");
                        }
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the sync thread", e))?;
        Ok(Syncer {
            dirty,
            stop,
            thread,
        })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

struct WriterTask {
    path: PathBuf,
    format: Box<dyn RecordFormat>,
    file: File,
    buf: Vec<u8>,
    /// The records encoded in `buf`, counted once they are written.
    batch: Vec<Record>,
    /// Called with each record once it is written.
    written: Box<dyn FnMut(&Record) + Send>,
    /// Requests in flight now.
    in_flight: Box<dyn Fn() -> u64 + Send>,
    /// Set after every write; the syncer clears it when it syncs.
    dirty: Arc<AtomicBool>,
    /// Slots of the records accepted since the last write, released by the next one.
    slots: Vec<OwnedSemaphorePermit>,
}

impl WriterTask {
    fn run(&mut self, mut receiver: mpsc::Receiver<Finished>) -> Result<(), Error> {
        let empty = self.file.metadata().map_err(|e| self.io_error(e))?.len() == 0;
        if empty {
            self.buf.extend_from_slice(&self.format.header());
        }
        while let Some(first) = receiver.blocking_recv() {
            self.accept(first);
            self.take_waiting(&mut receiver)?;
            if self.batch.len() < COALESCE_RECORDS && (self.in_flight)() >= COALESCE_RECORDS as u64
            {
                // Let the rows about to finish join this batch: one wake-up of this thread, one
                // write and one release of slots then serve several records instead of one each.
                std::thread::sleep(COALESCE);
                self.take_waiting(&mut receiver)?;
            }
            self.write_out()?;
        }
        self.file.sync_all().map_err(|e| self.io_error(e))
    }

    /// Accepts the records already queued, writing out every [`BATCH_BYTES`].
    fn take_waiting(&mut self, receiver: &mut mpsc::Receiver<Finished>) -> Result<(), Error> {
        while let Ok(next) = receiver.try_recv() {
            self.accept(next);
            if self.buf.len() >= BATCH_BYTES {
                self.write_out()?;
            }
        }
        Ok(())
    }

    fn accept(&mut self, item: Finished) {
        self.slots.extend(item.slot);
        self.format.encode(&item.record, &mut self.buf);
        self.batch.push(item.record);
    }

    fn write_out(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| self.io_error(e))?;
        self.buf.clear();
        self.dirty.store(true, Ordering::Release);
        for record in self.batch.drain(..) {
            (self.written)(&record);
        }
        self.slots.clear();
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::io(
            format!(
                "cannot write output {} (is the disk full?)",
                self.path.display()
            ),
            e,
        )
    }
}
