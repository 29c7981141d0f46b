//! Segment files: a shard's log is a sequence of files named by the first
//! sequence number they hold, each a run of frames. This file owns scanning
//! (recovery) and reading one frame back.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{FrameHeader, FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES};
use super::index::{FrameIndex, FrameRef, Summary};
use crate::error::{Error, Result};

/// A segment's frames as the shard holds them.
#[derive(Debug)]
pub enum Frames {
    /// The index of every frame: the active segment's, growing with its
    /// appends (and a bulk's segment until the next one follows it).
    Active(FrameIndex),
    /// A sealed segment keeps only its summary; its index is read back
    /// from the file when a reader needs it (and cached by the shard).
    Sealed(Summary),
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    pub base_seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub frames: Frames,
    pub size_bytes: u64,
}

/// Names a sealed segment's index in the shard's cache.
pub type SealedKey = (u64, u64);

impl Segment {
    /// A segment that takes appends, indexed by `frames`.
    pub fn active(
        base_seq: u64,
        path: PathBuf,
        file: Arc<File>,
        frames: FrameIndex,
        size_bytes: u64,
    ) -> Segment {
        Segment {
            base_seq,
            path,
            file,
            frames: Frames::Active(frames),
            size_bytes,
        }
    }

    pub fn end_seq(&self) -> u64 {
        match &self.frames {
            Frames::Active(index) => index.end_seq().unwrap_or(self.base_seq),
            Frames::Sealed(summary) => summary.end_seq,
        }
    }

    pub fn last_append_ms(&self) -> Option<i64> {
        match &self.frames {
            Frames::Active(index) => index.last().map(|f| f.append_time_ms),
            Frames::Sealed(summary) => summary.last_append_ms,
        }
    }

    pub fn frame_count(&self) -> usize {
        match &self.frames {
            Frames::Active(index) => index.len(),
            Frames::Sealed(summary) => summary.frame_count,
        }
    }

    /// The index of an active segment.
    pub fn index(&self) -> Option<&FrameIndex> {
        match &self.frames {
            Frames::Active(index) => Some(index),
            Frames::Sealed(_) => None,
        }
    }

    /// Where the cache keeps this segment's index once sealed: a segment
    /// replaced by another of the same base (a failed bulk's) differs in size.
    pub fn sealed_key(&self) -> SealedKey {
        (self.base_seq, self.size_bytes)
    }

    /// Keeps only the summary; gives back the index (for the cache).
    pub fn seal(&mut self) -> Option<FrameIndex> {
        let Frames::Active(index) = &mut self.frames else {
            return None;
        };
        let mut index = std::mem::take(index);
        self.frames = Frames::Sealed(index.summary(self.base_seq));
        index.shrink_to_fit();
        Some(index)
    }
}

/// How much of a sealed segment is read at a time to index it again.
const INDEX_READ_BYTES: usize = 1024 * 1024;

/// Reads a sealed segment's frame headers back into an index: the first
/// `len_bytes` of `file` (its frames, as recovery or the writer left
/// them), starting at sequence `base_seq`. Payloads were verified when
/// the segment was scanned or written and are verified again on every
/// read; here each header must still parse and continue the sequence.
pub fn read_index(file: &File, base_seq: u64, len_bytes: u64) -> Result<FrameIndex> {
    let mut index = FrameIndex::default();
    let mut buf = vec![0u8; INDEX_READ_BYTES];
    let (mut buf_start, mut buf_len) = (0u64, 0usize);
    let (mut offset, mut seq) = (0u64, base_seq);
    // After a frame larger than the buffer the next is likely large too
    // (a bulk's): read just its header rather than a megabyte of payload.
    let mut read_len = INDEX_READ_BYTES;
    let corrupt = |offset: u64, what: &str| {
        Error::Corrupt(format!(
            "sealed segment at sequence {base_seq}: {what} at byte {offset}"
        ))
    };
    while offset < len_bytes {
        let header_end = offset + FRAME_HEADER_BYTES as u64;
        if header_end > len_bytes {
            return Err(corrupt(offset, "torn frame header"));
        }
        if offset < buf_start || header_end > buf_start + buf_len as u64 {
            buf_len = read_len.min((len_bytes - offset) as usize);
            file.read_exact_at(&mut buf[..buf_len], offset)?;
            buf_start = offset;
        }
        let at = (offset - buf_start) as usize;
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES];
        header_bytes.copy_from_slice(&buf[at..at + FRAME_HEADER_BYTES]);
        let header = FrameHeader::parse(&header_bytes)
            .filter(|h| h.first_seq == seq && offset + h.frame_len() <= len_bytes)
            .ok_or_else(|| corrupt(offset, "frame header does not continue the segment"))?;
        index.push(frame_ref(&header, offset));
        seq += header.record_count as u64;
        offset += header.frame_len();
        read_len = if header.frame_len() >= INDEX_READ_BYTES as u64 {
            FRAME_HEADER_BYTES
        } else {
            INDEX_READ_BYTES
        };
    }
    index.shrink_to_fit();
    Ok(index)
}

