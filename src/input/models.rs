//! Several models per row (`--model a,b`): each row becomes one unit of work per model, handed
//! out in the stream (a row's units follow each other; nothing is collected).
//!
//! A unit is numbered `row × models + slot` (slot: the model's position in the list), so a
//! resumed run's set of done units is one bit per unit and, with one model, the unit is the row
//! number itself. A row that names its own model has one unit, slot 0.

use std::collections::VecDeque;

use super::{Row, RowSet, RowStream};
use crate::error::Error;

/// The unit number of (row, slot) when each row goes to `models` models.
pub(crate) fn unit(row: u64, slot: u64, models: u64) -> u64 {
    row * models + slot
}

/// Splits each row into one row per model, dropping the units an earlier run finished.
pub(crate) struct PerModel {
    rows: RowStream,
    done: Option<RowSet>,
    models: u64,
    pending: VecDeque<Row>,
}

impl PerModel {
    pub(crate) fn new(rows: RowStream, done: Option<RowSet>, models: u64) -> Self {
        PerModel {
            rows,
            done,
            models,
            pending: VecDeque::new(),
        }
    }

    fn is_done(&self, row: &Row) -> bool {
        self.done
            .as_ref()
            .is_some_and(|done| done.contains(unit(row.row, u64::from(row.slot), self.models)))
    }
}

impl Iterator for PerModel {
    type Item = Result<Row, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                if !self.is_done(&row) {
                    return Some(Ok(row));
                }
                continue;
            }
            let mut row = match self.rows.next()? {
                Ok(row) => row,
                Err(e) => return Some(Err(e)),
            };
            for (slot, content) in std::mem::take(&mut row.more).into_iter().enumerate() {
                self.pending.push_back(Row {
                    row: row.row,
                    line: row.line,
                    id: row.id.clone(),
                    explicit_id: row.explicit_id,
                    content,
                    kept: row.kept.clone(),
                    slot: slot as u32 + 1,
                    more: Vec::new(),
                    own_model: false,
                });
            }
            self.pending.push_front(row);
        }
    }
}
