//! A segment's frame index, packed. The active segment's index (and a few
//! sealed ones read back, see `shard::sealed`) is held in memory, so
//! readers find a sequence number without touching the disk; with one
//! frame per single-row INSERT its size per frame is what a segment of
//! small appends costs in memory. A [`FrameRef`] is 88 bytes; here a
//! frame costs 12 (its payload length, record count and append time
//! relative to a checkpoint) plus a 32-byte checkpoint every
//! [`CHECKPOINT_FRAMES`] frames. Offsets and
//! sequence numbers are summed from the checkpoint; the rare fields
//! (pipeline progress, bulk membership, schema version) are kept only for
//! the frames that have them.

use super::frame::{Bulk, Progress, FRAME_HEADER_BYTES};

/// Where one frame lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub first_seq: u64,
    pub record_count: u32,
    pub offset: u64,
    pub payload_len: u32,
    pub append_time_ms: i64,
    pub progress: Option<Progress>,
    pub bulk: Option<Bulk>,
    /// The stream schema version of the frame's rows.
    pub schema_version: u32,
}

impl FrameRef {
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.record_count as u64
    }
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + self.payload_len as u64
    }
}

/// Frames between checkpoints: a lookup sums at most this many lengths.
const CHECKPOINT_FRAMES: usize = 32;

/// Most frames one segment may index (frame numbers are `u32`); a shard
/// rolls to a new segment before its active one would exceed it.
pub const MAX_SEGMENT_FRAMES: usize = u32::MAX as usize;

/// Where frame `frame` starts; every later frame up to the next checkpoint
/// follows it directly in the file and in sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    frame: u32,
    offset: u64,
    first_seq: u64,
    /// Append times of the frames it covers are stored relative to this.
    time_ms: i64,
}

/// What lookups need of a sealed segment whose index is not in memory:
/// enough to answer progress and expiry, and to skip the segment in a
/// search by time or by bulk id without reading its frames back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub frame_count: usize,
    pub end_seq: u64,
    pub last_append_ms: Option<i64>,
    /// The latest append time of a frame that holds records.
    pub max_record_append_ms: Option<i64>,
    /// The newest progress recorded for each source shard.
    pub progress: Vec<Progress>,
    /// The smallest and largest bulk id among its frames.
    pub bulk_ids: Option<(u64, u64)>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FrameIndex {
    payload_lens: Vec<u32>,
    record_counts: Vec<u32>,
    /// Append time minus the covering checkpoint's `time_ms`.
    time_deltas_ms: Vec<i32>,
    checkpoints: Vec<Checkpoint>,
    /// (first frame, version) of each run of frames in one schema version.
    versions: Vec<(u32, u32)>,
    /// Frames that record a pipeline's progress.
    progress: Vec<(u32, Progress)>,
    /// Frames of a bulk append or of a multi-frame group.
    bulk: Vec<(u32, Bulk)>,
    /// Where the last frame ends (file offset, sequence number), so that
    /// appending and asking for the end cost no summing.
    end: Option<(u64, u64)>,
}

impl FrameIndex {
    pub fn len(&self) -> usize {
        self.payload_lens.len()
    }

    /// Appends a frame. Frames that do not follow the previous one directly
    /// (in the file or in sequence numbers), or whose time is too far from
    /// the checkpoint's, start a checkpoint of their own.
    pub fn push(&mut self, f: FrameRef) {
        let n = self.len();
        let follows = self.end == Some((f.offset, f.first_seq));
        let anchor = self.checkpoints.last().map(|c| c.time_ms);
        let delta = anchor.and_then(|t| i32::try_from(f.append_time_ms.checked_sub(t)?).ok());
        let delta = match delta {
            Some(d) if follows && !n.is_multiple_of(CHECKPOINT_FRAMES) => d,
            _ => {
                self.checkpoints.push(Checkpoint {
                    frame: n as u32,
                    offset: f.offset,
                    first_seq: f.first_seq,
                    time_ms: f.append_time_ms,
                });
                0
            }
        };
        self.payload_lens.push(f.payload_len);
        self.record_counts.push(f.record_count);
        self.time_deltas_ms.push(delta);
        if self.versions.last().map(|v| v.1) != Some(f.schema_version) {
            self.versions.push((n as u32, f.schema_version));
        }
        if let Some(p) = f.progress {
            self.progress.push((n as u32, p));
        }
        if let Some(b) = f.bulk {
            self.bulk.push((n as u32, b));
        }
        self.end = Some((f.offset + f.frame_len(), f.end_seq()));
    }

