//! One task of a sink: reads one source shard from its committed offset,
//! writes each partition's rows into an open Parquet upload, and at
//! rollover completes the uploads and commits files + offset atomically.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, GzipLevel, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::sync::{mpsc, watch};

use super::layout::PartKey;
use super::{file_prefix, FlushRequest, SinkCore};
use crate::catalog::SinkFile;
use crate::engine::now_ms;
use crate::error::{Error, Result};
use crate::ingest::dead_letter::{self, row_json, DeadLetter};
use crate::log::read_frame;

/// Most source records read per step; bounds the decoded batch.
const MAX_READ_RECORDS: u64 = 65_536;
/// Rows per Parquet row group: small enough to bound a writer's memory,
/// large enough for good compression and min/max pruning.
const ROW_GROUP_ROWS: usize = 128 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct OpenFile {
    path: Path,
    values: Vec<Option<String>>,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    first_offset: u64,
    last_offset: u64,
}

/// What one task has read but not committed.
struct Epoch {
    /// The committed offset this epoch started at.
    start: u64,
    /// Next source offset to read.
    read: u64,
    files: BTreeMap<PartKey, OpenFile>,
    /// When the oldest buffered record was read.
    oldest: Option<Instant>,
}

impl Epoch {
    fn new(start: u64) -> Epoch {
        Epoch {
            start,
            read: start,
            files: BTreeMap::new(),
            oldest: None,
        }
    }

    fn buffered_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.writer.memory_size() as u64)
            .sum()
    }

    /// Drops the open uploads (a multipart upload is aborted, so nothing
    /// of it becomes visible).
    async fn abort(self) {
        for (_, file) in self.files {
            let mut inner = file.writer.into_inner();
            let _ = inner.abort().await;
        }
    }
}

pub(super) struct ShardWorker {
    core: Arc<SinkCore>,
    shard: u32,
    committed: u64,
    props: WriterProperties,
}

impl ShardWorker {
    pub fn new(core: Arc<SinkCore>, shard: u32, committed: u64) -> ShardWorker {
        let props = writer_properties(&core.def.compression, &core.def.name);
        ShardWorker {
            core,
            shard,
            committed,
            props,
        }
    }

