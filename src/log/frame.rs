//! The on-disk frame: one checksummed unit of a shard log.
//!
//! ```text
//! 0      4            8       12             16         24               32             36         40           48        56               60               64
//! | magic | payload_len | crc32c | record_count | first_seq | append_time_ms | source_shard | reserved | source_seq | bulk_id | bulk_end_shards | schema_version | payload (Arrow IPC stream) |
//! ```
//! The CRC covers bytes 12..64 of the header and the payload, so a frame
//! whose sequence number, count or bytes were damaged is never served.
//! `(source_shard, source_seq)` is a pipeline's progress: where its input
//! shard stood after this frame's rows (`source_seq = u64::MAX` when the
//! frame was not written by a pipeline). Recording it in the same frame as
//! the output makes output and progress one atomic write. `bulk_id` marks
//! the frames of one atomic unit (a big COPY's bulk append, or a group
//! commit of more than one frame); the last frame of a unit in each shard
//! carries how many shards the unit touched (for a bulk it is an empty end
//! marker), so recovery can tell a complete unit from a torn one.
//! `schema_version` is the stream schema version the rows were written in
//! (0 in frames written before versions were recorded: version 1); readers
//! use it to see old frames in the current schema.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::ipc::MetadataVersion;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

pub const FRAME_MAGIC: u32 = 0x534c_4346;
pub const FRAME_HEADER_BYTES: usize = 64;
const NO_SOURCE_SEQ: u64 = u64::MAX;
/// The largest payload a frame may carry; bounds memory when reading a
/// damaged length field and bounds one group commit per shard.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub record_count: u32,
    pub first_seq: u64,
    pub append_time_ms: i64,
    pub progress: Option<Progress>,
    pub bulk: Option<Bulk>,
    pub schema_version: u32,
}

/// A pipeline's progress: (source shard, next source sequence).
pub type Progress = (u32, u64);

/// Membership of a frame in a bulk append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    pub id: u64,
    /// 0 for a frame of data; for the end marker, the number of shards the
    /// bulk wrote to.
    pub end_of_shards: u32,
}

/// What a frame records besides its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    pub progress: Option<Progress>,
    pub bulk: Option<Bulk>,
    pub schema_version: u32,
}

impl FrameHeader {
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + self.payload_len as u64
    }

    /// Parses a header; `None` if the magic is wrong (not a frame start).
    pub fn parse(buf: &[u8; FRAME_HEADER_BYTES]) -> Option<FrameHeader> {
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != FRAME_MAGIC {
            return None;
        }
        Some(FrameHeader {
            payload_len: u32_at(4),
            crc: u32_at(8),
            record_count: u32_at(12),
            first_seq: u64_at(16),
            append_time_ms: u64_at(24) as i64,
            progress: Some((u32_at(32), u64_at(40))).filter(|p| p.1 != NO_SOURCE_SEQ),
            bulk: Some(Bulk {
                id: u64_at(48),
                end_of_shards: u32_at(56),
            })
            .filter(|b| b.id != 0),
            schema_version: u32_at(60).max(1),
        })
    }

    /// Whether `payload` is what this header was written with.
    pub fn verify(&self, header_bytes: &[u8; FRAME_HEADER_BYTES], payload: &[u8]) -> bool {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header_bytes[12..]), payload);
        crc == self.crc
    }
}

