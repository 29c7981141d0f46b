//! Bulk appends: a statement too large to hold in memory (a big COPY) is
//! routed and spilled to per-shard Arrow files first, then written by the
//! log writer as one exclusive group: its frames, then an empty end marker
//! per shard that says how many shards the bulk touched, one fsync per
//! shard, and only then visible to readers. Recovery keeps a bulk only if
//! every shard it touched holds its end marker; otherwise its frames are cut
//! from every shard. So a bulk is all or nothing, in bounded memory.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use super::frame::{self, Bulk, FrameMeta};
use super::segment::FrameRef;
use super::shard::{PendingWrite, Shard};
use super::{now_ms, settle, AppendAck, SyncHelpers};
use crate::error::{Error, Result};

/// Rows of one bulk, routed and spilled per shard while they arrive.
pub struct BulkSpill {
    dir: PathBuf,
    schema: SchemaRef,
    writers: Vec<Option<StreamWriter<BufWriter<File>>>>,
    pub(super) bytes: u64,
}

/// A finished spill, ready for [`super::StreamLog::append_bulk`].
pub struct BulkFiles {
    pub(super) dir: PathBuf,
    pub(super) files: Vec<(u32, PathBuf)>,
}

impl BulkSpill {
    pub(super) fn create(dir: PathBuf, schema: SchemaRef, shards: u32) -> Result<BulkSpill> {
        std::fs::create_dir_all(&dir)?;
        Ok(BulkSpill {
            dir,
            schema,
            writers: (0..shards).map(|_| None).collect(),
            bytes: 0,
        })
    }

    pub(super) fn push_part(&mut self, shard: u32, batch: &RecordBatch) -> Result<()> {
        let slot = self
            .writers
            .get_mut(shard as usize)
            .ok_or_else(|| Error::Internal(format!("spill shard {shard} out of range")))?;
        if slot.is_none() {
            let file = File::create(self.dir.join(format!("shard-{shard}.arrow")))?;
            *slot = Some(StreamWriter::try_new(BufWriter::new(file), &self.schema)?);
        }
        if let Some(writer) = slot.as_mut() {
            writer.write(batch)?;
        }
        self.bytes += batch.get_array_memory_size() as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Result<BulkFiles> {
        let mut files = Vec::new();
        for (shard, writer) in self.writers.iter_mut().enumerate() {
            if let Some(mut w) = writer.take() {
                w.finish()?;
                files.push((shard as u32, self.dir.join(format!("shard-{shard}.arrow"))));
            }
        }
        Ok(BulkFiles {
            dir: std::mem::take(&mut self.dir),
            files,
        })
    }
}

impl Drop for BulkSpill {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for BulkFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a bulk (see the module doc); nothing is visible on failure.
pub(super) fn write_bulk(
    shards: &[Arc<Shard>],
    bulk: &BulkFiles,
    id: u64,
    segment_size_bytes: u64,
    helpers: &SyncHelpers,
) -> Result<AppendAck> {
    let append_time_ms = now_ms();
    let touched = bulk.files.len() as u32;
    let mut pending: Vec<(&Arc<Shard>, PendingWrite)> = Vec::new();
    let mut ack = AppendAck::default();
    let result = (|| {
        for (shard_id, path) in &bulk.files {
            let shard = shards
                .get(*shard_id as usize)
                .ok_or_else(|| Error::Internal(format!("bulk shard {shard_id} out of range")))?;
            let (file, start, first_seq) = shard.tail_for_bulk(segment_size_bytes)?;
            let mut offset = start;
            let mut seq = first_seq;
            let mut frames = Vec::new();
            let reader = StreamReader::try_new(BufReader::new(File::open(path)?), None)?;
            let schema = reader.schema();
            let mut write = |batch: &RecordBatch,
                             end_of_shards: u32,
                             offset: &mut u64,
                             seq: &mut u64|
             -> Result<()> {
                let meta = FrameMeta {
                    progress: None,
                    bulk: Some(Bulk { id, end_of_shards }),
                };
                let bytes = frame::encode(*seq, append_time_ms, meta, batch)?;
                std::os::unix::fs::FileExt::write_all_at(file.as_ref(), &bytes, *offset)?;
                frames.push(FrameRef {
                    first_seq: *seq,
                    record_count: batch.num_rows() as u32,
                    offset: *offset,
                    payload_len: (bytes.len() - frame::FRAME_HEADER_BYTES) as u32,
                    append_time_ms,
                    progress: None,
                    bulk: meta.bulk,
                });
                *offset += bytes.len() as u64;
                *seq += batch.num_rows() as u64;
                Ok(())
            };
            for batch in reader {
                write(&batch?, 0, &mut offset, &mut seq)?;
            }
            write(
                &RecordBatch::new_empty(schema),
                touched,
                &mut offset,
                &mut seq,
            )?;
            ack.ranges.push((*shard_id, first_seq, seq - first_seq));
            pending.push((shard, PendingWrite::new(frames, start, file.clone())));
        }
        helpers.sync_all(&pending)
    })();
    settle(pending, result)?;
    Ok(ack)
}

/// After a crash: cuts the newest bulk from every shard unless every shard
/// it touched holds its end marker. Older bulks are complete by
/// construction (a bulk starts only after the previous one is durable).
pub(super) fn recover(shards: &[Arc<Shard>]) -> Result<Option<u64>> {
    let tails: Vec<Option<(u64, u32, u64)>> = shards.iter().map(|s| s.tail_bulk()).collect();
    let Some(newest) = tails.iter().flatten().map(|t| t.0).max() else {
        return Ok(None);
    };
    // Look for the end markers anywhere in each shard, not only at the
    // tail: after a complete bulk, later appends may follow it in some shards.
    let markers: Vec<u32> = shards
        .iter()
        .filter_map(|s| s.bulk_marker(newest))
        .collect();
    let complete = markers.first().is_some_and(|k| markers.len() as u32 == *k);
    if !complete {
        for (shard, tail) in shards.iter().zip(&tails) {
            if let Some((id, _, first_offset)) = tail {
                if *id == newest {
                    tracing::warn!(
                        shard = shard.id,
                        bulk = id,
                        "cutting an incomplete bulk append"
                    );
                    shard.truncate_to(*first_offset)?;
                }
            }
        }
    }
    Ok(Some(newest))
}

/// Where spills of the log in `log_dir` go.
pub(super) fn spill_dir(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("bulk-{id}"))
}

/// Removes spills a crash left behind.
pub(super) fn remove_stale_spills(log_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(log_dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("bulk-") {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
