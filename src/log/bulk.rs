//! Bulk appends: a large statement (a COPY past
//! `ingest::copy::COPY_MEMORY_BYTES`) is written while it arrives. Its rows are routed per shard and framed into
//! staging files beside the log, one per touched shard, each a run of
//! complete frames whose headers are still blank. When the statement ends
//! the log writer adopts them: it writes every header (final sequence
//! numbers, bulk id, append time; the checksum is combined from the
//! payload's, so nothing is read back), fsyncs the files, renames each into
//! its shard as a new segment, fsyncs the shard directories, and only then
//! makes them visible. So the rows are written once, while the client is
//! still sending, and the commit costs a few header writes, fsyncs and
//! renames; other appends to the stream go on meanwhile. The staging
//! writes bypass the page cache where they can ([`super::direct`]).
//!
//! The last frame of a bulk in each shard is an empty end marker that says
//! how many shards the bulk touched. Recovery keeps a bulk only if every
//! shard it touched holds its end marker; otherwise (a crash between two
//! renames) its segment is cut from every shard. So a bulk is all or
//! nothing, in bounded memory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::direct::{BlockWriter, StagingOut};
use super::frame::{self, Bulk, FrameMeta, FRAME_HEADER_BYTES};
use super::index::FrameIndex;
use super::index::FrameRef;
use super::segment::Segment;
use super::shard::Shard;
use super::writer::{Framer, SyncHelpers};
use crate::clock::now_ms;
use crate::error::{Error, Result};

/// Most bytes (of Arrow data) in a frame of a bulk. A bulk fills a frame
/// per touched shard at once, so frames of [`super::writer::FRAME_MAX_BYTES`]
/// held 4 × 20 MB of wide rows in a 4-shard COPY before any was written
/// (with the frame's copy and its encoding, most of the COPY's peak).
const BULK_FRAME_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A frame in a staging file, header not yet written.
#[derive(Debug, Clone, Copy)]
struct StagedFrame {
    offset: u64,
    record_count: u32,
    payload_len: u32,
    payload_crc: u32,
}

/// One shard's staging file.
struct Stage {
    shard: u32,
    path: PathBuf,
    file: Arc<File>,
    /// The data writes, around the page cache where possible.
    out: StagingOut,
    frames: Vec<StagedFrame>,
    len_bytes: u64,
    framer: Framer,
}

impl Stage {
    fn write_frame(
        &mut self,
        batch: &RecordBatch,
        scratch: &mut Vec<u8>,
        writer: &mut BlockWriter,
    ) -> Result<()> {
        let payload_crc = frame::encode_unheaded_into(batch, scratch)?;
        self.out
            .append(&self.file, scratch, self.len_bytes, writer)?;
        self.frames.push(StagedFrame {
            offset: self.len_bytes,
            record_count: frame::record_count(batch)?,
            payload_len: (scratch.len() - FRAME_HEADER_BYTES) as u32,
            payload_crc,
        });
        self.len_bytes += scratch.len() as u64;
        Ok(())
    }
}

/// Rows of one bulk, routed and written to staging files while they arrive.
pub struct BulkSpill {
    dir: PathBuf,
    /// The schema version of the rows, and its schema, once rows came.
    version: Option<(u32, SchemaRef)>,
    stages: Vec<Option<Stage>>,
    /// One frame's encoding, reused from frame to frame.
    scratch: Vec<u8>,
    writer: BlockWriter,
}

/// A finished bulk, ready for [`super::StreamLog::append_bulk`].
pub struct BulkFiles {
    dir: PathBuf,
    schema_version: u32,
    stages: Vec<Stage>,
}

impl BulkFiles {
    pub(super) fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

impl BulkSpill {
    pub(super) fn create(dir: PathBuf, shards: u32) -> Result<BulkSpill> {
        std::fs::create_dir_all(&dir)?;
        Ok(BulkSpill {
            dir,
            version: None,
            stages: (0..shards).map(|_| None).collect(),
            scratch: Vec::new(),
            writer: BlockWriter::start()?,
        })
    }

    /// Records the schema version of the rows: one bulk is one version
    /// (one statement, built against one schema).
    pub(super) fn set_version(&mut self, version: u32, schema: SchemaRef) -> Result<()> {
        match &self.version {
            None => self.version = Some((version, schema)),
            Some((v, _)) if *v == version => {}
            Some((v, _)) => {
                return Err(Error::Internal(format!(
                    "a bulk append mixes schema versions {v} and {version}"
                )))
            }
        }
        Ok(())
    }

