//! A segment's frame index, packed. Every frame of every retained segment
//! is indexed in memory, so readers find a sequence number without
//! touching the disk; the index's size per frame is then what a long
//! retention of small appends (one frame per single-row INSERT) costs in
//! memory. A [`FrameRef`] is 88 bytes; here a frame costs 12 (its payload
//! length, record count and append time relative to a checkpoint) plus a
//! 32-byte checkpoint every [`CHECKPOINT_FRAMES`] frames. Offsets and
//! sequence numbers are summed from the checkpoint; the rare fields
//! (pipeline progress, bulk membership, schema version) are kept only for
//! the frames that have them.

use super::frame::{Bulk, Progress, FRAME_HEADER_BYTES};
use super::segment::FrameRef;

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
        let follows = self.last().is_some_and(|last| {
            last.offset + last.frame_len() == f.offset && last.end_seq() == f.first_seq
        });
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
    }

    /// Frame `i`, if the index has it.
    pub fn get(&self, i: usize) -> Option<FrameRef> {
        self.iter_from(i).next()
    }

    pub fn first(&self) -> Option<FrameRef> {
        self.get(0)
    }

    pub fn last(&self) -> Option<FrameRef> {
        self.get(self.len().checked_sub(1)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames as a shard writes them: contiguous, with a few of each rare
    /// field, a clock that steps back once and jumps far once, and a gap
    /// (a bulk segment's frames need not start at 0).
    fn frames(n: usize) -> Vec<FrameRef> {
        let mut out = Vec::new();
        let (mut offset, mut seq, mut time) = (4096u64, 100u64, 1_700_000_000_000i64);
        for i in 0..n {
            let record_count = (i % 7) as u32 + u32::from(i % 11 != 0);
            let payload_len = 200 + (i * 37 % 1500) as u32;
            time += match i {
                300 => -5_000,
                700 => 40 * 24 * 3_600_000,
                _ => (i % 3) as i64,
            };
            out.push(FrameRef {
                first_seq: seq,
                record_count,
                offset,
                payload_len,
                append_time_ms: time,
                progress: (i % 5 == 0).then_some(((i % 3) as u32, i as u64 * 10)),
                bulk: (i % 13 == 0).then_some(Bulk {
                    id: i as u64 / 26 + 1,
                    end_of_shards: (i % 26 == 0) as u32,
                }),
                schema_version: 1 + (i / 400) as u32,
            });
            offset += FRAME_HEADER_BYTES as u64 + payload_len as u64;
            seq += record_count as u64;
            if i == 500 {
                offset += 4096;
            }
        }
        out
    }

    #[test]
    fn gives_back_every_frame_as_pushed() {
        let all = frames(1000);
        let index: FrameIndex = all.iter().copied().collect();
        assert_eq!(index.len(), all.len());
        assert_eq!(index.iter().collect::<Vec<_>>(), all);
        for i in [0, 1, 31, 32, 33, 299, 300, 501, 502, 700, 999] {
            assert_eq!(index.get(i), Some(all[i]), "frame {i}");
            assert_eq!(index.iter_from(i).collect::<Vec<_>>(), all[i..], "from {i}");
        }
        assert_eq!(index.get(1000), None);
        assert_eq!(index.iter_from(1000).count(), 0);
        assert_eq!(index.last(), all.last().copied());
    }

    #[test]
    fn finds_frames_by_sequence_number() {
        let all = frames(1000);
        let index: FrameIndex = all.iter().copied().collect();
        let end = all.last().unwrap().end_seq();
        for seq in (0..end + 3).step_by(7).chain([99, 100, 101, end - 1, end]) {
            let expected = all.partition_point(|f| f.end_seq() <= seq);
            assert_eq!(index.frames_ending_by(seq), expected, "seq {seq}");
        }
    }

    #[test]
    fn keeps_the_rare_fields_of_the_newest_frames() {
        let all = frames(1000);
        let index: FrameIndex = all.iter().copied().collect();
        for source in 0..4 {
            let expected = all
                .iter()
                .rev()
                .find_map(|f| f.progress.filter(|p| p.0 == source).map(|p| p.1));
            assert_eq!(index.last_progress(source), expected, "source {source}");
        }
        let marker = |b: &Bulk| b.end_of_shards > 0;
        let expected = all.iter().rev().find_map(|f| f.bulk.filter(marker));
        assert_eq!(index.last_bulk(marker), expected);
    }

    #[test]
    fn truncation_keeps_a_prefix_that_grows_again() {
        let all = frames(1000);
        let mut index: FrameIndex = all.iter().copied().collect();
        for n in [999, 640, 64, 33, 32, 1, 0] {
            index.truncate(n);
            assert_eq!(
                index.iter().collect::<Vec<_>>(),
                all[..n],
                "truncated to {n}"
            );
        }
        for f in &all {
            index.push(*f);
        }
        assert_eq!(index.iter().collect::<Vec<_>>(), all);
    }

    #[test]
    fn a_tail_bulk_is_the_run_of_its_frames_at_the_end() {
        let bulk = |id| {
            Some(Bulk {
                id,
                end_of_shards: 0,
            })
        };
        let mut all = frames(40);
        for f in &mut all {
            f.bulk = None;
        }
        let mut index: FrameIndex = all.iter().copied().collect();
        assert_eq!(index.tail_bulk(), None);
        // Frames 34..40 are bulk 9 except 36, which belongs to bulk 8.
        for (i, f) in all.iter_mut().enumerate().skip(34) {
            f.bulk = if i == 36 { bulk(8) } else { bulk(9) };
        }
        index = all.iter().copied().collect();
        assert_eq!(
            index.tail_bulk().map(|(b, first)| (b.id, first)),
            Some((9, 37))
        );
        index.truncate(37);
        assert_eq!(
            index.tail_bulk().map(|(b, first)| (b.id, first)),
            Some((8, 36))
        );
    }

    /// What the index is for: small frames cost ~13 bytes, not 88.
    #[test]
    fn a_sealed_index_of_small_frames_costs_about_13_bytes_a_frame() {
        let mut index = FrameIndex::default();
        let (mut offset, mut seq) = (0u64, 0u64);
        for i in 0..100_000u64 {
            index.push(FrameRef {
                first_seq: seq,
                record_count: 1,
                offset,
                payload_len: 1_200,
                append_time_ms: 1_700_000_000_000 + (i / 4) as i64,
                progress: None,
                bulk: None,
                schema_version: 1,
            });
            offset += FRAME_HEADER_BYTES as u64 + 1_200;
            seq += 1;
        }
        index.shrink_to_fit();
        let per_frame = index.heap_bytes() as f64 / index.len() as f64;
        assert!(per_frame <= 13.1, "{per_frame} bytes a frame");
    }
}