pub fn segment_file_name(base_seq: u64) -> String {
    format!("{base_seq:020}.seg")
}

/// Parses `00000000000000000042.seg` into 42.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// What recovery found in one segment file.
#[derive(Debug)]
pub struct ScanOutcome {
    pub frames: FrameIndex,
    /// Bytes from the start that hold whole, verified frames (a zero tail
    /// after them is preallocated room, not damage).
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Reads a segment from the start, verifying every frame's checksum and that
/// sequence numbers continue from `base_seq`. Stops at the first frame that
/// is incomplete or does not verify.
pub fn scan(path: &Path, base_seq: u64) -> io::Result<ScanOutcome> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut frames = FrameIndex::default();
    let mut offset = 0u64;
    let mut expected_seq = base_seq;
    let mut payload = Vec::new();
    let damage = loop {
        if offset == file_len {
            break None;
        }
        if file_len - offset < FRAME_HEADER_BYTES as u64 {
            break Some(format!("torn frame header at byte {offset}"));
        }
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES];
        reader.read_exact(&mut header_bytes)?;
        let Some(header) = FrameHeader::parse(&header_bytes) else {
            // The active segment's preallocated room: zeros to the end.
            if header_bytes.iter().all(|b| *b == 0) && rest_is_zero(&mut reader)? {
                break None;
            }
            break Some(format!("bad frame magic at byte {offset}"));
        };
        if header.payload_len as usize > MAX_FRAME_PAYLOAD_BYTES
            || offset + header.frame_len() > file_len
        {
            break Some(format!("torn frame payload at byte {offset}"));
        }
        payload.resize(header.payload_len as usize, 0);
        reader.read_exact(&mut payload)?;
        if !header.verify(&header_bytes, &payload) {
            break Some(format!("checksum mismatch in frame at byte {offset}"));
        }
        if header.first_seq != expected_seq {
            break Some(format!(
                "frame at byte {offset} starts at sequence {} where {expected_seq} was expected",
                header.first_seq
            ));
        }
        frames.push(frame_ref(&header, offset));
        expected_seq += header.record_count as u64;
        offset += header.frame_len();
    };
    Ok(ScanOutcome {
        frames,
        valid_len: offset,
        damage,
    })
}

fn frame_ref(header: &FrameHeader, offset: u64) -> FrameRef {
    FrameRef {
        first_seq: header.first_seq,
        record_count: header.record_count,
        offset,
        payload_len: header.payload_len,
        append_time_ms: header.append_time_ms,
        progress: header.progress,
        bulk: header.bulk,
        schema_version: header.schema_version,
    }
}

