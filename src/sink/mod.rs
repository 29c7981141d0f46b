//! Sinks: deliver a stream as Parquet files in Hive partitions (plain, or
//! as a Delta table) to a local directory or S3, exactly once, and expose
//! what was delivered as a table.
//!
//! One task per source shard reads from the shard's committed offset,
//! splits rows by partition, and streams them into one Parquet writer per
//! open partition (multipart uploads, so nothing is visible before it is
//! complete). A file rolls on its size or the age of its oldest record
//! (or when too many are open, too much is buffered, or on `FLUSH SINK`):
//! the task completes it and commits it together with the shard's new
//! progress ([`SinkProgress`]) in one catalog transaction. A file's name
//! is fixed by (sink, shard, first source offset, partition), so a replay
//! after a crash rewrites the same names; files the catalog does not list
//! are never read and are removed when the sink starts. Plain Parquet
//! files wait under `_sluice_staging/` until committed (`staging`); a
//! Delta sink's commits reach its log through the catalog's outbox
//! ([`delta`]). Storage failures are retried with bounded backoff; the
//! source keeps the records meanwhile (retention holds).

mod compact;
pub mod delta;
mod delta_stats;
mod endpoint;
pub mod layout;
pub mod postgres;
mod staging;
mod worker;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::{mpsc, oneshot};

pub use layout::Layout;
use worker::ShardWorker;
pub use worker::{parquet_properties, ROW_GROUP_ROWS};

use crate::catalog::{Catalog, SinkDef, SinkFile, SinkFormat, SinkProgress};
use crate::error::{Error, Result};
use crate::runtime::consumer::{
    lag_records, run_shard, set_error, ShardConsumer, ShardLoop, Tasks,
};
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
    offset: u64,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