    pub async fn run(
        mut self,
        mut flushes: mpsc::Receiver<FlushRequest>,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(mut appended) = self.core.source.log.subscribe(self.shard) else {
            return;
        };
        let interval = Duration::from_millis(self.core.def.rollover_interval_ms);
        let mut epoch = Epoch::new(self.committed);
        let mut waiting: Vec<FlushRequest> = Vec::new();
        let mut backoff = MIN_BACKOFF;
        loop {
            if *stop.borrow() {
                epoch.abort().await;
                return;
            }
            let step = self.step(&mut epoch, &waiting, interval).await;
            match step {
                Ok(progress) => {
                    backoff = MIN_BACKOFF;
                    self.set_error(None);
                    let committed = self.committed;
                    let (done, pending): (Vec<_>, Vec<_>) =
                        waiting.drain(..).partition(|f| f.offset <= committed);
                    waiting = pending;
                    for f in done {
                        let _ = f.done.send(Ok(()));
                    }
                    if progress {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(sink = %self.core.def.name, shard = self.shard, error = %e, "sink delivery failed; retrying");
                    self.set_error(Some(e.to_string()));
                    for f in waiting.drain(..) {
                        let _ = f.done.send(Err(e.to_string()));
                    }
                    // Start over from the committed offset: the source
                    // still holds every record not committed.
                    std::mem::replace(&mut epoch, Epoch::new(self.committed))
                        .abort()
                        .await;
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            let deadline = epoch
                .oldest
                .map(|t| tokio::time::Instant::from_std(t + interval));
            tokio::select! {
                _ = stop.changed() => {}
                changed = appended.changed() => if changed.is_err() { epoch.abort().await; return },
                request = flushes.recv() => match request {
                    Some(request) if request.offset <= self.committed => {
                        let _ = request.done.send(Ok(()));
                    }
                    Some(request) => waiting.push(request),
                    None => {}
                },
                _ = sleep_until(deadline) => {}
            }
        }
    }

    /// Reads what is there, then commits if a rollover is due. Returns
    /// whether it made progress (so the caller loops without waiting).
    async fn step(
        &mut self,
        epoch: &mut Epoch,
        waiting: &[FlushRequest],
        interval: Duration,
    ) -> Result<bool> {
        let frames = self
            .core
            .source
            .log
            .frames_from(self.shard, epoch.read, MAX_READ_RECORDS);
        let read_any = !frames.is_empty();
        if read_any {
            let offset = epoch.read;
            let end = frames.last().map_or(offset, |(_, f)| f.end_seq());
            let schema = self.core.source.schema.clone();
            let batch = tokio::task::spawn_blocking(move || -> Result<RecordBatch> {
                let batches = frames
                    .iter()
                    .map(|(file, frame)| read_frame(file, frame, None, offset))
                    .collect::<Result<Vec<_>>>()?;
                Ok(concat_batches(&schema, &batches)?)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
            self.write(epoch, &batch, offset).await?;
            epoch.read = end;
        }
        let flush_due = waiting.iter().any(|f| f.offset <= epoch.read);
        let limits = &self.core.limits;
        let size_due = epoch.files.values().any(|f| {
            (f.writer.bytes_written() + f.writer.in_progress_size()) as u64
                >= self.core.def.rollover_size_bytes
        });
        let roll = if epoch.files.is_empty() {
            // Nothing buffered (all filtered or dead-lettered): commit the
            // offset now, so retention and lag move on.
            epoch.read > epoch.start && (flush_due || !read_any)
        } else {
            flush_due
                || size_due
                || epoch.files.len() > limits.max_open_files
                || epoch.buffered_bytes() >= limits.max_buffered_bytes
                || epoch.oldest.is_some_and(|t| t.elapsed() >= interval)
        };
        if roll {
            self.commit(epoch).await?;
            return Ok(true);
        }
        Ok(read_any)
    }

    /// Writes source rows `[offset, offset + rows)` into their partitions'
    /// open files.
    async fn write(&mut self, epoch: &mut Epoch, batch: &RecordBatch, offset: u64) -> Result<()> {
        let layout = self.core.layout.clone();
        let (parts, unplaceable) = layout.split(batch)?;
        if !unplaceable.is_empty() {
            self.dead_letter(batch, &unplaceable).await?;
        }
        if parts.is_empty() {
            return Ok(());
        }
        epoch.oldest.get_or_insert_with(Instant::now);
        let files = layout.file_batch(batch)?;
        for (key, rows) in parts {
            let first = offset + u64::from(rows[0]);
            let last = offset + u64::from(rows[rows.len() - 1]);
            let piece = if rows.len() == files.num_rows() {
                files.clone()
            } else {
                take_record_batch(&files, &UInt32Array::from(rows))?
            };
            if !epoch.files.contains_key(&key) {
                let file = self.open(&key, first)?;
                epoch.files.insert(key.clone(), file);
            }
            let Some(file) = epoch.files.get_mut(&key) else {
                continue;
            };
            file.writer.write(&piece).await?;
            file.rows += piece.num_rows() as u64;
            file.last_offset = last;
        }
        Ok(())
    }

    fn open(&self, key: &PartKey, first_offset: u64) -> Result<OpenFile> {
        let layout = &self.core.layout;
        let values = layout.values(key);
        let dir = layout.dir(&values);
        let name = format!(
            "{}{:04}-{first_offset:020}.parquet",
            file_prefix(self.core.def.id),
            self.shard
        );
        let relative = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let path = self.core.location.child(&relative);
        let upload = BufWriter::with_capacity(
            self.core.location.store.clone(),
            path.clone(),
            self.core.limits.upload_part_size_bytes,
        );
        let writer = AsyncArrowWriter::try_new(
            upload,
            layout.file_schema.clone(),
            Some(self.props.clone()),
        )?;
        Ok(OpenFile {
            path,
            values,
            writer,
            rows: 0,
            first_offset,
            last_offset: first_offset,
        })
    }

    /// Completes every open upload, then commits the files and the new
    /// offset in one catalog transaction.
    async fn commit(&mut self, epoch: &mut Epoch) -> Result<()> {
        let files = std::mem::take(&mut epoch.files);
        let mut committed = Vec::with_capacity(files.len());
        let now = now_ms();
        fail_point("sink.before_upload");
        for (_, mut file) in files {
            file.writer.append_key_value_metadata(KeyValue::new(
                "sluice.source_offsets".to_string(),
                format!("{}..={}", file.first_offset, file.last_offset),
            ));
            file.writer.finish().await?;
            committed.push(SinkFile {
                path: file.path.to_string(),
                shard: self.shard,
                first_offset: file.first_offset,
                last_offset: file.last_offset,
                rows: file.rows,
                bytes: file.writer.bytes_written() as u64,
                partition_values: file.values,
                committed_at_ms: now,
            });
        }
        fail_point("sink.after_upload");
        let next = epoch.read;
        let catalog = self.core.catalog.clone();
        let (sink_id, shard) = (self.core.def.id, self.shard);
        let to_commit = committed.clone();
        tokio::task::spawn_blocking(move || catalog.commit_sink(sink_id, &to_commit, shard, next))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        fail_point("sink.after_commit");
        self.committed = next;
        *epoch = Epoch::new(next);
        let core = &self.core;
        core.add_files(committed);
        core.stats.committed[self.shard as usize].store(next, Ordering::Relaxed);
        core.stats.last_commit_ms.store(now, Ordering::Relaxed);
        core.source.log.hold(&core.hold_name(), self.shard, next);
        Ok(())
    }

    async fn dead_letter(&self, batch: &RecordBatch, rows: &[u32]) -> Result<()> {
        let letters: Vec<DeadLetter> = rows
            .iter()
            .map(|r| DeadLetter {
                stream: Some(self.core.def.source.clone()),
                pipeline: Some(self.core.def.name.clone()),
                stage: "delivery",
                raw: row_json(&batch.slice(*r as usize, 1)),
                error: Error::ProgramLimit(format!(
                    "a partition value of this record is longer than a directory name may be ({} bytes escaped)",
                    super::layout::MAX_SEGMENT_BYTES
                )),
            })
            .collect();
        dead_letter::record(&self.core.errors, &letters).await?;
        self.core
            .stats
            .dead_letters
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.core.stats.last_error.lock() {
            *last = error;
        }
    }
}

/// Crash-testing hook: when `SLUICE_FAIL_POINT` names this point, the
/// process dies here as abruptly as under `kill -9`, so tests can stop it
/// between upload and commit exactly.
fn fail_point(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("SLUICE_FAIL_POINT").ok());
    if point.as_deref() == Some(name) {
        tracing::error!(point = name, "fail point reached; aborting");
        std::process::abort();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn writer_properties(compression: &str, sink: &str) -> WriterProperties {
    let compression = match compression {
        "snappy" => Compression::SNAPPY,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "lz4" => Compression::LZ4_RAW,
        "uncompressed" => Compression::UNCOMPRESSED,
        _ => Compression::ZSTD(ZstdLevel::default()),
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!(
            "sluice {} (sink {sink})",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}
