//! What a sink's tasks share, whatever its kind: its definition, source,
//! location and layout, the committed files, the counters shown in
//! `sluice.sinks` and `/metrics`, bounds on buffered output, and flush
//! requests.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::RecordBatch;
use tokio::sync::oneshot;

use super::delta;
use super::layout::Layout;
use crate::catalog::{Catalog, SinkDef, SinkFile, SinkFormat, SinkProgress};
use crate::error::{Error, Result};
use crate::runtime::Stream;
use crate::storage::Location;

/// Bounds on one shard task's buffered output.
#[derive(Debug, Clone, Copy)]
pub struct SinkLimits {
    /// Open partition files per shard task; one more rolls them all.
    pub max_open_files: usize,
    /// Bytes buffered in open writers per shard task.
    pub max_buffered_bytes: u64,
    /// Size of an upload part (and of the buffer before one starts).
    pub upload_part_size_bytes: usize,
    /// How long compacted-away files stay readable for running queries.
    pub compaction_grace: std::time::Duration,
}

/// A flush request: deliver up to `offset`, answer when committed.
pub(crate) struct FlushRequest {
    pub(super) offset: u64,
    pub(super) done: oneshot::Sender<std::result::Result<(), String>>,
}

impl FlushRequest {
    /// Answers the waiting requests that `committed` covers.
    pub(super) fn answer_covered(waiting: &mut Vec<FlushRequest>, committed: u64) {
        let (done, rest): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|f| f.offset <= committed);
        *waiting = rest;
        for f in done {
            let _ = f.done.send(Ok(()));
        }
    }

    /// A request as it arrives: answered at once when `committed` covers
    /// it, else kept waiting. False when the sink is going away.
    pub(super) fn arrived(
        request: Option<FlushRequest>,
        committed: u64,
        waiting: &mut Vec<FlushRequest>,
    ) -> bool {
        match request {
            Some(request) if request.offset <= committed => {
                let _ = request.done.send(Ok(()));
                true
            }
            Some(request) => {
                waiting.push(request);
                true
            }
            None => false,
        }
    }
}

/// Counters and state shown in `sluice.sinks`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Next source offset to deliver per shard (committed).
    pub committed: Vec<AtomicU64>,
    pub last_commit_ms: AtomicI64,
    pub last_error: Mutex<Option<String>>,
    /// Records sent to `sluice.errors` at delivery.
    pub dead_letters: AtomicU64,
    /// Compactions done, and the files they merged away (since start).
    pub compactions: AtomicU64,
    pub files_compacted: AtomicU64,
    /// The Delta publisher's last failure (Delta sinks).
    pub delta_error: Mutex<Option<String>>,
    /// Bytes each shard task holds in open files' writers and pending
    /// rows, after its last step (`sluice_sink_buffered_bytes`).
    pub buffered_bytes: Vec<AtomicU64>,
    /// The Parquet bytes of a running compaction's inputs, which it holds
    /// fetched (decoded, a worker file takes a few times more); 0 between
    /// compactions (`sluice_sink_compaction_bytes`).
    pub compaction_bytes: AtomicU64,
}

impl SinkStats {
    /// The failure to show: a shard's, else the Delta publisher's.
    pub fn error(&self) -> Option<String> {
        let get = |m: &Mutex<Option<String>>| m.lock().ok().and_then(|e| e.clone());
        get(&self.last_error).or_else(|| get(&self.delta_error))
    }

    /// What every shard task buffers now.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes
            .iter()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

/// What a sink's tasks share.
#[derive(Debug)]
pub struct SinkCore {
    pub def: SinkDef,
    pub source: Arc<Stream>,
    pub location: Location,
    pub layout: Arc<Layout>,
    pub stats: SinkStats,
    pub limits: SinkLimits,
    pub(super) catalog: Arc<Catalog>,
    pub(super) errors: Arc<Stream>,
    /// Delta sinks: the log the outbox is published to.
    pub delta: Option<Arc<delta::DeltaLog>>,
    /// Committed files, replaced (not mutated) on every commit so a query
    /// holds one consistent set.
    files: RwLock<Arc<Vec<SinkFile>>>,
}

impl SinkCore {
    /// The committed files now.
    pub fn files(&self) -> Arc<Vec<SinkFile>> {
        self.files
            .read()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) fn add_files(&self, added: Vec<SinkFile>) {
        let mut guard = self.files.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<SinkFile> = guard.as_ref().clone();
        next.extend(added);
        *guard = Arc::new(next);
    }

    /// Compaction's swap in memory (after the catalog's).
    pub(super) fn replace_files(&self, removed: &[String], added: SinkFile) {
        let mut guard = self.files.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<SinkFile> = guard
            .iter()
            .filter(|f| !removed.contains(&f.path))
            .cloned()
            .collect();
        next.push(added);
        *guard = Arc::new(next);
    }

    /// Records that a shard delivered everything before `next` (sinks
    /// that write no files: HTTP endpoints, PostgreSQL).
    pub(super) async fn commit_progress(&self, shard: u32, next: u64) -> Result<()> {
        let catalog = self.catalog.clone();
        let sink_id = self.def.id;
        let progress = SinkProgress {
            next,
            ..SinkProgress::default()
        };
        tokio::task::spawn_blocking(move || {
            catalog.commit_sink(sink_id, &[], shard, &progress, false)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(c) = self.stats.committed.get(shard as usize) {
            c.store(next, std::sync::atomic::Ordering::Relaxed);
        }
        self.stats
            .last_commit_ms
            .store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The retention-hold name of this sink on its source.
    pub(super) fn hold_name(&self) -> String {
        format!("sink:{}", self.def.name)
    }
}

impl SinkCore {
    /// The shared state of a sink starting from `progress`: its committed
    /// files, counters, and for a Delta sink its log.
    pub(super) fn load(
        def: SinkDef,
        source: Arc<Stream>,
        location: Location,
        catalog: Arc<Catalog>,
        errors: Arc<Stream>,
        limits: SinkLimits,
        progress: &[SinkProgress],
    ) -> Result<Arc<SinkCore>> {
        let layout = Arc::new(Layout::new(&def, &source.schema)?);
        let files = catalog.sink_files(def.id)?;
        let delta = match def.format {
            SinkFormat::Delta => Some(Arc::new(delta::DeltaLog::new(&location, def.id)?)),
            _ => None,
        };
        Ok(Arc::new(SinkCore {
            stats: SinkStats {
                committed: progress.iter().map(|p| AtomicU64::new(p.next)).collect(),
                buffered_bytes: progress.iter().map(|_| AtomicU64::new(0)).collect(),
                last_commit_ms: AtomicI64::new(
                    files.iter().map(|f| f.committed_at_ms).max().unwrap_or(0),
                ),
                ..SinkStats::default()
            },
            files: RwLock::new(Arc::new(files)),
            delta,
            def,
            source,
            location,
            layout,
            limits,
            catalog,
            errors,
        }))
    }
}

/// Each row of `batch` as one JSON object (HTTP records, dead letters).
pub(super) fn json_records(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(out).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The file-name prefix of one sink's files; names carry the sink id so
/// sinks sharing a location never clean up each other's files.
pub fn file_prefix(sink_id: u64) -> String {
    format!("part-{sink_id}-")
}
