//! The rewrite both resume planners end with (`resume.rs`, `resume_sorted.rs`): the output is
//! read back record by record, each record is kept (perhaps relabelled or renamed) or dropped as
//! the planner decides, and the kept ones are written with the encoder a run appends with, into
//! a replacement that takes the output's place crash-safely and in place (`replace.rs`).

use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::output::read::Records;
use crate::output::record::Record;
use crate::output::replace::replace_with;

/// Bytes encoded before they are handed to the file.
const CHUNK: usize = 1 << 20;

/// Rewrites the output at `path` crash-safely and in place. `decide` meets the first `known`
/// records in file order (`u64::MAX`: all of them) with their index (0-based; a torn last record
/// is not one), may relabel or rename each, and returns whether it is kept; records past `known`
/// are left out unread. The kept records are written in the file's own format and columns (kept
/// input columns included), each row going to `models` models; a torn last record is dropped.
pub(crate) fn rewrite(
    path: &Path,
    models: u64,
    known: u64,
    mut decide: impl FnMut(u64, &mut Record) -> Result<bool, Error>,
) -> Result<(), Error> {
    replace_with(path, |out| {
        let io = |e| {
            Error::io(
                format!("cannot rewrite {} while resuming", path.display()),
                e,
            )
        };
        let mut records = Records::<Record>::open(path)?;
        let mut encoder = records
            .format()
            .output_format()
            .encoder(records.extra_columns(), models);
        let mut buf = encoder.header();
        for index in 0..known {
            let Some(item) = records.next() else { break };
            let (_, mut record) = item?;
            if !decide(index, &mut record)? {
                continue;
            }
            record.kept = records.last_extras();
            encoder.encode(&record, &mut buf);
            if buf.len() >= CHUNK {
                out.write_all(&buf).map_err(io)?;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(io)
    })
}
