//! The one way to read a stream: a bounded run of one shard's records,
//! decoded in the reader's schema version and projection. Consumers
//! (pipelines, sinks), query scans, the Kinesis GetRecords call and the
//! dead-letter counts all read through it, so where a stream's records
//! come from (today the local log) is decided here and nowhere above.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;

use crate::error::{Error, Result};
use crate::log::{read_frame, ReadSchema, StreamLog};

use super::Stream;

/// How much one read returns.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Records to read at least when there are that many: whole frames
    /// are read, so a read may return up to one frame more.
    pub max_records: u64,
    /// No record at or past this sequence number is returned (a scan's
    /// end, fixed when it was planned).
    pub until: u64,
}

impl ReadLimits {
    /// Up to about `max_records`, to the end of what is appended now.
    pub fn records(max_records: u64) -> ReadLimits {
        ReadLimits {
            max_records,
            until: u64::MAX,
        }
    }
}

/// Records of one shard, decoded: row `i` of `batch` is sequence number
/// `first + i`; the next read starts at `end`.
#[derive(Debug)]
pub struct Records {
    pub batch: RecordBatch,
    pub first: u64,
    pub end: u64,
}

impl Stream {
    /// Reads `shard` from sequence number `from` (or the first retained
    /// one, if later) within `limits`, only the columns `projection` names
    /// (`None`: all), on a blocking thread; `None` when there is nothing.
    pub async fn read(
        &self,
        shard: u32,
        from: u64,
        limits: ReadLimits,
        projection: Option<&[usize]>,
    ) -> Result<Option<Records>> {
        // Frames of older schema versions are read in this version.
        let read = self.read_schema(projection)?;
        let log = self.log.clone();
        // Finding the frames may read a sealed segment's headers.
        tokio::task::spawn_blocking(move || read_shard(&log, shard, from, limits, &read))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// [`Stream::read`] on the calling thread, with a prepared `read` schema
/// (`Stream::read_schema`).
pub fn read_shard(
    log: &Arc<StreamLog>,
    shard: u32,
    from: u64,
    limits: ReadLimits,
    read: &ReadSchema,
) -> Result<Option<Records>> {
    let frames: Vec<_> = log
        .frames_from(shard, from, limits.max_records)?
        .into_iter()
        .filter(|(_, f)| f.first_seq < limits.until)
        .collect();
    let Some(((_, head), (_, tail))) = frames.first().zip(frames.last()) else {
        return Ok(None);
    };
    let first = head.first_seq.max(from);
    let end = tail.end_seq().min(limits.until);
    let versions = log.versions();
    let batches = frames
        .iter()
        .map(|(file, frame)| read_frame(file, frame, &versions, read, from))
        .collect::<Result<Vec<_>>>()?;
    let batch = concat_batches(read.schema(), &batches)?;
    let rows = end.saturating_sub(first) as usize;
    let batch = if batch.num_rows() > rows {
        batch.slice(0, rows)
    } else {
        batch
    };
    Ok(Some(Records { batch, first, end }))
}
