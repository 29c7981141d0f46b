//! The durable stream log: per stream, `shards` append-only shard logs of
//! checksummed segment files, written by group commit (many statements,
//! one device flush per group where the filesystem allows, else one fsync
//! per touched shard) led by the appending tasks themselves, then by the
//! stream's committer thread while clients are concurrent.
//!
//! An append is acknowledged only after its bytes are fsynced; readers see
//! only acknowledged records and can follow new appends through a watch
//! channel per shard. Nothing here knows SQL.

mod bulk;
mod commit;
mod direct;
mod durable;
mod frame;
mod index;
mod room;
mod segment;
mod shard;
mod versions;
mod writer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::watch;

pub use bulk::{BulkFiles, BulkSpill};
use commit::{Committer, Request};
pub use frame::Progress;
pub use index::FrameRef;
use shard::Shard;
pub use shard::{read_frame, ShardStats};
pub use versions::{ReadSchema, Versions};

use crate::clock::now_ms;
use crate::error::{Error, Result};

/// How a stream's log is laid out and bounded.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub shards: u32,
    /// Index of the column whose value picks the shard; round-robin without.
    pub partition_key: Option<usize>,
    pub segment_size_bytes: u64,
    pub append_queue_depth: usize,
    pub retention: Option<Duration>,
}

/// Where an acknowledged statement's records landed: per touched shard, the
/// first sequence number and count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendAck {
    pub ranges: Vec<(u32, u64, u64)>,
}

impl AppendAck {
    pub fn records(&self) -> u64 {
        self.ranges.iter().map(|r| r.2).sum()
    }
}

/// One stream's log.
pub struct StreamLog {
    dir: PathBuf,
    /// Swapped whole by a schema change; readers take a snapshot.
    versions: RwLock<Arc<Versions>>,
    options: LogOptions,
    shards: Vec<Arc<Shard>>,
    committer: Committer,
    round_robin: AtomicU64,
    /// Per consumer, per shard: the oldest sequence it still needs.
    holds: Mutex<BTreeMap<String, Vec<u64>>>,
    /// Why the log refuses appends (a failed fsync), if it does.
    stopped: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog").field("dir", &self.dir).finish()
    }
}

impl StreamLog {
    /// Opens the log under `dir`, recovering every shard.
    pub fn open(dir: &Path, versions: Versions, options: LogOptions) -> Result<Arc<StreamLog>> {
        let shards = (0..options.shards)
            .map(|i| Shard::open(&dir.join(format!("shard-{i}")), i).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let last_unit_id = bulk::recover(&shards)?.unwrap_or(0);
        let stopped = Arc::new(Mutex::new(None));
        bulk::remove_stale_spills(dir)?;
        let committer = Committer::new(
            shards.clone(),
            options.append_queue_depth,
            options.segment_size_bytes,
            last_unit_id,
            stopped.clone(),
        )?;
        Ok(Arc::new(StreamLog {
            dir: dir.to_path_buf(),
            versions: RwLock::new(Arc::new(versions)),
            options,
            shards,
            committer,
            round_robin: AtomicU64::new(0),
            holds: Mutex::new(BTreeMap::new()),
            stopped,
        }))
    }

    /// Why this log refuses appends until a restart (a failed fsync), if
    /// it does; reads go on.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch (already of the stream's schema), routing rows to
    /// shards, and resolves once every row is durable.
    pub async fn append(&self, batch: RecordBatch) -> Result<AppendAck> {
        self.append_batches(vec![batch]).await
    }

    /// Appends batches as one unit (all durable, or none): each is routed
    /// to shards as it is, without first joining them into one batch.
    /// Without a partition key they all go to the same next shard.
    pub async fn append_batches(&self, batches: Vec<RecordBatch>) -> Result<AppendAck> {
        let schema_version = self.version_of(&batches.iter().collect::<Vec<_>>())?;
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(AppendAck::default());
        }
        let shards = self.shards.len() as u32;
        let (parts, any_shard) = match self.options.partition_key.filter(|_| shards > 1) {
            Some(key) => {
                let mut parts = Vec::new();
                for batch in batches {
                    parts.extend(self.split_parts(batch, key)?);
                }
                (parts, false)
            }
            None => {
                let shard =
                    (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(shards)) as u32;
                (batches.into_iter().map(|b| (shard, b)).collect(), true)
            }
        };
        self.committer
            .append(Request {
                any_shard,
                ..Request::new(parts, schema_version)
            })
            .await
    }

