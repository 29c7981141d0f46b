//! The shared runtime every layer above the log stands on: open streams
//! and their lookup by name, `sluice.errors`, and what pipelines and sinks
//! share as consumers of a stream. It imports only the storage layer
//! (`log`, `catalog`, `storage`) and the base modules; `ingest`, `cq`,
//! `sink`, `query` and the owner import it.

pub mod consumer;
pub mod dead_letters;
mod stream;

pub use dead_letters::{DeadLetter, ERRORS_STREAM};
pub use stream::{Stream, Streams};
