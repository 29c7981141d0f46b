//! One task of a sink: reads one source shard from its committed offset,
//! writes each partition's rows into an open Parquet upload, and at
//! rollover completes the uploads and commits files + offset atomically.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::sync::mpsc;

use super::core::{file_prefix, FlushRequest, SinkCore};
use super::layout::{Layout, PartKey};
use super::properties::{writer_properties, ROW_GROUP_ROWS};
use super::staging::{promote, upload_relative, Move};
use crate::catalog::{SinkFile, SinkProgress};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::consumer::{set_error, Backoff, Input, ShardConsumer, Stepped};
use crate::runtime::dead_letters::{self, row_json, DeadLetter};

/// Retry delays after a storage failure: doubling from the first to the last.
pub(super) const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_secs(10),
};

struct OpenFile {
    /// Where it is uploaded; `final_path` once committed (the same for
    /// Delta sinks, under `_sluice_staging/` for plain Parquet).
    path: Path,
    final_path: Path,
    /// The partition's directory: the key of `SinkProgress::through`.
    dir: String,
    values: Vec<Option<String>>,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    first_offset: u64,
    last_offset: u64,
    /// When its first record was read: the age `rollover_interval` bounds.
    opened: Instant,
    /// With `sort_by`: rows waiting to be sorted into the next row group.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl OpenFile {
    fn pending_bytes(&self) -> usize {
        self.pending.iter().map(|b| b.get_array_memory_size()).sum()
    }

    fn size_bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size() + self.pending_bytes()) as u64
    }

    fn memory_bytes(&self) -> u64 {
        (self.writer.memory_size() + self.pending_bytes()) as u64
    }

    /// Writes the pending rows as one row group, in `sort_by` order, so the
    /// group's min/max statistics are tight on the sort columns.
    async fn write_sorted(&mut self, layout: &Layout) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&layout.file_schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        self.writer.write(&layout.sort(&batch)?).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn abort(self) {
        let mut inner = self.writer.into_inner();
        let _ = inner.abort().await;
    }
}

pub(super) struct ShardWorker {
    core: Arc<SinkCore>,
    shard: u32,
    /// What the catalog holds for this shard.
    committed: SinkProgress,
    /// Next source offset to read.
    read: u64,
    files: BTreeMap<PartKey, OpenFile>,
    props: WriterProperties,
    /// `FLUSH SINK` requests, and those waiting for a commit.
    flushes: mpsc::Receiver<FlushRequest>,
    waiting: Vec<FlushRequest>,
    /// `rollover_interval`.
    interval: Duration,
    /// Committed files not yet moved from their upload path (listed for
    /// queries once they are).
    unpromoted: Vec<(Move, SinkFile)>,
}

#[async_trait]
impl ShardConsumer for ShardWorker {
    fn position(&self) -> u64 {
        self.read
    }

    async fn step(&mut self, input: Option<Input>) -> Result<Stepped> {
        let more = self.deliver(input).await?;
        let committed = self.committed.next;
        FlushRequest::answer_covered(&mut self.waiting, committed);
        Ok(Stepped {
            more,
            // Healthy once what was pending is committed; until then a
            // past failure still shows (and keeps its backoff).
            healthy: self.files.is_empty() && self.unpromoted.is_empty(),
            hold: Some(committed),
        })
    }

    async fn failed(&mut self, error: &Error) {
        for f in self.waiting.drain(..) {
            let _ = f.done.send(Err(error.to_string()));
        }
        // Start over from what is committed: the source still holds every
        // record after it.
        self.abort_all().await;
    }

    async fn wake(&mut self) -> bool {
        let deadline = self
            .files
            .values()
            .map(|f| f.opened)
            .min()
            .map(|t| tokio::time::Instant::from_std(t + self.interval));
        tokio::select! {
            request = self.flushes.recv() => {
                FlushRequest::arrived(request, self.committed.next, &mut self.waiting)
            }
            _ = sleep_until(deadline) => true,
        }
    }

    async fn stopped(&mut self) {
        self.abort_all().await;
    }
}

impl ShardWorker {
    pub fn new(
        core: Arc<SinkCore>,
        shard: u32,
        committed: SinkProgress,
        flushes: mpsc::Receiver<FlushRequest>,
    ) -> ShardWorker {
        let props = writer_properties(&core.def, core.source.def.schema_version);
        let interval = Duration::from_millis(core.def.rollover_interval_ms);
        ShardWorker {
            core,
            shard,
            read: committed.next,
            committed,
            files: BTreeMap::new(),
            props,
            flushes,
            waiting: Vec::new(),
            interval,
            unpromoted: Vec::new(),
        }
    }

