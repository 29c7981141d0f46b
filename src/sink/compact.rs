//! Background compaction: short rollovers give fresh data and many small
//! files; once a partition holds `min_files` small files (or it is closed:
//! its hour or day ended more than a rollover interval ago), its small
//! files are merged into files near `target_size_bytes`, sorted by
//! `sort_by` (else the event time). The swap is one catalog transaction,
//! so a query sees the old set or the new one, never both or neither (a
//! Delta sink's log records it as one commit that changes no data). The
//! old objects are retired in that transaction and deleted once retired
//! longer than the sink's retention: queries planned on the old set, and
//! Delta readers of older versions, still read them meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tokio::sync::watch;

use super::core::{file_prefix, SinkCore};
use super::properties::writer_properties;
use super::staging::{promote, upload_relative, Move};
use crate::catalog::{CompactionDef, SinkFile, TimePartition};
use crate::clock::now_ms;
use crate::error::Result;

mod merge;

/// How often partitions are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Parquet bytes of files in source order one compaction merges at most
/// (beyond its first two): it holds them decoded and sorted, several
/// times their size. What is left waits for the next round.
const MAX_UNSORTED_INPUT_BYTES: u64 = 16 * 1024 * 1024;

pub(super) async fn run(
    core: Arc<SinkCore>,
    def: CompactionDef,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // A committed swap whose output is not moved into place yet.
    let mut unpromoted: Option<Swap> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        if let Some(swap) = unpromoted.take() {
            if let Err(e) = swap.finish(&core).await {
                tracing::warn!(sink = %core.def.name, error = %e, "cannot move a compacted file into place yet");
                unpromoted = Some(swap);
                continue;
            }
        }
        for group in due(&core, &def) {
            if *stop.borrow() {
                return;
            }
            match compact(&core, group).await {
                Ok(swap) => {
                    if let Err(e) = swap.finish(&core).await {
                        tracing::warn!(sink = %core.def.name, error = %e, "cannot move a compacted file into place yet");
                        unpromoted = Some(swap);
                        break;
                    }
                }
                // Nothing changed in the catalog; the next round tries again.
                Err(e) => tracing::warn!(sink = %core.def.name, error = %e, "compaction failed"),
            }
        }
        if unpromoted.is_some() {
            continue;
        }
        if let Err(e) = vacuum(&core, retention).await {
            tracing::warn!(sink = %core.def.name, error = %e, "could not delete retired files yet");
        }
    }
}

