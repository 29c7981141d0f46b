//! One shard: an ordered run of segment files, its frame index, and the
//! watermark readers follow. Only the group commit's leader appends; any
//! number of readers read concurrently. A bulk append's segments are
//! installed and found again after a crash in [`bulk`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::watch;

use super::frame::{self, FrameMeta};
use super::index::FrameRef;
use super::index::{FrameIndex, MAX_SEGMENT_FRAMES};
use super::room::Room;
use super::segment::{self, parse_segment_file_name, segment_file_name, Frames, Segment};
use super::versions::{ReadSchema, Versions};
use crate::error::{Error, Result};

mod bulk;
mod sealed;

use sealed::SealedCache;

#[derive(Debug)]
pub struct Shard {
    pub id: u32,
    dir: PathBuf,
    state: RwLock<ShardState>,
    /// Indexes of sealed segments read back for readers (see [`sealed`]).
    sealed: Mutex<SealedCache>,
    /// The next sequence number: everything below it is durable and readable.
    committed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct ShardState {
    segments: Vec<Segment>,
    next_seq: u64,
    /// The active segment file's room ahead of its frames.
    room: Room,
}

/// Counters for `sluice.streams` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    pub records: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub next_seq: u64,
    pub segments: u64,
    /// Heap bytes of the in-memory frame index of every retained segment.
    pub index_bytes: u64,
}

/// A frame written but not yet published (the writer fsyncs in between).
#[derive(Debug)]
pub struct PendingWrite {
    pub frames: Vec<FrameRef>,
    /// Where the first frame starts (the truncation point on rollback).
    offset: u64,
    /// Bytes of frames written from `offset`.
    len: u64,
    /// Whether the write only overwrote blocks that were already allocated
    /// and durable (zeros written ahead): its data needs no metadata write
    /// to survive a crash.
    overwrite: bool,
    file: Arc<File>,
}

impl PendingWrite {
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The byte range the frames occupy in [`PendingWrite::file`].
    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.len)
    }

    pub fn is_overwrite(&self) -> bool {
        self.overwrite
    }
}