    pub(super) fn push_part(&mut self, shard: u32, batch: &RecordBatch) -> Result<()> {
        let slot = self
            .stages
            .get_mut(shard as usize)
            .ok_or_else(|| Error::Internal(format!("spill shard {shard} out of range")))?;
        if slot.is_none() {
            let path = self.dir.join(format!("shard-{shard}.seg"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            *slot = Some(Stage {
                shard,
                out: StagingOut::open(&path),
                path,
                file: Arc::new(file),
                frames: Vec::new(),
                len_bytes: 0,
                framer: Framer::with_max_bytes(BULK_FRAME_MAX_BYTES),
            });
        }
        let Some(stage) = slot.as_mut() else {
            return Ok(());
        };
        let mut full = Vec::new();
        stage.framer.push(batch, &mut full)?;
        for batch in &full {
            stage.write_frame(batch, &mut self.scratch, &mut self.writer)?;
        }
        Ok(())
    }

    /// Writes the last frames and each shard's end marker.
    pub fn finish(mut self) -> Result<BulkFiles> {
        let mut stages = Vec::new();
        for slot in &mut self.stages {
            let Some(mut stage) = slot.take() else {
                continue;
            };
            let mut rest = Vec::new();
            stage.framer.finish(&mut rest)?;
            for batch in &rest {
                stage.write_frame(batch, &mut self.scratch, &mut self.writer)?;
            }
            if let Some((_, schema)) = &self.version {
                let marker = RecordBatch::new_empty(schema.clone());
                stage.write_frame(&marker, &mut self.scratch, &mut self.writer)?;
            }
            stage.out.finish(&stage.file, &mut self.writer)?;
            stages.push(stage);
        }
        self.writer.drain()?;
        for stage in &stages {
            // Direct writes end in padding to the block alignment.
            stage.file.set_len(stage.len_bytes)?;
        }
        Ok(BulkFiles {
            dir: std::mem::take(&mut self.dir),
            schema_version: self.version.as_ref().map_or(1, |(v, _)| *v),
            stages,
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

/// Commits a bulk (see the module doc); nothing is visible on failure.
pub(super) fn adopt_bulk(
    shards: &[Arc<Shard>],
    bulk: &BulkFiles,
    id: u64,
    helpers: &SyncHelpers,
) -> Result<super::AppendAck> {
    let append_time_ms = now_ms();
    let touched = bulk.stages.len() as u32;
    let mut ack = super::AppendAck::default();
    let mut segments: Vec<(&Arc<Shard>, Segment)> = Vec::new();
    for stage in &bulk.stages {
        let shard = shards
            .get(stage.shard as usize)
            .ok_or_else(|| Error::Internal(format!("bulk shard {} out of range", stage.shard)))?;
        let base_seq = shard.next_seq();
        let mut seq = base_seq;
        let mut frames = FrameIndex::default();
        for (i, staged) in stage.frames.iter().enumerate() {
            let end_of_shards = if i + 1 == stage.frames.len() {
                touched
            } else {
                0
            };
            let meta = FrameMeta {
                progress: None,
                bulk: Some(Bulk { id, end_of_shards }),
                schema_version: bulk.schema_version,
            };
            let header = frame::header_bytes(
                seq,
                append_time_ms,
                meta,
                staged.record_count,
                staged.payload_len,
                staged.payload_crc,
            );
            stage.file.write_all_at(&header, staged.offset)?;
            frames.push(FrameRef {
                first_seq: seq,
                record_count: staged.record_count,
                offset: staged.offset,
                payload_len: staged.payload_len,
                append_time_ms,
                progress: None,
                bulk: meta.bulk,
                schema_version: bulk.schema_version,
            });
            seq += u64::from(staged.record_count);
        }
        ack.ranges.push((stage.shard, base_seq, seq - base_seq));
        segments.push((
            shard,
            Segment::active(
                base_seq,
                stage.path.clone(),
                stage.file.clone(),
                frames,
                stage.len_bytes,
            ),
        ));
    }
    let files: Vec<Arc<File>> = segments.iter().map(|(_, s)| s.file.clone()).collect();
    helpers.sync_files(&files)?;
    // Renamed into every shard before any becomes visible: a reader never
    // sees part of a bulk that a crash could still cut.
    let mut installed: Vec<(&Arc<Shard>, Segment)> = Vec::new();
    for (shard, segment) in segments {
        match shard.install_segment(segment) {
            Ok(segment) => installed.push((shard, segment)),
            Err(e) => {
                for (shard, segment) in installed {
                    shard.uninstall_segment(&segment);
                }
                return Err(e);
            }
        }
        crate::fail::point("log.bulk_after_first_rename");
    }
    for (shard, segment) in installed {
        shard.publish_segment(segment);
    }
    Ok(ack)
}

/// After a crash: cuts the newest unit (a bulk or a multi-frame group)
/// from every shard unless every shard it touched holds its end marker.
/// Older units are complete by construction (a unit is written only after
/// the previous one is durable).
pub(super) fn recover(shards: &[Arc<Shard>]) -> Result<Option<u64>> {
    let tails: Vec<Option<(u64, u32, u64)>> = shards.iter().map(|s| s.tail_bulk()).collect();
    let Some(newest) = tails.iter().flatten().map(|t| t.0).max() else {
        return Ok(None);
    };
    // Look for the end markers anywhere in each shard, not only at the
    // tail: after a complete bulk, later appends may follow it in some shards.
    let markers: Vec<u32> = shards
        .iter()
        .filter_map(|s| s.bulk_marker(newest).transpose())
        .collect::<Result<_>>()?;
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

/// Where the staging files of bulk `id` of the log in `log_dir` go.
pub(super) fn spill_dir(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("bulk-{id}"))
}

/// Removes staging files a crash left behind.
pub(super) fn remove_stale_spills(log_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(log_dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("bulk-") {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