    /// Frame `i`, if the index has it.
    pub fn get(&self, i: usize) -> Option<FrameRef> {
        self.iter_from(i).next()
    }

    pub fn last(&self) -> Option<FrameRef> {
        self.get(self.len().checked_sub(1)?)
    }

    /// The sequence number after the last frame.
    pub fn end_seq(&self) -> Option<u64> {
        self.end.map(|e| e.1)
    }

    pub fn iter(&self) -> Iter<'_> {
        self.iter_from(0)
    }

    /// Frames from the `start`-th on, in order.
    pub fn iter_from(&self, start: usize) -> Iter<'_> {
        if start >= self.len() {
            return Iter::done(self);
        }
        // checkpoints[0] covers frame 0, so the one covering `start` exists.
        let next_checkpoint = self
            .checkpoints
            .partition_point(|c| c.frame as usize <= start);
        let c = self.checkpoints[next_checkpoint - 1];
        let mut it = Iter {
            index: self,
            next: c.frame as usize,
            next_checkpoint,
            offset: c.offset,
            first_seq: c.first_seq,
            time_ms: c.time_ms,
        };
        for _ in c.frame as usize..start {
            it.advance();
        }
        it
    }

    /// How many leading frames end at or before `seq` (the position of the
    /// first frame holding a sequence number above it).
    pub fn frames_ending_by(&self, seq: u64) -> usize {
        let c = self.checkpoints.partition_point(|c| c.first_seq <= seq);
        let Some(start) = c.checked_sub(1).map(|c| self.checkpoints[c].frame as usize) else {
            return 0;
        };
        start
            + self
                .iter_from(start)
                .take_while(|f| f.end_seq() <= seq)
                .count()
    }

    /// Keeps the first `n` frames.
    pub fn truncate(&mut self, n: usize) {
        self.payload_lens.truncate(n);
        self.record_counts.truncate(n);
        self.time_deltas_ms.truncate(n);
        let below = |frame: u32| (frame as usize) < n;
        self.checkpoints.retain(|c| below(c.frame));
        self.versions.retain(|v| below(v.0));
        self.progress.retain(|p| below(p.0));
        self.bulk.retain(|b| below(b.0));
        self.end = self.last().map(|f| (f.offset + f.frame_len(), f.end_seq()));
    }

    /// Gives back the room vectors grow into: a sealed segment's index no
    /// longer grows.
    pub fn shrink_to_fit(&mut self) {
        self.payload_lens.shrink_to_fit();
        self.record_counts.shrink_to_fit();
        self.time_deltas_ms.shrink_to_fit();
        self.checkpoints.shrink_to_fit();
        self.versions.shrink_to_fit();
        self.progress.shrink_to_fit();
        self.bulk.shrink_to_fit();
    }

    /// Heap bytes the index holds (capacity, not length).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.payload_lens.capacity() * size_of::<u32>()
            + self.record_counts.capacity() * size_of::<u32>()
            + self.time_deltas_ms.capacity() * size_of::<i32>()
            + self.checkpoints.capacity() * size_of::<Checkpoint>()
            + self.versions.capacity() * size_of::<(u32, u32)>()
            + self.progress.capacity() * size_of::<(u32, Progress)>()
            + self.bulk.capacity() * size_of::<(u32, Bulk)>()
    }

    /// The summary of these frames, for a segment that starts at `base_seq`.
    pub fn summary(&self, base_seq: u64) -> Summary {
        let mut progress: Vec<Progress> = Vec::new();
        for &(_, (source, seq)) in &self.progress {
            match progress.iter_mut().find(|p| p.0 == source) {
                Some(p) => p.1 = seq,
                None => progress.push((source, seq)),
            }
        }
        let ids = self.bulk.iter().map(|(_, b)| b.id);
        let bulk_ids = ids.clone().min().zip(ids.max());
        Summary {
            frame_count: self.len(),
            end_seq: self.end_seq().unwrap_or(base_seq),
            last_append_ms: self.last().map(|f| f.append_time_ms),
            max_record_append_ms: self
                .iter()
                .filter(|f| f.record_count > 0)
                .map(|f| f.append_time_ms)
                .max(),
            progress,
            bulk_ids,
        }
    }

    /// The first frame holding records appended at or after `time_ms`.
    pub fn first_at_time(&self, time_ms: i64) -> Option<FrameRef> {
        self.iter()
            .find(|f| f.append_time_ms >= time_ms && f.record_count > 0)
    }

    /// The newest progress recorded for `source_shard`.
    pub fn last_progress(&self, source_shard: u32) -> Option<u64> {
        self.progress
            .iter()
            .rev()
            .find(|(_, p)| p.0 == source_shard)
            .map(|(_, p)| p.1)
    }

    /// The newest frame's bulk membership matching `pick`.
    pub fn last_bulk(&self, pick: impl Fn(&Bulk) -> bool) -> Option<Bulk> {
        self.bulk.iter().rev().map(|(_, b)| *b).find(pick)
    }

    /// The bulk the index ends with: the last frame's bulk membership and
    /// the position of the first of that bulk's frames at the end.
    pub fn tail_bulk(&self) -> Option<(Bulk, usize)> {
        let last_frame = self.len().checked_sub(1)?;
        let &(frame, last) = self.bulk.last()?;
        if frame as usize != last_frame {
            return None;
        }
        // The run of consecutive frames of the same bulk ending there.
        let mut first = frame;
        for &(f, b) in self.bulk.iter().rev().skip(1) {
            if b.id != last.id || f + 1 != first {
                break;
            }
            first = f;
        }
        Some((last, first as usize))
    }

    fn rare<T: Copy>(entries: &[(u32, T)], frame: usize) -> Option<T> {
        entries
            .binary_search_by_key(&(frame as u32), |e| e.0)
            .ok()
            .map(|i| entries[i].1)
    }

    fn version(&self, frame: usize) -> u32 {
        let run = self.versions.partition_point(|v| v.0 as usize <= frame);
        run.checked_sub(1).map_or(1, |r| self.versions[r].1)
    }
}