/// Deletes files retired longer than `retention` ago. A Delta sink waits
/// until its log records every queued change, so no version still listing
/// a file as live loses it.
async fn vacuum(core: &SinkCore, retention: Duration) -> Result<()> {
    let catalog = core.catalog.clone();
    let sink_id = core.def.id;
    let delta = core.delta.is_some();
    let due = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        if delta && !catalog.delta_outbox(sink_id, 1)?.is_empty() {
            return Ok(Vec::new());
        }
        let before_ms = now_ms() - retention.as_millis() as i64;
        Ok(catalog
            .retired_files(sink_id)?
            .into_iter()
            .filter(|(_, at)| *at <= before_ms)
            .map(|(path, _)| path)
            .collect())
    })
    .await
    .map_err(|e| crate::error::Error::Internal(e.to_string()))??;
    if due.is_empty() {
        return Ok(());
    }
    for path in &due {
        match core.location.store.delete(&Path::parse(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let catalog = core.catalog.clone();
    tokio::task::spawn_blocking(move || catalog.forget_retired(sink_id, &due))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?
}

/// Groups of small committed files to merge, each at most about one target
/// size, from partitions that are due.
fn due(core: &SinkCore, def: &CompactionDef) -> Vec<Vec<SinkFile>> {
    let small_bytes = def.target_size_bytes / 2;
    // Without `sort_by`, workers' files are in source order and the merge
    // sorts them (by event time), holding them decoded.
    let sorts_inputs = core.def.sort_by.is_empty() && !core.layout.sort_by.is_empty();
    let mut partitions: BTreeMap<Vec<Option<String>>, Vec<SinkFile>> = BTreeMap::new();
    for file in core.files().iter().filter(|f| f.bytes < small_bytes) {
        partitions
            .entry(file.partition_values.clone())
            .or_default()
            .push(file.clone());
    }
    let mut groups = Vec::new();
    for (values, mut files) in partitions {
        let closed = closed(core, &values);
        if files.len() < 2 || (files.len() < def.min_files as usize && !closed) {
            continue;
        }
        files.sort_by_key(|f| (f.first_offset, f.shard));
        let mut group: Vec<SinkFile> = Vec::new();
        let (mut bytes, mut unsorted_bytes) = (0, 0);
        for file in files {
            let unsorted = if sorts_inputs && !is_compacted(core, &file.path) {
                file.bytes
            } else {
                0
            };
            let full = bytes + file.bytes > def.target_size_bytes
                || unsorted_bytes + unsorted > MAX_UNSORTED_INPUT_BYTES;
            if full && group.len() >= 2 {
                groups.push(std::mem::take(&mut group));
                (bytes, unsorted_bytes) = (0, 0);
            }
            bytes += file.bytes;
            unsorted_bytes += unsorted;
            group.push(file);
        }
        if group.len() >= 2 {
            groups.push(group);
        }
    }
    groups
}

/// Whether no more records are expected for a time partition: its hour
/// (or day) ended more than one rollover interval ago.
fn closed(core: &SinkCore, values: &[Option<String>]) -> bool {
    let (Some(Some(dt)), time) = (values.first(), core.def.time_partition) else {
        return false;
    };
    let hour = match time {
        TimePartition::None => return false,
        TimePartition::Day => 24,
        TimePartition::Hour => match values
            .get(1)
            .cloned()
            .flatten()
            .and_then(|h| h.parse::<i64>().ok())
        {
            Some(h) => h + 1,
            None => return false,
        },
    };
    let Some(day) = super::layout::days_from_date(dt) else {
        return false;
    };
    let end_ms = (day * 24 + hour) * 3_600_000;
    now_ms() > end_ms + core.def.rollover_interval_ms as i64
}

/// What a compaction wrote: its staged object, schema, footer and size.
struct Written {
    path: Path,
    schema: SchemaRef,
    footer: datafusion::parquet::file::metadata::ParquetMetaData,
    rows: u64,
    bytes: u64,
}

/// Marks a compaction's output in its file name: its rows are sorted.
const COMPACTED_MARK: char = 'c';

/// Whether `path` names a compaction's output (sorted) rather than a sink
/// worker's file.
fn is_compacted(core: &SinkCore, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_prefix(&file_prefix(core.def.id))
        .is_some_and(|rest| rest.starts_with(COMPACTED_MARK))
}

/// Merges the objects at `paths` into one staged file at `relative`,
/// streaming: see `merge`.
async fn write_merged(core: &SinkCore, paths: &[String], relative: &str) -> Result<Written> {
    let store = &core.location.store;
    // Inputs are small files (under half the target size): fetched whole,
    // still compressed.
    let mut inputs = Vec::with_capacity(paths.len());
    let held = &core.stats.compaction_bytes;
    for path in paths {
        let bytes = store.get(&Path::parse(path)?).await?.bytes().await?;
        held.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let order = if is_compacted(core, path) {
            merge::Order::Sorted
        } else if core.def.sort_by.is_empty() {
            merge::Order::Unsorted
        } else {
            merge::Order::SortedGroups
        };
        inputs.push(merge::Input { bytes, order });
    }
    let merge::Merged { schema, mut rows } = merge::merge(inputs, &core.layout)?;
    let (path, mut writer) = core.location.parquet_writer(
        &upload_relative(core.def.format, relative),
        schema.clone(),
        writer_properties(&core.def, core.source.def.schema_version),
        core.limits.upload_part_size_bytes,
    )?;
    let mut count = 0u64;
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        count += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    let footer = writer.finish().await?;
    core.location
        .make_durable(std::slice::from_ref(&path))
        .await?;
    Ok(Written {
        path,
        schema,
        bytes: writer.bytes_written() as u64,
        footer,
        rows: count,
    })
}

/// A compaction committed in the catalog: its output still to be moved
/// into place and swapped into the queryable set.
struct Swap {
    moved: Move,
    removed: Vec<String>,
    output: SinkFile,
}

impl Swap {
    async fn finish(&self, core: &SinkCore) -> Result<()> {
        promote(&core.location, std::slice::from_ref(&self.moved)).await?;
        core.replace_files(&self.removed, self.output.clone());
        core.stats.compactions.fetch_add(1, Ordering::Relaxed);
        core.stats
            .files_compacted
            .fetch_add(self.removed.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn compact(core: &Arc<SinkCore>, inputs: Vec<SinkFile>) -> Result<Swap> {
    let store = core.location.store.clone();
    let layout = &core.layout;
    let first = &inputs[0];
    let dir = layout.dir(&first.partition_values);
    let name = format!(
        "{}{COMPACTED_MARK}{:020}-{}.parquet",
        file_prefix(core.def.id),
        inputs.iter().map(|f| f.first_offset).min().unwrap_or(0),
        now_ms()
    );
    let relative = format!("{dir}/{name}");
    let final_path = core.location.child(&relative);
    // Decoding, merging and encoding are CPU work: a blocking thread runs
    // them (and the upload they feed), not the runtime's workers.
    let handle = tokio::runtime::Handle::current();
    let task_core = core.clone();
    let paths: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
    let written = tokio::task::spawn_blocking(move || {
        let written = handle.block_on(write_merged(&task_core, &paths, &relative));
        task_core.stats.compaction_bytes.store(0, Ordering::Relaxed);
        written
    })
    .await
    .map_err(|e| crate::error::Error::Internal(e.to_string()))??;
    let Written {
        path,
        schema,
        footer,
        rows,
        bytes,
    } = written;
    // Freed decoded batches go back to the system, not to the arenas of
    // whichever threads decoded them.
    tokio::task::spawn_blocking(crate::runtime::release_free_heap);
    let shards: std::collections::BTreeSet<u32> = inputs.iter().map(|f| f.shard).collect();
    let output = SinkFile {
        path: final_path.to_string(),
        shard: if shards.len() == 1 {
            first.shard
        } else {
            u32::MAX
        },
        first_offset: inputs.iter().map(|f| f.first_offset).min().unwrap_or(0),
        last_offset: inputs.iter().map(|f| f.last_offset).max().unwrap_or(0),
        rows,
        bytes,
        partition_values: first.partition_values.clone(),
        committed_at_ms: now_ms(),
        stats: core
            .delta
            .is_some()
            .then(|| super::delta_stats::file_stats(&schema, &footer)),
    };
    let removed: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
    let catalog = core.catalog.clone();
    let sink_id = core.def.id;
    let (to_remove, to_add) = (removed.clone(), output.clone());
    let delta = core.delta.is_some();
    let swapped = tokio::task::spawn_blocking(move || {
        catalog.replace_sink_files(sink_id, &to_remove, &to_add, delta)
    })
    .await
    .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    if let Err(e) = swapped {
        let _ = store.delete(&path).await;
        return Err(e);
    }
    if let Some(log) = &core.delta {
        log.wake.notify_one();
    }
    Ok(Swap {
        moved: Move {
            from: path,
            to: final_path,
        },
        removed,
        output,
    })
}