impl FlushRequest {
    /// Answers the waiting requests that `committed` covers.
    fn answer_covered(waiting: &mut Vec<FlushRequest>, committed: u64) {
        let (done, rest): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|f| f.offset <= committed);
        *waiting = rest;
        for f in done {
            let _ = f.done.send(Ok(()));
        }
    }

    /// A request as it arrives: answered at once when `committed` covers
    /// it, else kept waiting. False when the sink is going away.
    fn arrived(
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
    catalog: Arc<Catalog>,
    errors: Arc<Stream>,
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

    fn add_files(&self, added: Vec<SinkFile>) {
        let mut guard = self.files.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<SinkFile> = guard.as_ref().clone();
        next.extend(added);
        *guard = Arc::new(next);
    }

    /// Compaction's swap in memory (after the catalog's).
    fn replace_files(&self, removed: &[String], added: SinkFile) {
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
    async fn commit_progress(&self, shard: u32, next: u64) -> Result<()> {
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
    fn hold_name(&self) -> String {
        format!("sink:{}", self.def.name)
    }
}

/// A running sink.
#[derive(Debug)]
pub struct Sink {
    pub core: Arc<SinkCore>,
    flush: Vec<mpsc::Sender<FlushRequest>>,
    tasks: Tasks,
}

impl Sink {
    /// Loads the committed state and starts: first removing files of this
    /// sink the catalog does not list (a crash between upload and commit),
    /// then one task per source shard.
    pub async fn start(
        def: SinkDef,
        source: Arc<Stream>,
        location: Location,
        catalog: Arc<Catalog>,
        errors: Arc<Stream>,
        limits: SinkLimits,
    ) -> Result<Arc<Sink>> {
        let layout = Arc::new(Layout::new(&def, &source.schema)?);
        let shards = source.log.shard_count();
        let progress: Vec<SinkProgress> = catalog
            .sink_progress(def.id, shards)?
            .into_iter()
            .enumerate()
            .map(|(s, p)| {
                p.unwrap_or_else(|| SinkProgress {
                    next: def.start_offsets.get(s).copied().unwrap_or(0),
                    ..SinkProgress::default()
                })
            })
            .collect();
        let committed: Vec<u64> = progress.iter().map(|p| p.next).collect();
        let files = catalog.sink_files(def.id)?;
        let delta = match def.format {
            SinkFormat::Delta => Some(Arc::new(delta::DeltaLog::new(&location, def.id)?)),
            _ => None,
        };
        let core = Arc::new(SinkCore {
            stats: SinkStats {
                committed: committed.iter().map(|c| AtomicU64::new(*c)).collect(),
                buffered_bytes: committed.iter().map(|_| AtomicU64::new(0)).collect(),
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
        });
        let (tasks, stop_rx) = Tasks::new();
        let mut flush = Vec::new();
        let mut workers = Vec::new();
        let mut postgres_target: Option<Arc<postgres::Target>> = None;
        for shard in 0..shards {
            core.source
                .log
                .hold(&core.hold_name(), shard, committed[shard as usize]);
            let (tx, rx) = mpsc::channel(16);
            flush.push(tx);
            let committed = progress[shard as usize].clone();
            let worker: Box<dyn ShardConsumer> = match core.def.format {
                SinkFormat::Firehose | SinkFormat::Ndjson => Box::new(
                    endpoint::EndpointWorker::new(core.clone(), shard, committed, rx)?,
                ),
                SinkFormat::Postgres => {
                    let target = match &postgres_target {
                        Some(t) => t.clone(),
                        None => postgres_target
                            .insert(Arc::new(postgres::Target::new(&core.def)?))
                            .clone(),
                    };
                    Box::new(postgres::PostgresWorker::new(
                        core.clone(),
                        target,
                        shard,
                        committed,
                        rx,
                    )?)
                }
                SinkFormat::Parquet | SinkFormat::Delta => {
                    Box::new(ShardWorker::new(core.clone(), shard, committed, rx))
                }
            };
            workers.push(worker);
        }
        // The shard tasks start once leftovers of uncommitted uploads are
        // gone (they would otherwise race with new uploads of the same
        // names); until the store answers, the sink shows `retrying`.
        let starter_core = core.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut backoff = worker::BACKOFF.min;
            loop {
                let cleaned = async {
                    staging::recover(&starter_core).await?;
                    remove_unlisted(&starter_core).await
                };
                match cleaned.await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(sink = %starter_core.def.name, error = %e, "cannot clean the sink's location yet; retrying");
                        set_error(&starter_core.stats.last_error, Some(e.to_string()));
                    }
                }
                backoff = worker::BACKOFF.wait(backoff, &mut stop).await;
                if *stop.borrow() {
                    return;
                }
            }
            set_error(&starter_core.stats.last_error, None);
            let handles: Vec<_> = workers
                .into_iter()
                .enumerate()
                .map(|(shard, worker)| {
                    let core = starter_core.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let hold_name = core.hold_name();
                        let at = ShardLoop {
                            source: &core.source,
                            shard: shard as u32,
                            hold_name: &hold_name,
                            last_error: &core.stats.last_error,
                            backoff: worker::BACKOFF,
                        };
                        run_shard(worker, at, stop).await;
                    })
                })
                .collect();
            for handle in handles {
                let _ = handle.await;
            }
        }));
        if let Some(log) = core.delta.clone() {
            tasks.push(tokio::spawn(log.run(core.clone(), stop_rx.clone())));
        }
        if let Some(compaction) = core.def.compaction.clone() {
            let retention = match (core.def.file_retention_ms, core.def.format) {
                (None, SinkFormat::Delta) => delta::file_retention(&core.def),
                (Some(ms), _) => std::time::Duration::from_millis(ms),
                (None, _) => limits.compaction_grace,
            };
            tasks.push(tokio::spawn(compact::run(
                core.clone(),
                compaction,
                retention,
                stop_rx.clone(),
            )));
        }
        Ok(Arc::new(Sink { core, flush, tasks }))
    }

    pub fn name(&self) -> &str {
        &self.core.def.name
    }

    /// Delivers everything acknowledged in the source before this call and
    /// returns once it is committed (or the first failure).
    pub async fn flush(&self) -> Result<()> {
        let ends = self.core.source.log.end_offsets();
        let mut waits = Vec::new();
        for (shard, tx) in self.flush.iter().enumerate() {
            let (done, wait) = oneshot::channel();
            let offset = ends.get(shard).copied().unwrap_or(0);
            tx.send(FlushRequest { offset, done })
                .await
                .map_err(|_| Error::Internal(format!("sink {} is stopped", self.name())))?;
            waits.push(wait);
        }
        for wait in waits {
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => return Err(Error::Storage(msg)),
                Err(_) => return Err(Error::ShuttingDown),
            }
        }
        match &self.core.delta {
            Some(log) => self.flush_delta(log).await,
            None => Ok(()),
        }
    }

    /// Waits until the Delta log holds every change committed so far, or
    /// fails with the publisher's next failure.
    async fn flush_delta(&self, log: &delta::DeltaLog) -> Result<()> {
        let catalog = self.core.catalog.clone();
        let sink_id = self.core.def.id;
        let target = tokio::task::spawn_blocking(move || catalog.delta_last_seq(sink_id))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let mut published = log.published.subscribe();
        let first_attempt = published.borrow().attempts + 1;
        log.wake.notify_one();
        loop {
            {
                let now = published.borrow_and_update();
                if now.seq >= target {
                    return Ok(());
                }
                if let (Some(error), true) = (&now.error, now.attempts >= first_attempt) {
                    return Err(Error::Storage(format!(
                        "the files are committed but the Delta log does not list them yet (it will be retried): {error}"
                    )));
                }
            }
            if published.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    /// Source records not yet committed, over all shards.
    pub fn lag_records(&self) -> u64 {
        lag_records(&self.core.source.log, &self.core.stats.committed)
    }

    pub fn state(&self) -> &'static str {
        match self.tasks.state(&self.core.stats.last_error, "retrying") {
            "running" => self.tasks.state(&self.core.stats.delta_error, "retrying"),
            other => other,
        }
    }

    /// Stops the tasks; what they buffered and did not commit is
    /// delivered again from the committed offsets at the next start.
    pub async fn stop(&self) {
        self.tasks.stop().await;
        self.core.source.log.release(&self.core.hold_name());
    }
}

/// Each row of `batch` as one JSON object (HTTP records, dead letters).
fn json_records(batch: &RecordBatch) -> Result<Vec<String>> {
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

/// Deletes objects under the sink's location that carry its file prefix
/// (or are a local upload's staging file) and that the catalog neither
/// lists nor keeps as retired: leftovers of an upload whose commit never
/// happened.
async fn remove_unlisted(core: &SinkCore) -> Result<()> {
    let (location, sink_id) = (&core.location, core.def.id);
    let files = core.files();
    let retired = core.catalog.retired_files(sink_id)?;
    let listed: std::collections::HashSet<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .chain(retired.iter().map(|(path, _)| path.as_str()))
        .collect();
    let prefix = file_prefix(sink_id);
    let objects: Vec<_> = location
        .store
        .list(Some(&location.prefix))
        .try_collect()
        .await?;
    for meta in objects {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if name.starts_with(&prefix) && !listed.contains(meta.location.as_ref()) {
            tracing::info!(path = %meta.location, "removing an uncommitted sink file");
            location.store.delete(&meta.location).await?;
        }
    }
    Ok(())
}
