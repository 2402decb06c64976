//! Pipeline pieces both transports use: the reader thread that hands rows over in chunks, what
//! the writer does with each record it writes (count it, hand it to `Job::on_record`), and the
//! `--ordered` sort at the end.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::Error;
use crate::events::notice;
use crate::input::{self, Row};
use crate::job::Job;
use crate::output::{order, writer};
use crate::progress::Counters;

/// What the writer does with each record once it is in the file (count it, and hand it to the
/// caller's callback if the job has one), and how it sees the requests in flight.
pub(crate) fn writer_hooks(opts: &Job, counters: &Arc<Counters>) -> writer::WriterHooks {
    let callback = opts.on_record.clone();
    let written = counters.clone();
    let in_flight = counters.clone();
    writer::WriterHooks {
        written: Box::new(move |record| {
            written.record_written(record);
            if let Some(callback) = &callback {
                if let Ok(mut callback) = callback.lock() {
                    callback(record);
                }
            }
        }),
        in_flight: Box::new(move || in_flight.in_flight.load(Relaxed)),
    }
}

/// --ordered: the output was written as rows finished; now it is put in input order (a row's
/// records in the order of `models`, `--model`'s list).
pub(crate) fn put_in_input_order(output: &Path, models: &[String]) -> Result<(), Error> {
    let moved = order::sort_by_row(output, models)?;
    if moved > 0 {
        notice!(
            "--ordered: put {} records in input order in {}",
            crate::util::human::group(moved),
            output.display()
        );
    }
    Ok(())
}

/// Rows the reader hands over at once (1 for standard input, whose rows may trickle in).
pub(crate) const CHUNK_ROWS: usize = 64;
/// Chunks that may wait in the reader's queue.
const QUEUED_CHUNKS: usize = 4;

/// A few rows, handed from the reader to the dispatcher together (one wake-up, not one per row).
pub(crate) type Chunk = Vec<Result<Row, Error>>;

/// Reads rows on a thread of its own into a bounded queue of chunks (the reader blocks when it
/// is full). An `Err` item is the last one sent.
pub(crate) fn spawn_reader(rows: input::RowStream, chunk_rows: usize) -> mpsc::Receiver<Chunk> {
    let (sender, receiver) = mpsc::channel(QUEUED_CHUNKS);
    std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(chunk_rows);
        for item in rows {
            let stop = item.is_err();
            chunk.push(item);
            if chunk.len() >= chunk_rows || stop {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
                if sender.blocking_send(full).is_err() || stop {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = sender.blocking_send(chunk);
        }
    });
    receiver
}