impl Shard {
    /// Opens (or creates) a shard directory, recovering every segment:
    /// checksums verified, a torn tail of the last segment truncated.
    pub fn open(dir: &Path, id: u32) -> Result<Shard> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        let mut room = Room::default();
        let mut sealed = SealedCache::default();
        let last_index = bases.len().saturating_sub(1);
        for (i, base) in bases.into_iter().enumerate() {
            let path = dir.join(segment_file_name(base));
            let outcome = segment::scan(&path, base)?;
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if i == last_index {
                // The tail after the frames may be a hole: only the frames
                // are known to be written.
                room = Room::new(file.metadata()?.len(), outcome.valid_len);
            }
            if let Some(damage) = &outcome.damage {
                if i == last_index {
                    // A crash mid-write leaves a torn tail: drop it, it was never acknowledged.
                    tracing::warn!(path = %path.display(), %damage, "truncating torn tail");
                    file.set_len(outcome.valid_len)?;
                    file.sync_all()?;
                    room = Room::exactly(outcome.valid_len);
                } else {
                    tracing::error!(path = %path.display(), %damage,
                        "damaged sealed segment: frames after the damage are not served");
                }
            }
            let mut segment = Segment::active(
                base,
                path,
                Arc::new(file),
                outcome.frames,
                outcome.valid_len,
            );
            // Only the last segment takes appends; the others keep
            // summaries, sealed as they are scanned so that start-up never
            // holds every segment's index at once.
            if i != last_index {
                if let Some(index) = segment.seal() {
                    sealed.insert(segment.sealed_key(), Arc::new(index));
                }
            }
            segments.push(segment);
        }
        let next_seq = segments.last().map_or(0, Segment::end_seq);
        let (committed, _) = watch::channel(next_seq);
        Ok(Shard {
            id,
            dir: dir.to_path_buf(),
            sealed: Mutex::new(sealed),
            state: RwLock::new(ShardState {
                segments,
                next_seq,
                room,
            }),
            committed,
        })
    }

    fn read_state(&self) -> RwLockReadGuard<'_, ShardState> {
        // A poisoned lock only means a panic elsewhere; the index itself is
        // only mutated by whole assignments and stays consistent.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, ShardState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_seq(&self) -> u64 {
        self.read_state().next_seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver that changes whenever new records become readable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    pub fn stats(&self) -> ShardStats {
        let state = self.read_state();
        let first_seq = state
            .segments
            .iter()
            .find(|s| s.frame_count() > 0)
            .map_or(state.next_seq, |s| s.base_seq);
        ShardStats {
            records: state.next_seq - first_seq,
            bytes: state.segments.iter().map(|s| s.size_bytes).sum(),
            first_seq,
            next_seq: state.next_seq,
            segments: state.segments.len() as u64,
            index_bytes: state
                .segments
                .iter()
                .filter_map(|s| s.index())
                .map(|index| index.heap_bytes() as u64)
                .sum::<u64>()
                + self.sealed_cache().heap_bytes() as u64,
        }
    }

    /// Writes `frames` (each a batch and an optional pipeline progress) as
    /// consecutive frames at the end of the active segment, in one write,
    /// rolling to a new segment first when the active one is full. Nothing
    /// is visible to readers until [`Shard::publish`].
    pub fn write(
        &self,
        frames: &[(RecordBatch, FrameMeta)],
        append_time_ms: i64,
        segment_size_bytes: u64,
    ) -> Result<PendingWrite> {
        let first_seq = self.next_seq();
        let mut bytes = Vec::new();
        let mut refs = Vec::with_capacity(frames.len());
        let mut seq = first_seq;
        for (batch, meta) in frames {
            let encoded = frame::encode(seq, append_time_ms, *meta, batch)?;
            refs.push(FrameRef {
                first_seq: seq,
                record_count: batch.num_rows() as u32,
                offset: bytes.len() as u64,
                payload_len: (encoded.len() - frame::FRAME_HEADER_BYTES) as u32,
                append_time_ms,
                progress: meta.progress,
                bulk: meta.bulk,
                schema_version: meta.schema_version.max(1),
            });
            seq += batch.num_rows() as u64;
            bytes.extend_from_slice(&encoded);
        }
        let needs_roll = {
            let state = self.read_state();
            state.segments.last().is_none_or(|s| {
                let full = s.size_bytes + bytes.len() as u64 > segment_size_bytes
                    || s.frame_count() + refs.len() > MAX_SEGMENT_FRAMES;
                s.size_bytes > 0 && full
            })
        };
        if needs_roll {
            self.roll(first_seq)?;
        }
        let (file, offset, mut room) = {
            let state = self.read_state();
            let active = state
                .segments
                .last()
                .ok_or_else(|| Error::Internal("shard has no active segment".into()))?;
            (active.file.clone(), active.size_bytes, state.room)
        };
        let len = bytes.len() as u64;
        // Only the leader writes, so the room read above is still current.
        let overwrite = room.make(&file, offset, &mut bytes)?;
        self.write_state().room = room;
        let written = crate::fail::io("log.write").and_then(|()| file.write_all_at(&bytes, offset));
        if let Err(e) = written {
            // Leave no partial frame behind: the next write starts at `offset`.
            self.cut_active(&file, offset);
            return Err(e.into());
        }
        for r in &mut refs {
            r.offset += offset;
        }
        Ok(PendingWrite {
            frames: refs,
            offset,
            len,
            overwrite,
            file,
        })
    }

    /// Discards written-but-unpublished frames after a failed group.
    pub fn rollback(&self, pending: &PendingWrite) {
        self.cut_active(&pending.file, pending.offset);
    }

    /// Truncates the active segment's file at `offset`: written frames
    /// that were never acknowledged must not be found by recovery.
    fn cut_active(&self, file: &File, offset: u64) {
        match file.set_len(offset) {
            Ok(()) => self.write_state().room = Room::exactly(offset),
            Err(e) => {
                tracing::error!(shard = self.id, error = %e, "could not truncate an unacknowledged frame")
            }
        }
    }

    /// Trims the active segment's zero tail before another segment follows
    /// it, so sealed segments end with their last frame.
    fn seal_active(&self) -> Result<()> {
        let mut state = self.write_state();
        let allocated = state.room.allocated_bytes();
        if let Some(active) = state.segments.last() {
            if allocated > active.size_bytes {
                active.file.set_len(active.size_bytes)?;
            }
        }
        state.room = Room::default();
        Ok(())
    }

    /// Makes durable frames visible to readers and wakes followers.
    pub fn publish(&self, pending: PendingWrite) {
        let Some(last) = pending.frames.last().copied() else {
            return;
        };
        {
            let mut state = self.write_state();
            match state
                .segments
                .last_mut()
                .map(|s| (&mut s.frames, &mut s.size_bytes))
            {
                Some((Frames::Active(index), size_bytes)) => {
                    *size_bytes = last.offset + last.frame_len();
                    for f in pending.frames {
                        index.push(f);
                    }
                }
                // The last segment is active by construction (`push_segment`).
                _ => tracing::error!(shard = self.id, "no active segment to publish to"),
            }
            state.next_seq = last.end_seq();
        }
        self.committed.send_replace(last.end_seq());
    }

    /// Cuts the active segment at `offset` (a frame boundary) for good.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let mut state = self.write_state();
        let Some(active) = state.segments.last_mut() else {
            return Ok(());
        };
        let Frames::Active(index) = &mut active.frames else {
            return Err(Error::Internal("the last segment is not active".into()));
        };
        active.file.set_len(offset)?;
        active.file.sync_all()?;
        let kept = index.iter().take_while(|f| f.offset < offset).count();
        index.truncate(kept);
        active.size_bytes = offset;
        let next = index.last().map_or(active.base_seq, |f| f.end_seq());
        state.room = Room::exactly(offset);
        state.next_seq = next;
        drop(state);
        self.committed.send_replace(next);
        Ok(())
    }

    fn roll(&self, base_seq: u64) -> Result<()> {
        self.seal_active()?;
        let path = self.dir.join(segment_file_name(base_seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // The new file's directory entry must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        self.push_segment(
            &mut self.write_state(),
            Segment::active(base_seq, path, Arc::new(file), FrameIndex::default(), 0),
        );
        Ok(())
    }

    /// Makes `segment` the active one; the one before it keeps only its
    /// summary, and its index goes to the sealed cache (readers following
    /// closely are about to read it).
    fn push_segment(&self, state: &mut ShardState, segment: Segment) {
        if let Some(previous) = state.segments.last_mut() {
            if let Some(index) = previous.seal() {
                self.sealed_cache()
                    .insert(previous.sealed_key(), Arc::new(index));
            }
        }
        state.segments.push(segment);
    }

    /// Deletes sealed segments whose newest record is older than
    /// `cutoff_ms` and which hold nothing at or above `floor_seq` (the
    /// oldest record a consumer still needs). The active segment stays.
    pub fn drop_expired(&self, cutoff_ms: i64, floor_seq: u64) -> Result<u64> {
        let removed: Vec<Segment> = {
            let mut state = self.write_state();
            let sealed = state.segments.len().saturating_sub(1);
            let expired = state.segments[..sealed]
                .iter()
                .take_while(|s| {
                    s.last_append_ms().is_none_or(|t| t < cutoff_ms) && s.end_seq() <= floor_seq
                })
                .count();
            state.segments.drain(..expired).collect()
        };
        for seg in &removed {
            self.sealed_cache().remove(seg.sealed_key());
            std::fs::remove_file(&seg.path)?;
        }
        Ok(removed.len() as u64)
    }
}

/// Decodes one frame, keeping rows at or after `from_seq` and only the
/// `projection` columns.
pub fn read_frame(
    file: &File,
    frame: &FrameRef,
    versions: &Versions,
    read: &ReadSchema,
    from_seq: u64,
) -> Result<RecordBatch> {
    let payload = segment::read_payload(file, frame)?;
    // A frame of an unknown version (none should exist) is decoded whole
    // and matched by name all the same.
    let projection = versions
        .get(frame.schema_version)
        .and_then(|written| read.projection(written));
    let batch = read.adapt(frame::decode(&payload, projection.as_deref())?)?;
    let skip = from_seq.saturating_sub(frame.first_seq) as usize;
    Ok(if skip == 0 {
        batch
    } else {
        batch.slice(
            skip.min(batch.num_rows()),
            batch.num_rows().saturating_sub(skip),
        )
    })
}
