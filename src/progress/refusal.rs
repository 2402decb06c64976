//! A model the circuit breaker refused (`live::breaker`), as a run's stop reason carries it to
//! the end-of-run message.

/// The row a refusal was first seen on.
#[derive(Debug, Clone)]
pub struct FirstRow {
    pub row: u64,
    pub line: u64,
    pub id: String,
}

/// A refused model, for the end-of-run message.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub model: String,
    pub message: String,
    pub first: FirstRow,
    /// Rows of this model that got no record because of the refusal.
    pub rows_held_back: u64,
    /// Rows the model answered ok in this run, and whether ok records of it were kept from
    /// earlier runs: a model that worked is not a wrong key or model name.
    pub successes: u64,
    pub worked_before: bool,
}

impl Refusal {
    /// One line: which model, the server's message, where it was first seen, what was left.
    pub fn describe(&self) -> String {
        format!(
            "model `{}` was refused: {} (first at input line {}, row {}, id `{}`); its rows that have no record are sent by the next run",
            self.model,
            self.message,
            self.first.line,
            self.first.row,
            self.first.id,
        )
    }

    /// Whether the model answered ok before it was refused (in this run or an earlier one).
    pub fn had_worked(&self) -> bool {
        self.successes > 0 || self.worked_before
    }
}