    /// Appends a pipeline's output for one batch of its input: a batch
    /// (possibly empty) per output shard, each written as its own frame
    /// that records `progress` (source shard, next source sequence). Output
    /// and progress are then one durable write per shard;
    /// [`StreamLog::last_progress`] reads the progress back.
    pub async fn append_progress(
        &self,
        parts: Vec<(u32, RecordBatch)>,
        progress: Progress,
    ) -> Result<AppendAck> {
        if let Some((shard, _)) = parts.iter().find(|(s, _)| *s >= self.shard_count()) {
            return Err(Error::Internal(format!("shard {shard} out of range")));
        }
        let schema_version = self.version_of(&parts.iter().map(|(_, b)| b).collect::<Vec<_>>())?;
        self.committer
            .append(Request {
                progress: Some(progress),
                ..Request::new(parts, schema_version)
            })
            .await
    }

    /// The first sequence of `shard` appended at or after `time_ms`;
    /// `None` for a shard the log does not have. May read sealed segments'
    /// headers: call it where blocking is allowed.
    pub fn seq_at_time(&self, shard: u32, time_ms: i64) -> Result<Option<u64>> {
        self.shards
            .get(shard as usize)
            .map(|s| s.seq_at_time(time_ms))
            .transpose()
    }

    /// The newest progress recorded in `shard` for `source_shard`.
    pub fn last_progress(&self, shard: u32, source_shard: u32) -> Option<u64> {
        self.shards
            .get(shard as usize)
            .and_then(|s| s.last_progress(source_shard))
    }