/// Encodes a batch into a complete frame (header + payload).
pub fn encode(
    first_seq: u64,
    append_time_ms: i64,
    meta: FrameMeta,
    batch: &RecordBatch,
) -> Result<Vec<u8>> {
    let mut out = encode_payload(batch)?;
    let payload_len = (out.len() - FRAME_HEADER_BYTES) as u32;
    let header = header_fields(
        first_seq,
        append_time_ms,
        meta,
        record_count(batch)?,
        payload_len,
    );
    out[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Encodes a batch's payload into `out` (cleared first) behind a zeroed
/// header, to be filled in later with [`header_bytes`] (a bulk append
/// learns its sequence numbers only when it commits); returns the
/// payload's own crc32c. A bulk reuses one `out` for its frames of
/// megabytes, where a fresh buffer each time was mapped and faulted in
/// page by page.
pub fn encode_unheaded_into(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<u32> {
    encode_payload_into(batch, out)?;
    Ok(crc32c::crc32c(&out[FRAME_HEADER_BYTES..]))
}

/// Buffers in a payload are padded to 8 bytes, the IPC format's minimum,
/// not arrow-rs's default of 64: a one-row INSERT of ten columns was
/// mostly padding at 64 (2 376 bytes a frame), and every extra 4 KiB block
/// a frame crosses makes the next fsync also write the file's inode.
/// Readers copy the payload into their own aligned buffers either way.
const PAYLOAD_ALIGNMENT_BYTES: usize = 8;

/// The Arrow IPC payload behind room for a header.
fn encode_payload(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_payload_into(batch, &mut out)?;
    Ok(out)
}

fn encode_payload_into(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.resize(FRAME_HEADER_BYTES, 0);
    {
        let options =
            IpcWriteOptions::try_new(PAYLOAD_ALIGNMENT_BYTES, false, MetadataVersion::V5)?;
        let mut writer =
            StreamWriter::try_new_with_options(&mut *out, batch.schema_ref(), options)?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let payload_len = out.len() - FRAME_HEADER_BYTES;
    if payload_len > MAX_FRAME_PAYLOAD_BYTES {
        return Err(Error::ProgramLimit(format!(
            "a frame of {payload_len} bytes exceeds the limit of {MAX_FRAME_PAYLOAD_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn record_count(batch: &RecordBatch) -> Result<u32> {
    u32::try_from(batch.num_rows())
        .map_err(|_| Error::ProgramLimit("too many rows in one frame".into()))
}

/// The header of a frame whose payload is `payload_len` bytes with crc32c
/// `payload_crc`: the checksum over header and payload is combined from
/// the two parts, so a header can be written after its payload without
/// reading the payload again.
pub fn header_bytes(
    first_seq: u64,
    append_time_ms: i64,
    meta: FrameMeta,
    record_count: u32,
    payload_len: u32,
    payload_crc: u32,
) -> [u8; FRAME_HEADER_BYTES] {
    let mut out = header_fields(first_seq, append_time_ms, meta, record_count, payload_len);
    let crc = crc32c::crc32c_combine(
        crc32c::crc32c(&out[12..]),
        payload_crc,
        payload_len as usize,
    );
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A header without its checksum.
fn header_fields(
    first_seq: u64,
    append_time_ms: i64,
    meta: FrameMeta,
    record_count: u32,
    payload_len: u32,
) -> [u8; FRAME_HEADER_BYTES] {
    let mut out = [0u8; FRAME_HEADER_BYTES];
    out[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&payload_len.to_le_bytes());
    out[12..16].copy_from_slice(&record_count.to_le_bytes());
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    out[24..32].copy_from_slice(&append_time_ms.to_le_bytes());
    let (source_shard, source_seq) = meta.progress.unwrap_or((0, NO_SOURCE_SEQ));
    let bulk = meta.bulk.unwrap_or(Bulk {
        id: 0,
        end_of_shards: 0,
    });
    out[32..36].copy_from_slice(&source_shard.to_le_bytes());
    out[40..48].copy_from_slice(&source_seq.to_le_bytes());
    out[48..56].copy_from_slice(&bulk.id.to_le_bytes());
    out[56..60].copy_from_slice(&bulk.end_of_shards.to_le_bytes());
    out[60..64].copy_from_slice(&meta.schema_version.to_le_bytes());
    out
}

/// Decodes a verified payload, materialising only `projection` columns.
pub fn decode(payload: &[u8], projection: Option<&[usize]>) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(payload), projection.map(|p| p.to_vec()))?;
    let schema: Arc<Schema> = reader.schema();
    let mut batches = Vec::with_capacity(1);
    for batch in reader {
        batches.push(batch?);
    }
    match batches.len() {
        1 => Ok(batches.remove(0)),
        0 => Ok(RecordBatch::new_empty(schema)),
        _ => Ok(datafusion::arrow::compute::concat_batches(
            &schema, &batches,
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    pub(crate) fn sample(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("n{i}")),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_with_projection() {
        let meta = FrameMeta {
            progress: Some((3, 99)),
            bulk: Some(Bulk {
                id: 5,
                end_of_shards: 2,
            }),
            schema_version: 3,
        };
        let frame = encode(42, 7, meta, &sample(5)).unwrap();
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES];
        header_bytes.copy_from_slice(&frame[..FRAME_HEADER_BYTES]);
        let header = FrameHeader::parse(&header_bytes).unwrap();
        assert_eq!(header.first_seq, 42);
        assert_eq!(header.record_count, 5);
        assert_eq!(header.append_time_ms, 7);
        assert_eq!((header.progress, header.bulk), (meta.progress, meta.bulk));
        assert_eq!(header.schema_version, 3);
        let payload = &frame[FRAME_HEADER_BYTES..];
        assert!(header.verify(&header_bytes, payload));
        let batch = decode(payload, Some(&[1])).unwrap();
        assert_eq!(batch.num_columns(), 1);
        assert_eq!(batch.schema().field(0).name(), "name");
        assert_eq!(batch.num_rows(), 5);
    }

    // Buffers padded to 8 bytes only: types that need 16-byte alignment
    // (decimals) and bit-packed ones still decode exactly, and a one-row
    // frame stays small.
    #[test]
    fn eight_byte_padding_round_trips_every_buffer_kind() {
        use datafusion::arrow::array::{BooleanArray, Decimal128Array, TimestampMicrosecondArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Decimal128(38, 4), true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("s", DataType::Utf8, true),
        ]));
        let rows = 37;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    Decimal128Array::from_iter(
                        (0..rows).map(|i| (i % 5 != 0).then_some(i as i128 * 1_000_000_000_007)),
                    )
                    .with_precision_and_scale(38, 4)
                    .unwrap(),
                ),
                Arc::new(BooleanArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    (0..rows).map(|i| i as i64 * 1_000_003),
                )),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 7 != 0).then(|| "x".repeat(i))),
                )),
            ],
        )
        .unwrap();
        for n in [1, rows] {
            let part = batch.slice(0, n);
            let frame = encode(0, 0, FrameMeta::default(), &part).unwrap();
            assert_eq!(decode(&frame[FRAME_HEADER_BYTES..], None).unwrap(), part);
        }
        let one_row = encode(0, 0, FrameMeta::default(), &sample(1)).unwrap();
        // 712 bytes with 64-byte padding, 496 with 8.
        assert!(
            one_row.len() < 600,
            "a one-row frame is {} bytes",
            one_row.len()
        );
    }

    #[test]
    fn a_header_written_later_matches_one_encoded_at_once() {
        let meta = FrameMeta {
            progress: None,
            bulk: Some(Bulk {
                id: 9,
                end_of_shards: 0,
            }),
            schema_version: 2,
        };
        let whole = encode(1234, 55, meta, &sample(7)).unwrap();
        let mut later = Vec::new();
        let payload_crc = encode_unheaded_into(&sample(7), &mut later).unwrap();
        let payload_len = (later.len() - FRAME_HEADER_BYTES) as u32;
        let header = header_bytes(1234, 55, meta, 7, payload_len, payload_crc);
        later[..FRAME_HEADER_BYTES].copy_from_slice(&header);
        assert_eq!(later, whole);
        let parsed = FrameHeader::parse(&header).unwrap();
        assert!(parsed.verify(&header, &later[FRAME_HEADER_BYTES..]));
    }

    #[test]
    fn any_flipped_bit_fails_verification() {
        let frame = encode(1, 0, FrameMeta::default(), &sample(3)).unwrap();
        for pos in [
            12,
            17,
            30,
            33,
            37,
            45,
            61,
            FRAME_HEADER_BYTES + 3,
            frame.len() - 1,
        ] {
            let mut damaged = frame.clone();
            damaged[pos] ^= 0x10;
            let mut hb = [0u8; FRAME_HEADER_BYTES];
            hb.copy_from_slice(&damaged[..FRAME_HEADER_BYTES]);
            let header = FrameHeader::parse(&hb).unwrap();
            assert!(
                !header.verify(&hb, &damaged[FRAME_HEADER_BYTES..]),
                "flip at {pos} went unnoticed"
            );
        }
    }
}
