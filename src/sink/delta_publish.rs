//! The Delta publisher of a sink: one task that folds the catalog's
//! outbox of committed changes into Delta commits (adds with statistics,
//! removes of compacted files, the sink's transaction id and offsets), so
//! the table's log follows the catalog exactly once. The log's handle and
//! table set-up are in `delta`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove, Transaction};
use deltalake_core::protocol::{DeltaOperation, OutputMode};
use deltalake_core::DeltaTable;
use tokio::sync::watch;

use super::core::SinkCore;
use super::delta::{next_batch, DeltaLog, MAX_CHANGES_PER_COMMIT, POLL};
use crate::catalog::{DeltaChange, SinkFile};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::consumer::set_error;
use crate::storage::delta::{delta_error, SNAPSHOT_RELOAD_VERSIONS};

/// The publisher's table and the version it was loaded at.
struct Loaded {
    table: DeltaTable,
    at_version: u64,
}

impl DeltaLog {
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
