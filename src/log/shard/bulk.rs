//! A bulk append's side of a shard: its staging file renamed in as a
//! segment, made visible, or removed again, and after a crash the bulk the
//! shard ends with and its end marker.

use std::fs::File;

use super::Shard;
use crate::error::Result;
use crate::log::room::Room;
use crate::log::segment::{segment_file_name, Segment};

impl Shard {
    /// Renames a bulk's staging file into this shard as the segment that
    /// starts at `segment.base_seq` (the shard's next sequence), durably
    /// but not yet visible (see [`Shard::publish_segment`]).
    pub fn install_segment(&self, mut segment: Segment) -> Result<Segment> {
        self.seal_active()?;
        let path = self.dir.join(segment_file_name(segment.base_seq));
        std::fs::rename(&segment.path, &path)?;
        File::open(&self.dir)?.sync_all()?;
        segment.path = path;
        Ok(segment)
    }

    /// Undoes [`Shard::install_segment`] when the bulk fails in another shard.
    pub fn uninstall_segment(&self, segment: &Segment) {
        let result = (|| -> Result<()> {
            std::fs::remove_file(&segment.path)?;
            // The rename replaced an empty active segment of the same name:
            // give the shard a file to append to again.
            let replaced = self
                .read_state()
                .segments
                .last()
                .is_some_and(|s| s.base_seq == segment.base_seq);
            if replaced {
                self.write_state().segments.pop();
                self.roll(segment.base_seq)
            } else {
                File::open(&self.dir)?.sync_all()?;
                Ok(())
            }
        })();
        if let Err(e) = result {
            tracing::error!(shard = self.id, error = %e, "could not remove a failed bulk's segment");
        }
    }

    /// Makes an installed segment visible; it becomes the active segment.
    pub fn publish_segment(&self, segment: Segment) {
        let end = segment.end_seq();
        {
            let mut state = self.write_state();
            // An empty active segment starting at the same sequence was
            // replaced on disk by the rename.
            if state
                .segments
                .last()
                .is_some_and(|s| s.base_seq == segment.base_seq)
            {
                state.segments.pop();
            }
            state.room = Room::exactly(segment.size_bytes);
            self.push_segment(&mut state, segment);
            state.next_seq = end;
        }
        self.committed.send_replace(end);
    }

    /// The bulk this shard ends with, if any: (bulk id, the end marker's
    /// shard count or 0 when the marker is missing, offset of its first
    /// frame).
    pub fn tail_bulk(&self) -> Option<(u64, u32, u64)> {
        let state = self.read_state();
        let frames = state.segments.last()?.index()?;
        let (last, first) = frames.tail_bulk()?;
        Some((last.id, last.end_of_shards, frames.get(first)?.offset))
    }
}
