//! Decoding records into Arrow batches of a stream's schema, with errors
//! that name the column and value. Today: `INSERT … VALUES` of literals
//! (the hot path of psql and drivers, which skips query planning). Bad
//! input is refused as a whole statement; nothing of it is written.

mod copy;
pub mod dead_letter;
mod rows;
mod values;

pub use copy::CopyIn;
pub use rows::{build_batch, resolve_targets, OnError, RowError};
pub use values::{plan_values_insert, ValuesInsert};
