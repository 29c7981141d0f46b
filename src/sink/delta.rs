//! Delta sinks: the sink's Parquet files, committed to a Delta log
//! (`_delta_log/` at the location) so that engines reading the table
//! (Spark, Trino, Athena, Databricks, delta-rs, DuckDB) see each commit
//! whole or not at all, and a compaction as one swap.
//!
//! The catalog stays the authority: a shard's commit (and a compaction's
//! swap) queues its change in the catalog's outbox in the same
//! transaction as its files and offsets. One publisher task per sink
//! copies queued changes into the log, in order, as one Delta transaction
//! carrying `txn { appId: "sluice-sink-<id>", version: <last change> }`,
//! then forgets them. After a crash before the Delta commit, the change is
//! still queued and is published; after a crash between the Delta commit
//! and the forgetting, the log's `txn` version shows it is already there.
//! Either way every change reaches the log exactly once. sluice must be
//! the table's only writer under that app id; other writers may append.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake_core::logstore::LogStoreRef;
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, OutputMode};
use deltalake_core::{DeltaTable, TableProperty};
use tokio::sync::{watch, Notify};

use super::core::SinkCore;
use super::layout::Layout;
use crate::catalog::{DeltaChange, SinkDef, SinkFile};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::consumer::set_error;
use crate::storage::delta::{delta_error, SNAPSHOT_RELOAD_VERSIONS};
use crate::storage::Location;

/// Commits between checkpoints (`delta.checkpointInterval`): readers
/// replay at most this many JSON commits after the last checkpoint.
pub const CHECKPOINT_INTERVAL: u32 = 10;
/// How long files a compaction replaced stay readable by default: Delta's
/// own default (`delta.deletedFileRetentionDuration`, one week), so time
/// travel and long reads of older versions keep working.
pub const DEFAULT_FILE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a Delta sink keeps files a compaction replaced.
pub fn file_retention(def: &SinkDef) -> Duration {
    def.file_retention_ms
        .map_or(DEFAULT_FILE_RETENTION, Duration::from_millis)
}

/// Queued changes folded into one Delta commit at most.
const MAX_CHANGES_PER_COMMIT: usize = 256;
/// How often the publisher looks at the outbox without being woken.
const POLL: Duration = Duration::from_secs(1);

/// What `FLUSH SINK` waits on: the last change the log holds, and the
/// publisher's last failure with the attempt it belongs to.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub seq: u64,
    pub attempts: u64,
    pub error: Option<String>,
}

/// A sink's Delta log and its publisher's state.
#[derive(Debug)]
pub struct DeltaLog {
    log_store: LogStoreRef,
    app_id: String,
    /// The table's version (`sluice.sinks.delta_version`); -1 before load.
    pub version: AtomicI64,
    /// Versions the publisher's snapshot has replayed since it was loaded
    /// (`sluice_sink_delta_snapshot_versions`; bounded by
    /// [`SNAPSHOT_RELOAD_VERSIONS`]).
    pub snapshot_versions: AtomicI64,
    /// Changes waiting in the outbox, as of the publisher's last look
    /// and what it published since (`sluice_sink_delta_outbox_changes`;
    /// it reads at most 256 at a time).
    pub outbox_changes: AtomicI64,
    pub published: watch::Sender<Published>,
    pub wake: Notify,
}

impl DeltaLog {
    pub fn new(location: &Location, sink_id: u64) -> Result<DeltaLog> {
        let log_store = crate::storage::delta::log_store(location)?;
        Ok(DeltaLog {
            log_store,
            app_id: format!("sluice-sink-{sink_id}"),
            version: AtomicI64::new(-1),
            snapshot_versions: AtomicI64::new(0),
            outbox_changes: AtomicI64::new(0),
            published: watch::Sender::new(Published::default()),
            wake: Notify::new(),
        })
    }

