//! The second stage of a COPY: text columns of [`CHUNK_ROWS`] records →
//! an Arrow batch (types checked, bad rows reported with their line) →
//! kept in memory or written to the log's bulk spill. It runs on a thread
//! of its own, so a COPY decodes on two cores: while it converts and
//! writes one chunk, the first stage splits the next into records and
//! fields. Chunks arrive and are stored in order, so per-shard order and
//! "the first bad row fails the COPY" hold as with one thread.
//!
//! [`CHUNK_ROWS`]: super::CHUNK_ROWS

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use datafusion::arrow::array::{RecordBatch, StringArray};

use super::CopyRows;
use crate::error::{Error, Result};
use crate::ingest::rows::{build_batch_columns, OnError};
use crate::log::BulkSpill;
use crate::runtime::dead_letters::DeadLetter;
use crate::runtime::Stream;

/// Chunks queued between the stages: bounds the memory (two chunks of
/// text) and lets the first stage run ahead by one.
const QUEUED_CHUNKS: usize = 2;

/// The fields of up to `CHUNK_ROWS` records, one text array per target
/// column, with each record's first line and (for dead letters) its text.
pub(super) struct Chunk {
    pub text: Vec<StringArray>,
    pub info: Vec<(u64, Option<String>)>,
}

/// What the second stage holds.
pub(super) struct Converter {
    stream: Arc<Stream>,
    targets: Vec<usize>,
    mode: OnError,
    /// Decoded bytes held in memory before the rows go to a bulk append.
    memory_bytes: u64,
    batches: Vec<RecordBatch>,
    bytes: u64,
    spill: Option<BulkSpill>,
    dead_letters: Vec<DeadLetter>,
}

impl Converter {
    pub(super) fn new(
        stream: Arc<Stream>,
        targets: Vec<usize>,
        mode: OnError,
        memory_bytes: u64,
    ) -> Converter {
        Converter {
            stream,
            targets,
            mode,
            memory_bytes,
            batches: Vec::new(),
            bytes: 0,
            spill: None,
            dead_letters: Vec::new(),
        }
    }

    /// Converts one chunk (all-or-nothing, or dead letters).
    pub(super) fn convert(&mut self, chunk: Chunk) -> Result<()> {
        let Chunk { text, info } = chunk;
        let (batch, errors) =
            match build_batch_columns(&self.stream, &self.targets, &text, info.len(), self.mode) {
                Ok(ok) => ok,
                Err(bad) => {
                    let line = info.get(bad.row).map_or(0, |i| i.0);
                    return Err(at_line(&self.stream, line, bad.error));
                }
            };
        for bad in errors {
            let (line, raw) = info.get(bad.row).cloned().unwrap_or((0, None));
            self.dead_letters.push(DeadLetter {
                stream: Some(self.stream.def.name.clone()),
                pipeline: None,
                stage: "ingest",
                error: at_line(&self.stream, line, bad.error),
                raw,
            });
        }
        if let Some(spill) = self.spill.as_mut() {
            return self.stream.log.spill(spill, batch);
        }
        self.bytes += batch.get_array_memory_size() as u64;
        self.batches.push(batch);
        if self.bytes > self.memory_bytes {
            // A large COPY: from here on, rows go to the log as they come.
            let mut spill = self.stream.log.bulk_spill()?;
            for batch in std::mem::take(&mut self.batches) {
                self.stream.log.spill(&mut spill, batch)?;
            }
            self.spill = Some(spill);
        }
        Ok(())
    }

    /// Every good row, in memory or spilled, and the dead letters.
    pub(super) fn finish(mut self) -> Result<(CopyRows, Vec<DeadLetter>)> {
        let rows = match self.spill.take() {
            Some(spill) => CopyRows::Spilled(spill.finish()?),
            None => CopyRows::InMemory(std::mem::take(&mut self.batches)),
        };
        Ok((rows, std::mem::take(&mut self.dead_letters)))
    }
}

/// Adds PostgreSQL's context line: `COPY t, line N`.
pub(super) fn at_line(stream: &Stream, line: u64, error: Error) -> Error {
    error.with_context(format!("COPY {}, line {line}", stream.def.name))
}

/// The second stage on its thread.
pub(super) struct Stage {
    chunks: Option<SyncSender<Chunk>>,
    /// Raised at the stage's first error, so the first stage stops early.
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Converter, Option<Error>)>>,
}

impl Stage {
    pub(super) fn start(mut converter: Converter) -> Result<Stage> {
        let (tx, rx) = sync_channel::<Chunk>(QUEUED_CHUNKS);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("copy-convert".into())
            .spawn(move || {
                let mut error = None;
                // After an error the rest is received and dropped, so the
                // first stage never blocks on a full queue.
                for chunk in rx {
                    if error.is_none() {
                        if let Err(e) = converter.convert(chunk) {
                            flag.store(true, Ordering::Release);
                            error = Some(e);
                        }
                    }
                }
                (converter, error)
            })?;
        Ok(Stage {
            chunks: Some(tx),
            failed,
            thread: Some(thread),
        })
    }

    /// Whether a chunk already sent failed (the COPY fails with it).
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(super) fn send(&self, chunk: Chunk) -> Result<()> {
        match &self.chunks {
            Some(tx) => tx
                .send(chunk)
                .map_err(|_| Error::Internal("the COPY conversion thread stopped".into())),
            None => Err(Error::Internal("COPY conversion already finished".into())),
        }
    }

    /// Waits for every chunk sent: the converter, or the first error.
    pub(super) fn join(&mut self) -> Result<Converter> {
        drop(self.chunks.take());
        let thread = self
            .thread
            .take()
            .ok_or_else(|| Error::Internal("COPY conversion already joined".into()))?;
        match thread.join() {
            Ok((converter, None)) => Ok(converter),
            Ok((_, Some(error))) => Err(error),
            Err(_) => Err(Error::Internal(
                "the COPY conversion thread panicked".into(),
            )),
        }
    }
}
