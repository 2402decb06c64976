//! Money: prices and the cost of one answer (`cost`), the `--max-cost` cap (`budget`), usage
//! and cost summed by model (`ledger`), what was paid for but not kept (`spent`),
//! all summed in one unit (`nanos`).

pub(crate) mod budget;
pub(crate) mod cost;
pub(crate) mod ledger;
pub(crate) mod nanos;
pub(crate) mod spent;
