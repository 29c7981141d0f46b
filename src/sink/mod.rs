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
mod core;
pub mod delta;
mod delta_publish;
mod delta_stats;
mod endpoint;
pub mod layout;
pub mod postgres;
mod properties;
mod staging;
mod worker;

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::{mpsc, oneshot, watch};

use self::core::{file_prefix, FlushRequest};
pub use self::core::{SinkCore, SinkLimits, SinkStats};
pub use layout::Layout;
pub use properties::{parquet_properties, ROW_GROUP_ROWS};
use worker::ShardWorker;

use crate::catalog::{Catalog, SinkDef, SinkFormat, SinkProgress};
use crate::error::{Error, Result};
use crate::runtime::consumer::{
    lag_records, run_shard, set_error, ShardConsumer, ShardLoop, Tasks,
};
use crate::runtime::Stream;
use crate::storage::Location;

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
    /// then one task per source shard, and the Delta log's publisher and
    /// the compaction task where the sink has them.
    pub async fn start(
        def: SinkDef,
        source: Arc<Stream>,
        location: Location,
        catalog: Arc<Catalog>,
        errors: Arc<Stream>,
        limits: SinkLimits,
    ) -> Result<Arc<Sink>> {
        let shards = source.log.shard_count();
        let progress = committed_progress(&catalog, &def, shards)?;
        let core = SinkCore::load(def, source, location, catalog, errors, limits, &progress)?;
        let (tasks, stop) = Tasks::new();
        let mut flush = Vec::new();
        let mut workers = Vec::new();
        let mut postgres_target = None;
        for (shard, committed) in progress.into_iter().enumerate() {
            let shard = shard as u32;
            core.source
                .log
                .hold(&core.hold_name(), shard, committed.next);
            let (tx, rx) = mpsc::channel(16);
            flush.push(tx);
            workers.push(shard_worker(
                &core,
                shard,
                committed,
                rx,
                &mut postgres_target,
            )?);
        }
        tasks.push(tokio::spawn(run_workers(
            core.clone(),
            workers,
            stop.clone(),
        )));
        if let Some(log) = core.delta.clone() {
            tasks.push(tokio::spawn(log.run(core.clone(), stop.clone())));
        }
        if let Some(compaction) = core.def.compaction.clone() {
            let retention = match (core.def.file_retention_ms, core.def.format) {
                (None, SinkFormat::Delta) => delta::file_retention(&core.def),
                (Some(ms), _) => std::time::Duration::from_millis(ms),
                (None, _) => limits.compaction_grace,
            };
            let task = compact::run(core.clone(), compaction, retention, stop.clone());
            tasks.push(tokio::spawn(task));
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

/// Each source shard's committed progress; a shard never committed
/// starts at the sink's start offset.
fn committed_progress(catalog: &Catalog, def: &SinkDef, shards: u32) -> Result<Vec<SinkProgress>> {
    Ok(catalog
        .sink_progress(def.id, shards)?
        .into_iter()
        .enumerate()
        .map(|(s, p)| {
            p.unwrap_or_else(|| SinkProgress {
                next: def.start_offsets.get(s).copied().unwrap_or(0),
                ..SinkProgress::default()
            })
        })
        .collect())
}

/// The worker of one source shard for the sink's kind: files (Parquet,
/// Delta), an HTTP endpoint, or a PostgreSQL table (one target shared by
/// the shards, made by the first).
fn shard_worker(
    core: &Arc<SinkCore>,
    shard: u32,
    committed: SinkProgress,
    flush: mpsc::Receiver<FlushRequest>,
    postgres_target: &mut Option<Arc<postgres::Target>>,
) -> Result<Box<dyn ShardConsumer>> {
    Ok(match core.def.format {
        SinkFormat::Firehose | SinkFormat::Ndjson => Box::new(endpoint::EndpointWorker::new(
            core.clone(),
            shard,
            committed,
            flush,
        )?),
        SinkFormat::Postgres => {
            let target = match postgres_target {
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
                flush,
            )?)
        }
        SinkFormat::Parquet | SinkFormat::Delta => {
            Box::new(ShardWorker::new(core.clone(), shard, committed, flush))
        }
    })
}

/// Starts the shard tasks once leftovers of uncommitted uploads are gone
/// (they would otherwise race with new uploads of the same names); until
/// the store answers, the sink shows `retrying`.
async fn run_workers(
    core: Arc<SinkCore>,
    workers: Vec<Box<dyn ShardConsumer>>,
    mut stop: watch::Receiver<bool>,
) {
    if !clean_location(&core, &mut stop).await {
        return;
    }
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(shard, worker)| {
            let core = core.clone();
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
}

/// Recovers staged uploads and removes files the catalog does not list,
/// retrying with backoff; `false` if stopped first.
async fn clean_location(core: &SinkCore, stop: &mut watch::Receiver<bool>) -> bool {
    let mut backoff = worker::BACKOFF.min;
    loop {
        let cleaned = async {
            staging::recover(core).await?;
            remove_unlisted(core).await
        };
        match cleaned.await {
            Ok(()) => {
                set_error(&core.stats.last_error, None);
                return true;
            }
            Err(e) => {
                tracing::warn!(sink = %core.def.name, error = %e, "cannot clean the sink's location yet; retrying");
                set_error(&core.stats.last_error, Some(e.to_string()));
            }
        }
        backoff = worker::BACKOFF.wait(backoff, stop).await;
        if *stop.borrow() {
            return false;
        }
    }
}
