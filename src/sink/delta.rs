//! Delta sinks: the sink's Parquet files, committed to a Delta log
//! (`_delta_log/` at the location) so that engines reading the table
//! (Spark, Trino, Athena, Databricks, delta-rs, DuckDB) see each commit
//! whole or not at all, and a compaction as one swap.
//!
//! The catalog stays the authority: a shard's commit (and a compaction's
//! swap) queues its change in the catalog's outbox in the same
//! transaction as its files and offsets. One publisher task per sink
//! (`delta_publish`)
//! copies queued changes into the log, in order, as one Delta transaction
//! carrying `txn { appId: "sluice-sink-<id>", version: <last change> }`,
//! then forgets them. After a crash before the Delta commit, the change is
//! still queued and is published; after a crash between the Delta commit
//! and the forgetting, the log's `txn` version shows it is already there.
//! Either way every change reaches the log exactly once. sluice must be
//! the table's only writer under that app id; other writers may append.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::StructType;
use deltalake_core::logstore::LogStoreRef;
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::{DeltaTable, TableProperty};
use tokio::sync::{watch, Notify};

use super::layout::Layout;
use crate::catalog::{DeltaChange, SinkDef};
use crate::error::{Error, Result};
use crate::storage::delta::delta_error;
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
pub(super) const MAX_CHANGES_PER_COMMIT: usize = 256;
/// How often the publisher looks at the outbox without being woken.
pub(super) const POLL: Duration = Duration::from_secs(1);

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
    pub(super) log_store: LogStoreRef,
    pub(super) app_id: String,
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
pub(super) fn next_batch(queued: &[DeltaChange], in_log: i64) -> Vec<DeltaChange> {
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
