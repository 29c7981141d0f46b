//! Records into streams. Decoders turn input into Arrow batches of a
//! stream's schema, with errors that name the column and value: literal
//! `INSERT … VALUES` (skipping query planning), COPY text/CSV/binary, and
//! JSON records, all through one text-to-Arrow conversion (`rows`). One
//! [`Writer`] per statement or request checks and appends what they made.

mod copy;
mod copy_fields;
mod json;
pub mod kpl;
mod rows;
mod writer;

pub use copy::CopyIn;
pub use json::{IngestReport, JsonBody, JsonRecord, RecordResult};
pub use writer::Writer;
