//! Decoding records into Arrow batches of a stream's schema, with errors
//! that name the column and value: literal `INSERT … VALUES` (skipping
//! query planning), COPY text/CSV, and JSON records. All paths share one
//! text-to-Arrow conversion (`rows`) and one dead-letter writer.

mod copy;
mod copy_fields;
pub mod dead_letter;
mod json;
mod rows;
mod scan;
mod values;

pub use copy::{CopyIn, CopyRows};
pub use json::{ingest_json, ingest_records, IngestReport, JsonBody, JsonRecord, RecordResult};
pub use rows::{build_batch, build_batch_columns, resolve_targets, OnError, RowError};
pub use values::{plan_values_insert, ValuesInsert};