/// Whether everything `reader` has left is zero bytes.
fn rest_is_zero(reader: &mut impl Read) -> io::Result<bool> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Reads and re-verifies one frame's payload. Verification on every read
/// means bit rot after start-up is reported, never served.
pub fn read_payload(file: &File, frame: &FrameRef) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; frame.frame_len() as usize];
    file.read_exact_at(&mut buf, frame.offset)?;
    let mut header_bytes = [0u8; FRAME_HEADER_BYTES];
    header_bytes.copy_from_slice(&buf[..FRAME_HEADER_BYTES]);
    let verified = FrameHeader::parse(&header_bytes)
        .filter(|h| h.first_seq == frame.first_seq && h.payload_len == frame.payload_len)
        .is_some_and(|h| h.verify(&header_bytes, &buf[FRAME_HEADER_BYTES..]));
    if !verified {
        return Err(Error::Corrupt(format!(
            "frame at sequence {} (byte {}) failed its checksum",
            frame.first_seq, frame.offset
        )));
    }
    buf.drain(..FRAME_HEADER_BYTES);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::frame::encode;
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::io::Write;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()
    }

    fn write_frames(path: &Path, counts: &[i64]) -> Vec<u64> {
        let mut f = File::create(path).unwrap();
        let mut seq = 0u64;
        let mut ends = vec![];
        for &n in counts {
            f.write_all(&encode(seq, 0, Default::default(), &batch(n)).unwrap())
                .unwrap();
            seq += n as u64;
            ends.push(f.metadata().unwrap().len());
        }
        ends
    }

    #[test]
    fn clean_segment_scans_fully() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        let ends = write_frames(&path, &[3, 4, 5]);
        let out = scan(&path, 0).unwrap();
        assert_eq!(out.damage, None);
        assert_eq!(out.frames.len(), 3);
        assert_eq!(out.frames.get(2).unwrap().first_seq, 7);
        assert_eq!(out.valid_len, ends[2]);
    }

    #[test]
    fn truncated_tail_stops_at_last_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        let ends = write_frames(&path, &[3, 4, 5]);
        // Cut into the third frame's payload, and separately into a header.
        for cut in [ends[2] - 5, ends[1] + 10] {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            let out = scan(&path, 0).unwrap();
            assert_eq!(out.frames.len(), 2, "cut at {cut}");
            assert_eq!(out.valid_len, ends[1]);
            assert!(out.damage.unwrap().contains("torn"));
        }
    }

    #[test]
    fn corrupted_byte_is_never_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        let ends = write_frames(&path, &[3, 4, 5]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ends[0] as usize + 72] ^= 0xff; // inside frame 2's payload
        std::fs::write(&path, &bytes).unwrap();
        let out = scan(&path, 0).unwrap();
        assert_eq!(out.frames.len(), 1);
        assert_eq!(out.valid_len, ends[0]);
        assert!(out.damage.unwrap().contains("checksum"));
    }

    #[test]
    fn read_payload_rejects_rot_after_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        write_frames(&path, &[3]);
        let out = scan(&path, 0).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        let err = read_payload(&f, &out.frames.get(0).unwrap()).unwrap_err();
        assert_eq!(err.sqlstate(), "XX001");
    }

    #[test]
    fn a_zero_tail_is_room_not_damage_but_a_torn_frame_before_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        let ends = write_frames(&path, &[3, 4]);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(ends[1] + 100_000).unwrap();
        let out = scan(&path, 0).unwrap();
        assert_eq!(
            (out.frames.len(), out.valid_len, out.damage),
            (2, ends[1], None)
        );
        // Bytes of an unfinished frame inside the room are damage.
        f.write_all_at(&[1, 2, 3], ends[1] + 70_000).unwrap();
        let out = scan(&path, 0).unwrap();
        assert_eq!((out.frames.len(), out.valid_len), (2, ends[1]));
        assert!(out.damage.unwrap().contains("magic"));
    }

    #[test]
    fn garbage_file_yields_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        std::fs::write(&path, vec![0xAB; 4096]).unwrap();
        let out = scan(&path, 0).unwrap();
        assert_eq!(out.frames.len(), 0);
        assert_eq!(out.valid_len, 0);
    }

    #[test]
    fn an_index_read_back_from_headers_is_the_scanned_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        // Frames above and below the 1 MiB read, in both orders.
        let ends = write_frames(&path, &[3, 200_000, 5, 200_000, 200_000, 1, 2]);
        let len = *ends.last().unwrap();
        let scanned = scan(&path, 0).unwrap().frames;
        let f = File::open(&path).unwrap();
        let read = read_index(&f, 0, len).unwrap();
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            scanned.iter().collect::<Vec<_>>()
        );
        assert_eq!(read.len(), 7);
        // A length that cuts a frame, or a base that does not match, is damage.
        assert!(read_index(&f, 0, len - 1).is_err());
        assert!(read_index(&f, 1, len).is_err());
    }
}