    /// Drops every open upload (a multipart upload is aborted, so nothing of
    /// it becomes visible) and rewinds reading to the committed progress.
    async fn abort_all(&mut self) {
        for (_, file) in std::mem::take(&mut self.files) {
            file.abort().await;
        }
        self.show_buffered();
        self.read = self.committed.next;
    }

    /// Writes what was read, then commits the files whose rollover is due.
    /// Returns whether it made progress (so the loop steps again at once).
    async fn deliver(&mut self, input: Option<Input>) -> Result<bool> {
        self.promote_committed().await?;
        let read_any = input.is_some();
        if let Some(input) = input {
            self.write(&input.batch, input.offset).await?;
            self.read = input.end;
        }
        let flush = self.waiting.iter().any(|f| f.offset <= self.read);
        let due = self.due(flush, self.interval);
        if !due.is_empty() || (self.files.is_empty() && self.read > self.committed.next) {
            // With nothing open, the commit only moves the offset (records
            // filtered or dead-lettered), so retention and lag move on.
            self.commit(due).await?;
            self.show_buffered();
            return Ok(true);
        }
        self.show_buffered();
        Ok(read_any)
    }

    /// Publishes what this task's open files hold, for `/metrics`.
    fn show_buffered(&self) {
        let bytes = self.files.values().map(OpenFile::memory_bytes).sum();
        if let Some(shown) = self.core.stats.buffered_bytes.get(self.shard as usize) {
            shown.store(bytes, Ordering::Relaxed);
        }
    }

    /// The open files to roll now: all of them for a flush; else each one
    /// over `rollover_size` or older than `rollover_interval`, the oldest
    /// while too many are open, the largest while too much is buffered.
    fn due(&self, flush: bool, interval: Duration) -> Vec<PartKey> {
        if flush {
            return self.files.keys().cloned().collect();
        }
        let limits = &self.core.limits;
        let mut due: Vec<PartKey> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.size_bytes() >= self.core.def.rollover_size_bytes
                    || f.opened.elapsed() >= interval
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut rest: Vec<(&PartKey, &OpenFile)> = self
            .files
            .iter()
            .filter(|(k, _)| !due.contains(k))
            .collect();
        rest.sort_by_key(|(_, f)| f.opened);
        while rest.len() > limits.max_open_files {
            due.push(rest.remove(0).0.clone());
        }
        let mut buffered: u64 = rest.iter().map(|(_, f)| f.memory_bytes()).sum();
        rest.sort_by_key(|(_, f)| std::cmp::Reverse(f.memory_bytes()));
        for (key, file) in rest {
            if buffered < limits.max_buffered_bytes {
                break;
            }
            buffered -= file.memory_bytes();
            due.push(key.clone());
        }
        due
    }

    /// Writes source rows `[offset, offset + rows)` into their partitions'
    /// open files, leaving out what an earlier commit already delivered.
    async fn write(&mut self, batch: &RecordBatch, offset: u64) -> Result<()> {
        let layout = self.core.layout.clone();
        let (parts, unplaceable) = layout.split(batch)?;
        if !unplaceable.is_empty() {
            dead_letter(&self.core.clone(), batch, &unplaceable).await?;
        }
        if parts.is_empty() {
            return Ok(());
        }
        let files = layout.file_batch(batch)?;
        for (key, mut rows) in parts {
            if !self.files.contains_key(&key) {
                let dir = layout.dir(&layout.values(&key));
                rows.retain(|r| !self.committed.delivered(&dir, offset + u64::from(*r)));
                let Some(first) = rows.first() else {
                    continue;
                };
                let file = self.open(&key, dir, offset + u64::from(*first))?;
                self.files.insert(key.clone(), file);
            }
            let piece = if rows.len() == files.num_rows() {
                files.clone()
            } else {
                take_record_batch(&files, &UInt32Array::from(rows.clone()))?
            };
            let Some(file) = self.files.get_mut(&key) else {
                continue;
            };
            file.rows += piece.num_rows() as u64;
            if self.core.def.sort_by.is_empty() {
                file.writer.write(&piece).await?;
            } else {
                file.pending_rows += piece.num_rows();
                file.pending.push(piece);
                if file.pending_rows >= ROW_GROUP_ROWS {
                    file.write_sorted(&layout).await?;
                }
            }
            if let Some(last) = rows.last() {
                file.last_offset = offset + u64::from(*last);
            }
        }
        Ok(())
    }