    /// Opens the table, creating it with the sink's columns and partition
    /// columns when the location holds none; a table there with other
    /// columns is refused (42P07-class: the location is taken).
    ///
    /// With `evolve` (a running sink, never a CREATE SINK), a table this
    /// sink created follows its source's schema changes: columns the
    /// stream gained are added (`ADD COLUMN`, nullable: older files lack
    /// them), and columns it dropped stay in the table, nullable, NULL in
    /// newer files.
    pub async fn open(&self, def: &SinkDef, layout: &Layout, evolve: bool) -> Result<DeltaTable> {
        let mut table = DeltaTable::new(self.log_store.clone());
        let exists = self
            .log_store
            .is_delta_table_location()
            .await
            .map_err(delta_error)?;
        if exists {
            table.load().await.map_err(delta_error)?;
            table = self.follow_columns(table, def, layout, evolve).await?;
        } else {
            let schema: StructType = layout
                .table_schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| Error::InvalidParameter(format!("no Delta type for a column: {e}")))?;
            let partitions: Vec<String> = layout
                .partition_fields
                .iter()
                .map(|f| f.name().to_string())
                .collect();
            table = CreateBuilder::new()
                .with_log_store(self.log_store.clone())
                .with_table_name(&def.name)
                .with_columns(schema.fields().cloned())
                .with_partition_columns(partitions)
                .with_configuration_property(
                    TableProperty::CheckpointInterval,
                    Some(CHECKPOINT_INTERVAL.to_string()),
                )
                // Other engines' VACUUM keeps what sluice keeps.
                .with_configuration_property(
                    TableProperty::DeletedFileRetentionDuration,
                    Some(format!(
                        "interval {} seconds",
                        file_retention(def).as_secs()
                    )),
                )
                .await
                .map_err(delta_error)?;
        }
        self.version
            .store(table.version().map_or(-1, |v| v as i64), Ordering::Relaxed);
        Ok(table)
    }

    /// Publishes queued changes until none is left or `stop` is raised.
    pub async fn run(self: Arc<Self>, core: Arc<SinkCore>, mut stop: watch::Receiver<bool>) {
        let mut table: Option<Loaded> = None;
        let mut backoff = super::worker::BACKOFF.min;
        loop {
            let attempt = self.publish(&core, &mut table).await;
            self.published.send_modify(|p| {
                p.attempts += 1;
                p.error = attempt.as_ref().err().map(|e| e.to_string());
            });
            match attempt {
                Ok(more) => {
                    set_error(&core.stats.delta_error, None);
                    backoff = super::worker::BACKOFF.min;
                    if more {
                        continue;
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(sink = %core.def.name, error = %e, "cannot publish to the Delta log yet; retrying");
                    set_error(&core.stats.delta_error, Some(e.to_string()));
                    // Reload: the failure may have left the snapshot behind.
                    table = None;
                    backoff = super::worker::BACKOFF.wait(backoff, &mut stop).await;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One Delta commit of the oldest queued changes; true if more wait.
    async fn publish(&self, core: &SinkCore, loaded: &mut Option<Loaded>) -> Result<bool> {
        let catalog = core.catalog.clone();
        let sink_id = core.def.id;
        // The last sequence number first: when the outbox is empty after
        // it, every change up to it is in the log (a restart forgets what
        // `published` said).
        let (last_seq, queued) = tokio::task::spawn_blocking(move || -> Result<_> {
            let last_seq = catalog.delta_last_seq(sink_id)?;
            Ok((
                last_seq,
                catalog.delta_outbox(sink_id, MAX_CHANGES_PER_COMMIT)?,
            ))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.outbox_changes
            .store(queued.len() as i64, Ordering::Relaxed);
        if queued.is_empty() {
            self.published.send_modify(|p| p.seq = p.seq.max(last_seq));
            return Ok(false);
        }
        let stale = loaded.as_ref().is_some_and(|l| {
            l.table.version().unwrap_or(0) >= l.at_version + SNAPSHOT_RELOAD_VERSIONS
        });
        if loaded.is_none() || stale {
            // Dropped before the new load, so the two are never held at once.
            *loaded = None;
            let table = self.open(&core.def, &core.layout, true).await?;
            let at_version = table.version().unwrap_or(0);
            *loaded = Some(Loaded { table, at_version });
        }
        let Some(Loaded { table, at_version }) = loaded.as_mut() else {
            return Ok(false);
        };
        table.update_incremental(None).await.map_err(delta_error)?;
        let replayed = table.version().unwrap_or(0).saturating_sub(*at_version);
        self.snapshot_versions.store(
            i64::try_from(replayed).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let state = table.snapshot().map_err(delta_error)?;
        let in_log = state
            .transaction_version(self.log_store.as_ref(), &self.app_id)
            .await
            .map_err(delta_error)?
            .unwrap_or(0);
        let batch = next_batch(&queued, in_log);
        let last = match batch.last() {
            Some(change) => change.seq,
            // Everything queued is in the log already (a crash after its
            // commit): only forgetting it is left.
            None => queued.iter().map(|c| c.seq).max().unwrap_or(0),
        };
        if !batch.is_empty() {
            let actions = actions(core, &batch)?;
            let operation = if batch.iter().any(|c| c.data_change) {
                DeltaOperation::StreamingUpdate {
                    output_mode: OutputMode::Append,
                    query_id: self.app_id.clone(),
                    epoch_id: last as i64,
                }
            } else {
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: core
                        .def
                        .compaction
                        .as_ref()
                        .map_or(0, |c| c.target_size_bytes as i64),
                }
            };
            let txn = Transaction::new_with_last_update(&self.app_id, last as i64, Some(now_ms()));
            crate::fail::io("sink.delta_commit")
                .map_err(|e| Error::Storage(format!("Delta commit failed: {e}")))?;
            let done =
                CommitBuilder::from(CommitProperties::default().with_application_transaction(txn))
                    .with_actions(actions)
                    .build(Some(state), self.log_store.clone(), operation)
                    .await
                    .map_err(delta_error)?;
            self.version.store(done.version() as i64, Ordering::Relaxed);
            crate::fail::point("sink.after_delta_commit");
        }
        let catalog = core.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.delta_published(sink_id, last))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        // Before `published` moves: FLUSH SINK returns on it.
        let left = queued.iter().filter(|c| c.seq > last).count();
        self.outbox_changes.store(left as i64, Ordering::Relaxed);
        self.published.send_modify(|p| p.seq = p.seq.max(last));
        Ok(queued.len() == MAX_CHANGES_PER_COMMIT)
    }
}

/// The publisher's table and the version it was loaded at.
struct Loaded {
    table: DeltaTable,
    at_version: u64,
}

impl DeltaLog {
    /// An existing table's columns against the sink's: equal, or (with
    /// `evolve`, on a table this sink made) brought to the sink's.
    async fn follow_columns(
        &self,
        table: DeltaTable,
        def: &SinkDef,
        layout: &Layout,
        evolve: bool,
    ) -> Result<DeltaTable> {
        let snapshot = table.snapshot().map_err(delta_error)?;
        let theirs: StructType = snapshot.schema().as_ref().clone();
        let ours: StructType = layout
            .table_schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::InvalidParameter(format!("no Delta type for a column: {e}")))?;
        let names = |s: &StructType| s.fields().map(|f| f.name().to_string()).collect::<Vec<_>>();
        let refused = || {
            Error::InvalidParameter(format!(
                "the location holds a Delta table with columns ({}), not the sink's ({})",
                names(&theirs).join(", "),
                names(&ours).join(", ")
            ))
        };
        if names(&theirs) == names(&ours) {
            return Ok(table);
        }
        let ours_by_sink = snapshot.metadata().name() == Some(def.name.as_str());
        if !evolve || !ours_by_sink {
            return Err(refused());
        }
        for field in ours.fields() {
            if let Some(old) = theirs.field(field.name()) {
                if old.data_type() != field.data_type() {
                    return Err(Error::FeatureNotSupported(format!(
                        "column \"{}\" of Delta sink \"{}\" is {} in the table and {} in the stream; Delta tables change types only with the typeWidening feature, which Athena and Spark before 4.0 cannot read",
                        field.name(),
                        def.name,
                        old.data_type(),
                        field.data_type()
                    )));
                }
            }
        }
        let added: Vec<_> = ours
            .fields()
            .filter(|f| theirs.field(f.name()).is_none())
            .map(|f| {
                let mut f = f.clone();
                f.nullable = true;
                f
            })
            .collect();
        let dropped: Vec<String> = theirs
            .fields()
            .filter(|f| ours.field(f.name()).is_none() && !f.is_nullable())
            .map(|f| f.name().to_string())
            .collect();
        let mut table = table;
        if !added.is_empty() {
            tracing::info!(sink = %def.name, columns = ?added.iter().map(|f| f.name().to_string()).collect::<Vec<_>>(), "adding the stream's new columns to the Delta table");
            table = table
                .add_columns()
                .with_fields(added)
                .await
                .map_err(delta_error)?;
        }
        for column in dropped {
            table = table
                .drop_column_not_null()
                .with_column(column)
                .await
                .map_err(delta_error)?;
        }
        Ok(table)
    }
}

/// The queued changes after `in_log` that go into one commit: in order,
/// stopping before a change that removes a file added earlier in the
/// same commit (a Delta version may not both add and remove a path).
fn next_batch(queued: &[DeltaChange], in_log: i64) -> Vec<DeltaChange> {
    let mut added: HashSet<&str> = HashSet::new();
    let mut batch = Vec::new();
    for change in queued.iter().filter(|c| c.seq as i64 > in_log) {
        if change
            .removed
            .iter()
            .any(|f| added.contains(f.path.as_str()))
        {
            break;
        }
        added.extend(change.added.iter().map(|f| f.path.as_str()));
        batch.push(change.clone());
    }
    batch
}

fn actions(core: &SinkCore, changes: &[DeltaChange]) -> Result<Vec<Action>> {
    let now = now_ms();
    let mut out = Vec::new();
    for change in changes {
        for file in &change.removed {
            out.push(Action::Remove(Remove {
                path: relative_path(core, file)?,
                data_change: change.data_change,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(partition_values(core, file)),
                size: Some(file.bytes as i64),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
        for file in &change.added {
            out.push(Action::Add(Add {
                path: relative_path(core, file)?,
                partition_values: partition_values(core, file),
                size: file.bytes as i64,
                modification_time: file.committed_at_ms,
                data_change: change.data_change,
                stats: file.stats.clone(),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            }));
        }
    }
    Ok(out)
}

fn partition_values(core: &SinkCore, file: &SinkFile) -> HashMap<String, Option<String>> {
    core.layout
        .partition_fields
        .iter()
        .zip(&file.partition_values)
        .map(|(f, v)| (f.name().to_string(), v.clone()))
        .collect()
}

/// The file's path from the table root, as the URI-encoded relative path
/// Delta's add and remove actions carry (`%` of Hive escapes becomes `%25`).
fn relative_path(core: &SinkCore, file: &SinkFile) -> Result<String> {
    let prefix = core.location.prefix.as_ref();
    let relative = if prefix.is_empty() {
        Some(file.path.as_str())
    } else {
        file.path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
    }
    .ok_or_else(|| {
        Error::Internal(format!(
            "sink file {} is outside the sink's location",
            file.path
        ))
    })?;
    let mut out = String::with_capacity(relative.len());
    for c in relative.chars() {
        match c {
            '%' => out.push_str("%25"),
            ' ' => out.push_str("%20"),
            _ => out.push(c),
        }
    }
    Ok(out)
}
