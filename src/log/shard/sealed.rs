//! Lookups that may need a sealed segment's frames. A sealed segment keeps
//! only its summary in memory; its frame index is read back from the file
//! (headers only) when a reader gets that far, and the last few read are
//! cached per shard. Memory for the index is then bounded by the active
//! segment and the cache, not by retention. The file is read without the
//! shard's lock, so appends never wait for it.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, MutexGuard};

use super::Shard;
use crate::error::Result;
use crate::log::index::FrameIndex;
use crate::log::index::FrameRef;
use crate::log::segment::{self, Frames, SealedKey, Segment};

/// Sealed segments' indexes a shard keeps in memory: readers catching up
/// go through sealed segments one after another, and a few readers at
/// different places each keep theirs.
const CACHED_SEALED_INDEXES: usize = 4;

/// The most recently used sealed indexes, newest first.
#[derive(Debug, Default)]
pub(super) struct SealedCache {
    entries: VecDeque<(SealedKey, Arc<FrameIndex>)>,
}

impl SealedCache {
    fn get(&mut self, key: SealedKey) -> Option<Arc<FrameIndex>> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(at)?;
        let index = entry.1.clone();
        self.entries.push_front(entry);
        Some(index)
    }

    pub(super) fn insert(&mut self, key: SealedKey, index: Arc<FrameIndex>) {
        self.remove(key);
        self.entries.push_front((key, index));
        self.entries.truncate(CACHED_SEALED_INDEXES);
    }

    pub(super) fn remove(&mut self, key: SealedKey) {
        self.entries.retain(|(k, _)| *k != key);
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.entries.iter().map(|(_, i)| i.heap_bytes()).sum()
    }
}

/// A sealed segment to read the index of, named without the shard's lock.
struct SealedRef {
    key: SealedKey,
    file: Arc<File>,
}

impl SealedRef {
    fn of(segment: &Segment) -> SealedRef {
        SealedRef {
            key: segment.sealed_key(),
            file: segment.file.clone(),
        }
    }
}

impl Shard {
    pub(super) fn sealed_cache(&self) -> MutexGuard<'_, SealedCache> {
        // The cache holds only copies of what the files say.
        self.sealed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sealed segment's index: cached, or read back from its file.
    fn sealed_index(&self, segment: &SealedRef) -> Result<Arc<FrameIndex>> {
        if let Some(index) = self.sealed_cache().get(segment.key) {
            return Ok(index);
        }
        let (base_seq, len_bytes) = segment.key;
        let index = Arc::new(segment::read_index(&segment.file, base_seq, len_bytes)?);
        self.sealed_cache().insert(segment.key, index.clone());
        Ok(index)
    }

    /// Frames holding sequence numbers at or after `from_seq`, in order, at
    /// most `max_records` records' worth (at least one frame). May read a
    /// sealed segment's headers: call it where blocking is allowed.
    pub fn frames_from(
        &self,
        from_seq: u64,
        max_records: u64,
    ) -> Result<Vec<(Arc<File>, FrameRef)>> {
        let mut out: Vec<(Arc<File>, FrameRef)> = Vec::new();
        let mut records = 0u64;
        // A sealed index read on the way, kept in hand: the cache may have
        // let it go again by the time the walk resumes.
        let mut loaded: Option<(SealedKey, Arc<FrameIndex>)> = None;
        loop {
            // Resume after the last frame taken (the walk restarts after a read).
            let seq = out
                .last()
                .map_or(from_seq, |(_, f)| f.end_seq().max(from_seq));
            let missing = {
                let state = self.read_state();
                let mut missing = None;
                for seg in &state.segments {
                    if seg.end_seq() <= seq {
                        continue;
                    }
                    let sealed;
                    let frames = match &seg.frames {
                        Frames::Active(index) => index,
                        Frames::Sealed(_) => {
                            let key = seg.sealed_key();
                            let hit = match &loaded {
                                Some((k, index)) if *k == key => Some(index.clone()),
                                _ => self.sealed_cache().get(key),
                            };
                            let Some(index) = hit else {
                                missing = Some(SealedRef::of(seg));
                                break;
                            };
                            sealed = index;
                            &*sealed
                        }
                    };
                    for f in frames.iter_from(frames.frames_ending_by(seq)) {
                        if records >= max_records && !out.is_empty() {
                            return Ok(out);
                        }
                        records += f.end_seq() - f.first_seq.max(from_seq);
                        out.push((seg.file.clone(), f));
                    }
                }
                missing
            };
            let Some(segment) = missing else {
                return Ok(out);
            };
            loaded = Some((segment.key, self.sealed_index(&segment)?));
        }
    }

    /// The first sequence number appended at or after `time_ms` (the end
    /// of the shard when nothing is that recent). May read sealed segments'
    /// headers: call it where blocking is allowed.
    pub fn seq_at_time(&self, time_ms: i64) -> Result<u64> {
        let (candidates, active, next_seq) = {
            let state = self.read_state();
            let mut candidates = Vec::new();
            let mut active = None;
            for seg in &state.segments {
                match &seg.frames {
                    Frames::Sealed(summary) => {
                        if summary.max_record_append_ms.is_some_and(|t| t >= time_ms) {
                            candidates.push(SealedRef::of(seg));
                        }
                    }
                    Frames::Active(index) => {
                        active = index.first_at_time(time_ms).map(|f| f.first_seq);
                        if active.is_some() {
                            break;
                        }
                    }
                }
            }
            (candidates, active, state.next_seq)
        };
        for segment in candidates {
            if let Some(f) = self.sealed_index(&segment)?.first_at_time(time_ms) {
                return Ok(f.first_seq);
            }
        }
        Ok(active.unwrap_or(next_seq))
    }

    /// The progress recorded by the newest frame written for
    /// `source_shard`: where the pipeline reading that shard had got to.
    pub fn last_progress(&self, source_shard: u32) -> Option<u64> {
        let state = self.read_state();
        state.segments.iter().rev().find_map(|s| match &s.frames {
            Frames::Active(index) => index.last_progress(source_shard),
            Frames::Sealed(summary) => summary
                .progress
                .iter()
                .find(|p| p.0 == source_shard)
                .map(|p| p.1),
        })
    }

    /// The end marker of bulk `id` in this shard, if present: the number of
    /// shards the bulk touched.
    pub fn bulk_marker(&self, id: u64) -> Result<Option<u32>> {
        let is_marker = |b: &crate::log::frame::Bulk| b.id == id && b.end_of_shards > 0;
        let candidates: Vec<SealedRef> = {
            let state = self.read_state();
            let mut candidates = Vec::new();
            for seg in state.segments.iter().rev() {
                match &seg.frames {
                    Frames::Active(index) => {
                        if let Some(b) = index.last_bulk(is_marker) {
                            return Ok(Some(b.end_of_shards));
                        }
                    }
                    Frames::Sealed(summary) => {
                        if summary
                            .bulk_ids
                            .is_some_and(|(lo, hi)| (lo..=hi).contains(&id))
                        {
                            candidates.push(SealedRef::of(seg));
                        }
                    }
                }
            }
            candidates
        };
        for segment in candidates {
            if let Some(b) = self.sealed_index(&segment)?.last_bulk(is_marker) {
                return Ok(Some(b.end_of_shards));
            }
        }
        Ok(None)
    }
}