    fn open(&self, key: &PartKey, dir: String, first_offset: u64) -> Result<OpenFile> {
        let layout = &self.core.layout;
        let name = format!(
            "{}{:04}-{first_offset:020}.parquet",
            file_prefix(self.core.def.id),
            self.shard
        );
        let relative = format!("{dir}/{name}");
        let final_path = self.core.location.child(&relative);
        let (path, writer) = self.core.location.parquet_writer(
            &upload_relative(self.core.def.format, &relative),
            layout.file_schema.clone(),
            self.props.clone(),
            self.core.limits.upload_part_size_bytes,
        )?;
        Ok(OpenFile {
            path,
            final_path,
            dir,
            values: layout.values(key),
            writer,
            rows: 0,
            first_offset,
            last_offset: first_offset,
            opened: Instant::now(),
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    /// Completes the uploads of `keys`, then commits those files and the
    /// shard's new progress in one catalog transaction.
    async fn commit(&mut self, keys: Vec<PartKey>) -> Result<()> {
        let now = now_ms();
        crate::fail::point("sink.before_upload");
        let mut committed = Vec::with_capacity(keys.len());
        let mut written = Vec::with_capacity(keys.len());
        let mut moves = Vec::with_capacity(keys.len());
        let mut progress = self.committed.clone();
        for key in keys {
            let Some(mut file) = self.files.remove(&key) else {
                continue;
            };
            file.write_sorted(&self.core.layout).await?;
            file.writer.append_key_value_metadata(KeyValue::new(
                "sluice.source_offsets".to_string(),
                format!("{}..={}", file.first_offset, file.last_offset),
            ));
            // A failed completion leaves the upload unfinished (never
            // visible); the writer is dropped, not aborted a second time.
            crate::fail::io("sink.upload")
                .map_err(|e| Error::Storage(format!("upload of {} failed: {e}", file.path)))?;
            let footer = file.writer.finish().await?;
            let stats =
                self.core.delta.is_some().then(|| {
                    super::delta_stats::file_stats(&self.core.layout.file_schema, &footer)
                });
            progress.through.insert(file.dir.clone(), self.read);
            written.push(file.path.clone());
            moves.push(Move {
                from: file.path.clone(),
                to: file.final_path.clone(),
            });
            committed.push(SinkFile {
                path: file.final_path.to_string(),
                shard: self.shard,
                first_offset: file.first_offset,
                last_offset: file.last_offset,
                rows: file.rows,
                bytes: file.writer.bytes_written() as u64,
                partition_values: file.values,
                committed_at_ms: now,
                stats,
            });
        }
        self.core.location.make_durable(&written).await?;
        crate::fail::point("sink.after_upload");
        // Everything before the oldest record still buffered is delivered.
        progress.next = self
            .files
            .values()
            .map(|f| f.first_offset)
            .min()
            .unwrap_or(self.read)
            .min(self.read);
        let next = progress.next;
        progress.through.retain(|_, t| *t > next);
        let catalog = self.core.catalog.clone();
        let (sink_id, shard) = (self.core.def.id, self.shard);
        let (to_commit, to_record) = (committed.clone(), progress.clone());
        let delta = self.core.delta.is_some();
        tokio::task::spawn_blocking(move || {
            catalog.commit_sink(sink_id, &to_commit, shard, &to_record, delta)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        crate::fail::point("sink.after_commit");
        if let Some(log) = &self.core.delta {
            log.wake.notify_one();
        }
        self.committed = progress;
        let core = &self.core;
        core.stats.committed[self.shard as usize].store(next, Ordering::Relaxed);
        core.stats.last_commit_ms.store(now, Ordering::Relaxed);
        self.unpromoted.extend(moves.into_iter().zip(committed));
        self.promote_committed().await
    }

    /// Moves committed files to their final names, then lists them for
    /// queries. A failure keeps them for the next step (or the next start).
    async fn promote_committed(&mut self) -> Result<()> {
        if self.unpromoted.is_empty() {
            return Ok(());
        }
        let moves: Vec<Move> = self.unpromoted.iter().map(|(m, _)| m.clone()).collect();
        promote(&self.core.location, &moves).await?;
        let files = std::mem::take(&mut self.unpromoted)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        self.core.add_files(files);
        set_error(&self.core.stats.last_error, None);
        Ok(())
    }
}

/// Records that cannot be placed in a partition go to `sluice.errors`
/// with stage `delivery`.
async fn dead_letter(core: &SinkCore, batch: &RecordBatch, rows: &[u32]) -> Result<()> {
    let letters: Vec<DeadLetter> = rows
        .iter()
        .map(|r| DeadLetter {
            stream: Some(core.def.source.clone()),
            pipeline: Some(core.def.name.clone()),
            stage: "delivery",
            raw: row_json(&batch.slice(*r as usize, 1)),
            error: Error::ProgramLimit(format!(
                "a partition value of this record is longer than a directory name may be ({} bytes escaped)",
                super::layout::MAX_SEGMENT_BYTES
            )),
        })
        .collect();
    dead_letters::record(&core.errors, &letters).await?;
    core.stats
        .dead_letters
        .fetch_add(letters.len() as u64, Ordering::Relaxed);
    Ok(())
}

pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