impl FromIterator<FrameRef> for FrameIndex {
    fn from_iter<I: IntoIterator<Item = FrameRef>>(frames: I) -> FrameIndex {
        let mut index = FrameIndex::default();
        for f in frames {
            index.push(f);
        }
        index
    }
}

/// Frames in order, their offsets and sequence numbers summed as it goes.
pub struct Iter<'a> {
    index: &'a FrameIndex,
    next: usize,
    /// The first checkpoint after `next`'s.
    next_checkpoint: usize,
    offset: u64,
    first_seq: u64,
    time_ms: i64,
}

impl<'a> Iter<'a> {
    fn done(index: &'a FrameIndex) -> Iter<'a> {
        Iter {
            index,
            next: index.len(),
            next_checkpoint: index.checkpoints.len(),
            offset: 0,
            first_seq: 0,
            time_ms: 0,
        }
    }

    /// Moves past frame `next` without building its [`FrameRef`].
    fn advance(&mut self) {
        let i = self.next;
        self.offset += FRAME_HEADER_BYTES as u64 + self.index.payload_lens[i] as u64;
        self.first_seq += self.index.record_counts[i] as u64;
        self.next += 1;
        if let Some(c) = self.index.checkpoints.get(self.next_checkpoint) {
            if c.frame as usize == self.next {
                self.offset = c.offset;
                self.first_seq = c.first_seq;
                self.time_ms = c.time_ms;
                self.next_checkpoint += 1;
            }
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = FrameRef;

    fn next(&mut self) -> Option<FrameRef> {
        let i = self.next;
        let index = self.index;
        if i >= index.len() {
            return None;
        }
        let frame = FrameRef {
            first_seq: self.first_seq,
            record_count: index.record_counts[i],
            offset: self.offset,
            payload_len: index.payload_lens[i],
            append_time_ms: self.time_ms + index.time_deltas_ms[i] as i64,
            progress: FrameIndex::rare(&index.progress, i),
            bulk: FrameIndex::rare(&index.bulk, i),
            schema_version: index.version(i),
        };
        self.advance();
        Some(frame)
    }
}