    /// Starts a bulk append: rows pushed with [`StreamLog::spill`] are
    /// routed and written to disk, then stored as one unit by
    /// [`StreamLog::append_bulk`].
    pub fn bulk_spill(&self) -> Result<BulkSpill> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = (now_ms() as u64) << 16 | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff);
        BulkSpill::create(bulk::spill_dir(&self.dir, id), self.shard_count())
    }

    /// Routes a batch (of the stream's schema) into a bulk spill.
    pub fn spill(&self, spill: &mut BulkSpill, batch: RecordBatch) -> Result<()> {
        spill.set_version(self.version_of(&[&batch])?, batch.schema())?;
        for (shard, part) in self.route(batch)? {
            spill.push_part(shard, &part)?;
        }
        Ok(())
    }

    /// Stores a spilled bulk: all of it or, after a crash, none of it.
    pub async fn append_bulk(&self, files: BulkFiles) -> Result<AppendAck> {
        let schema_version = files.schema_version();
        self.committer
            .append(Request {
                bulk: Some(files),
                ..Request::new(Vec::new(), schema_version)
            })
            .await
    }

    /// Splits a batch by shard: the crc32c of the partition key's text form
    /// picks the shard (stable across restarts and versions); without a key
    /// the whole batch goes to the next shard in turn.
    fn route(&self, batch: RecordBatch) -> Result<Vec<(u32, RecordBatch)>> {
        let shards = self.shards.len() as u32;
        match self.options.partition_key.filter(|_| shards > 1) {
            Some(key) => self.split_parts(batch, key),
            None => {
                let shard =
                    (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(shards)) as u32;
                Ok(vec![(shard, batch)])
            }
        }
    }

    /// The parts of `batch` per shard by partition key column `key`.
    fn split_parts(&self, batch: RecordBatch, key: usize) -> Result<Vec<(u32, RecordBatch)>> {
        let mut parts = Vec::new();
        for (shard, rows) in self.rows_by_shard(&batch, key)?.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows))?
            };
            parts.push((shard as u32, part));
        }
        Ok(parts)
    }

    /// Row indices per shard by this stream's partition key; `None` when
    /// the stream has no key (or one shard).
    pub fn split_by_key(&self, batch: &RecordBatch) -> Result<Option<Vec<Vec<u32>>>> {
        match self.options.partition_key.filter(|_| self.shards.len() > 1) {
            Some(key) => self.rows_by_shard(batch, key).map(Some),
            None => Ok(None),
        }
    }

    /// Row indices per shard, by the partition key column `key`.
    fn rows_by_shard(&self, batch: &RecordBatch, key: usize) -> Result<Vec<Vec<u32>>> {
        let shards = self.shards.len() as u32;
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); shards as usize];
        for (row, shard) in key_shards(batch.column(key), shards)?
            .into_iter()
            .enumerate()
        {
            indices[shard as usize].push(row as u32);
        }
        Ok(indices)
    }

    /// Like [`StreamLog::append`], and tells where each row landed:
    /// `(shard, sequence)` per input row (for per-record answers).
    pub async fn append_positions(&self, batch: RecordBatch) -> Result<Vec<(u32, u64)>> {
        let n = batch.num_rows();
        if n == 0 {
            // A request whose every record failed: nothing to place.
            return Ok(Vec::new());
        }
        let shards = self.shards.len() as u32;
        let by_shard: Vec<(u32, Vec<u32>)> = match self.options.partition_key.filter(|_| shards > 1)
        {
            Some(key) => self
                .rows_by_shard(&batch, key)?
                .into_iter()
                .enumerate()
                .filter(|(_, rows)| !rows.is_empty())
                .map(|(s, rows)| (s as u32, rows))
                .collect(),
            None => vec![(u32::MAX, (0..n as u32).collect())],
        };
        let ack = self.append(batch).await?;
        let mut positions = vec![(0u32, 0u64); n];
        for (shard, rows) in by_shard {
            // Round-robin put the whole batch on the one shard in the ack.
            let range = ack
                .ranges
                .iter()
                .find(|r| shard == u32::MAX || r.0 == shard)
                .ok_or_else(|| Error::Internal("append ack misses a shard".into()))?;
            for (k, row) in rows.into_iter().enumerate() {
                positions[row as usize] = (range.0, range.1 + k as u64);
            }
        }
        Ok(positions)
    }

    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards.iter().map(|s| s.stats()).collect()
    }

    /// The next sequence number of every shard (the end of what is readable).
    pub fn end_offsets(&self) -> Vec<u64> {
        self.shards.iter().map(|s| s.next_seq()).collect()
    }

    pub fn subscribe(&self, shard: u32) -> Option<watch::Receiver<u64>> {
        self.shards.get(shard as usize).map(|s| s.subscribe())
    }

    /// Frames of `shard` from `from_seq` on, bounded by `max_records`
    /// (none for a shard the log does not have). May read a sealed
    /// segment's headers: call it where blocking is allowed.
    pub fn frames_from(
        &self,
        shard: u32,
        from_seq: u64,
        max_records: u64,
    ) -> Result<Vec<(Arc<std::fs::File>, FrameRef)>> {
        match self.shards.get(shard as usize) {
            Some(s) => s.frames_from(from_seq, max_records),
            None => Ok(Vec::new()),
        }
    }

    /// Records that consumer `name` still needs everything of `shard` from
    /// `seq` on; retention will not delete it.
    pub fn hold(&self, name: &str, shard: u32, seq: u64) {
        if let Ok(mut holds) = self.holds.lock() {
            let floors = holds
                .entry(name.to_string())
                .or_insert_with(|| vec![0; self.shards.len()]);
            if let Some(f) = floors.get_mut(shard as usize) {
                *f = seq;
            }
        }
    }

    pub fn release(&self, name: &str) {
        if let Ok(mut holds) = self.holds.lock() {
            holds.remove(name);
        }
    }

    /// Deletes whole segments older than the retention period that no
    /// consumer holds. Returns the number of segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<u64> {
        let Some(retention) = self.options.retention else {
            return Ok(0);
        };
        let cutoff_ms = now_ms - retention.as_millis() as i64;
        let holds = self
            .holds
            .lock()
            .map_err(|_| Error::Internal("holds lock poisoned".into()))?
            .clone();
        let mut deleted = 0;
        for shard in &self.shards {
            let floor = holds
                .values()
                .filter_map(|f| f.get(shard.id as usize).copied())
                .min()
                .unwrap_or(u64::MAX);
            deleted += shard.drop_expired(cutoff_ms, floor)?;
        }
        Ok(deleted)
    }

    /// Stops accepting appends and waits for everything already queued to
    /// be committed.
    pub fn close(&self) {
        self.committer.close();
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The shard of each value of a partition key column: the crc32c of its
/// text form (Arrow's cast to text) modulo `shards`; NULL goes to shard 0.
/// Integer keys are formatted directly (the same decimal text the cast
/// makes) instead of through a cast of the whole column.
fn key_shards(column: &ArrayRef, shards: u32) -> Result<Vec<u32>> {
    let shard_of = |text: &str| crc32c::crc32c(text.as_bytes()) % shards;
    if let Some(ints) = column.as_primitive_opt::<Int64Type>() {
        let mut text = String::with_capacity(20);
        return Ok(ints
            .iter()
            .map(|value| match value {
                None => 0,
                Some(v) => {
                    text.clear();
                    let _ = write!(text, "{v}");
                    shard_of(&text)
                }
            })
            .collect());
    }
    let text: ArrayRef = cast(column, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .ok_or_else(|| Error::Internal("partition key did not cast to text".into()))?;
    Ok((0..text.len())
        .map(|row| {
            if text.is_null(row) {
                0
            } else {
                shard_of(text.value(row))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;
