//! Writing one commit group (see `commit` for how groups form): per
//! touched shard the frames of the group, fsynced in parallel on
//! long-lived helper threads, then published; on any failure nothing of
//! the group becomes visible.

use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use super::durable;
use super::frame::{Bulk, FrameMeta, Progress};
use super::shard::{PendingWrite, Shard};
use super::AppendAck;
use crate::clock::now_ms;
use crate::error::{Error, Result};

/// A frame to write: its rows and what it records besides.
type Frame = (RecordBatch, FrameMeta);

/// One request of a group: its rows per shard, their schema version and
/// pipeline progress.
pub(super) type GroupPart = (Vec<(u32, RecordBatch)>, u32, Option<Progress>);

/// Writes the group's frames per touched shard, fsyncs them (in
/// parallel), then publishes; on any failure nothing of the group becomes
/// visible. A group of more than one frame is tagged as one unit (the
/// bulk mechanism: an id on every frame, the count of touched shards on
/// each shard's last one), so recovery cuts all of it if a crash tore it:
/// a statement is never half-present, whatever shards it spans.
pub(super) fn commit_group(
    shards: &[Arc<Shard>],
    requests: &[GroupPart],
    segment_size_bytes: u64,
    helpers: &SyncHelpers,
    unit_id: &mut UnitIds,
) -> Result<Vec<AppendAck>> {
    let append_time_ms = now_ms();
    let mut acks = vec![AppendAck::default(); requests.len()];
    let mut per_shard: Vec<(&Arc<Shard>, Vec<Frame>)> = Vec::new();
    for shard in shards {
        let frames = shard_frames(shard, requests, &mut acks)?;
        if !frames.is_empty() {
            per_shard.push((shard, frames));
        }
    }
    let frame_count: usize = per_shard.iter().map(|(_, f)| f.len()).sum();
    if frame_count > 1 {
        let id = unit_id.next();
        let touched = per_shard.len() as u32;
        for (_, frames) in &mut per_shard {
            let last = frames.len() - 1;
            for (i, (_, meta)) in frames.iter_mut().enumerate() {
                meta.bulk = Some(Bulk {
                    id,
                    end_of_shards: if i == last { touched } else { 0 },
                });
            }
        }
    }
    let mut pending: Vec<(&Arc<Shard>, PendingWrite)> = Vec::new();
    let result = (|| {
        for (shard, frames) in &per_shard {
            pending.push((
                shard,
                shard.write(frames, append_time_ms, segment_size_bytes)?,
            ));
            crate::fail::point("log.group_after_first_shard");
        }
        helpers.sync_all(&pending)
    })();
    settle(pending, result)?;
    Ok(acks)
}

/// The frames the group writes to `shard`, recording in `acks` where each
/// request's rows land. Plain appends of the group share frames; each
/// pipeline append gets a frame of its own, carrying its progress.
fn shard_frames(
    shard: &Shard,
    requests: &[GroupPart],
    acks: &mut [AppendAck],
) -> Result<Vec<Frame>> {
    let mut plain: Vec<(usize, &RecordBatch, u32)> = Vec::new();
    let mut tagged: Vec<(usize, &RecordBatch, u32, Progress)> = Vec::new();
    for (i, (parts, version, progress)) in requests.iter().enumerate() {
        for (_, batch) in parts.iter().filter(|(s, _)| *s == shard.id) {
            match progress {
                Some(p) => tagged.push((i, batch, *version, *p)),
                None => plain.push((i, batch, *version)),
            }
        }
    }
    let mut seq = shard.next_seq();
    // Consecutive plain parts share a frame up to the frame bounds, so
    // small INSERTs make one frame and a large COPY makes bounded ones; a
    // frame holds rows of one schema version (statements racing an ALTER
    // may be in either).
    let mut framer = Framer::default();
    let mut frames: Vec<Frame> = Vec::new();
    let mut framed = Vec::new();
    let mut run_version = None;
    let versioned = |version: u32| FrameMeta {
        schema_version: version,
        ..FrameMeta::default()
    };
    for (i, batch, version) in &plain {
        if let Some(previous) = run_version.filter(|v| v != version) {
            framer.finish(&mut framed)?;
            frames.extend(framed.drain(..).map(|b| (b, versioned(previous))));
        }
        run_version = Some(*version);
        acks[*i]
            .ranges
            .push((shard.id, seq, batch.num_rows() as u64));
        seq += batch.num_rows() as u64;
        framer.push(batch, &mut framed)?;
        frames.extend(framed.drain(..).map(|b| (b, versioned(*version))));
    }
    if let Some(version) = run_version {
        framer.finish(&mut framed)?;
        frames.extend(framed.drain(..).map(|b| (b, versioned(version))));
    }
    for (i, batch, version, progress) in tagged {
        acks[i]
            .ranges
            .push((shard.id, seq, batch.num_rows() as u64));
        seq += batch.num_rows() as u64;
        // A pipeline's output is framed like any other (a batch too large
        // for one frame is split, not retried unchanged forever); the
        // progress rides on its last frame, and the group's unit tag makes
        // the frames whole or absent together.
        let mut parts = Vec::new();
        let mut framer = Framer::default();
        framer.push(batch, &mut parts)?;
        framer.finish(&mut parts)?;
        if parts.is_empty() {
            // An empty output still records the progress.
            parts.push(batch.clone());
        }
        let last = parts.len() - 1;
        for (k, part) in parts.into_iter().enumerate() {
            let meta = FrameMeta {
                progress: (k == last).then_some(progress),
                bulk: None,
                schema_version: version,
            };
            frames.push((part, meta));
        }
    }
    Ok(frames)
}

/// Ids of atomic units (bulk appends and multi-frame groups): increasing
/// across restarts, so recovery can tell the newest.
pub(super) struct UnitIds {
    last: u64,
}

impl UnitIds {
    pub(super) fn after(last: u64) -> UnitIds {
        UnitIds { last }
    }

    pub(super) fn next(&mut self) -> u64 {
        let micros = (now_ms() as u64).saturating_mul(1000);
        self.last = micros.max(self.last + 1);
        self.last
    }
}

/// Most rows in one frame: readers (scans, pipelines, sinks) take whole
/// frames, so this bounds what they hold at once.
pub(super) const FRAME_MAX_ROWS: usize = 65_536;
/// Most bytes (of Arrow data) in one frame, for the same reason: wide rows
/// make frames of fewer rows. Far below the frame format's hard limit
/// (`frame::MAX_FRAME_PAYLOAD_BYTES`), so no statement is refused for it.
pub(super) const FRAME_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Batches allocated within this size are framed by their allocated size
/// rather than by the data they cover (see [`Framer::push`]).
const SMALL_BATCH_BYTES: usize = 64 * 1024;

/// The bytes of Arrow data a batch (possibly a slice) covers.
fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Packs consecutive batches into frames of at most [`FRAME_MAX_ROWS`]
/// rows and about [`FRAME_MAX_BYTES`]: a large batch is sliced (no copy),
/// small ones are joined.
pub(super) struct Framer {
    run: Vec<RecordBatch>,
    run_rows: usize,
    run_bytes: usize,
    max_bytes: usize,
}

impl Default for Framer {
    fn default() -> Framer {
        Framer::with_max_bytes(FRAME_MAX_BYTES)
    }
}

impl Framer {
    /// Frames of about `max_bytes` at most (and [`FRAME_MAX_ROWS`]).
    pub(super) fn with_max_bytes(max_bytes: usize) -> Framer {
        Framer {
            run: Vec::new(),
            run_rows: 0,
            run_bytes: 0,
            max_bytes: max_bytes.max(1),
        }
    }

    /// Adds a batch; frames it completes go to `out`.
    pub(super) fn push(&mut self, batch: &RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows_total = batch.num_rows();
        if rows_total == 0 {
            return Ok(());
        }
        // A small batch's allocated size bounds its data well enough, and
        // costs no copy of every column's `ArrayData` (a single-row INSERT
        // paid that on every statement).
        let allocated = batch.get_array_memory_size();
        let bytes_total = if allocated <= SMALL_BATCH_BYTES {
            allocated
        } else {
            data_bytes(batch)
        };
        let row_bytes = (bytes_total / rows_total).max(1);
        let rows_per_frame = (self.max_bytes / row_bytes).clamp(1, FRAME_MAX_ROWS);
        let mut start = 0;
        while start < rows_total {
            let rows = (rows_total - start).min(rows_per_frame);
            let bytes = rows * row_bytes;
            let full =
                self.run_rows + rows > FRAME_MAX_ROWS || self.run_bytes + bytes > self.max_bytes;
            if full && !self.run.is_empty() {
                out.push(self.take()?);
            }
            self.run_rows += rows;
            self.run_bytes += bytes;
            self.run.push(batch.slice(start, rows));
            start += rows;
        }
        Ok(())
    }

    /// The last, partial frame, if any.
    pub(super) fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if !self.run.is_empty() {
            out.push(self.take()?);
        }
        Ok(())
    }

    /// The run as one batch, copied only when it has several parts.
    fn take(&mut self) -> Result<RecordBatch> {
        self.run_rows = 0;
        self.run_bytes = 0;
        let mut batches = std::mem::take(&mut self.run);
        if batches.len() == 1 {
            if let Some(only) = batches.pop() {
                return Ok(only);
            }
        }
        let Some(first) = batches.first() else {
            return Err(Error::Internal("empty frame".into()));
        };
        Ok(concat_batches(first.schema_ref(), &batches)?)
    }
}

/// Ends a group: publishes every written frame if `result` is Ok (all
/// are durable), else truncates them all so none is ever served.
fn settle(pending: Vec<(&Arc<Shard>, PendingWrite)>, result: Result<()>) -> Result<()> {
    match result {
        Ok(()) => {
            for (shard, write) in pending {
                shard.publish(write);
            }
            Ok(())
        }
        Err(e) => {
            for (shard, write) in &pending {
                shard.rollback(write);
            }
            Err(e)
        }
    }
}

/// Most fsync helper threads per stream; shards beyond share them.
const MAX_SYNC_HELPERS: usize = 7;

type SyncJob = (
    Arc<std::fs::File>,
    std::sync::mpsc::SyncSender<std::io::Result<()>>,
);

/// Long-lived threads that fsync other shards' files while the leader
/// fsyncs one itself, so a group touching several shards pays about one
/// fsync of latency, without spawning a thread per group.
pub(super) struct SyncHelpers {
    jobs: Vec<std::sync::mpsc::Sender<SyncJob>>,
    /// Whether one fsync's device flush covers overwrites in every shard
    /// (see `durable`).
    flush_shared: bool,
}

impl SyncHelpers {
    pub(super) fn start(shards: &[Arc<Shard>]) -> std::io::Result<SyncHelpers> {
        let mut jobs = Vec::new();
        for i in 0..shards.len().saturating_sub(1).min(MAX_SYNC_HELPERS) {
            let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
            std::thread::Builder::new()
                .name(format!("log-fsync-{i}"))
                .spawn(move || {
                    for (file, done) in rx {
                        let _ = done.send(file.sync_data());
                    }
                })?;
            jobs.push(tx);
        }
        let dirs: Vec<&std::path::Path> = shards.iter().map(|s| s.dir()).collect();
        Ok(SyncHelpers {
            jobs,
            flush_shared: durable::flush_is_shared(&dirs),
        })
    }

    /// Makes every pending write durable. Writes that only overwrote
    /// allocated blocks are waited to the device and left to the flush of
    /// the fsyncs that follow, when the filesystem allows it: a group over
    /// four shards then pays one device flush instead of four.
    fn sync_all(&self, pending: &[(&Arc<Shard>, PendingWrite)]) -> Result<()> {
        let (mut overwrites, mut full): (Vec<&PendingWrite>, Vec<&PendingWrite>) = pending
            .iter()
            .map(|(_, w)| w)
            .partition(|w| self.flush_shared && w.is_overwrite());
        if full.is_empty() {
            // Some fsync must flush the device cache after the writebacks.
            full.extend(overwrites.pop());
        }
        if !overwrites.is_empty() {
            let written = pending
                .iter()
                .try_for_each(|(_, w)| durable::start_writeback(w.file(), w.range()))
                .and_then(|()| {
                    overwrites.iter().try_for_each(|w| {
                        crate::fail::io("log.writeback")
                            .and_then(|()| durable::wait_writeback(w.file(), w.range()))
                    })
                });
            written.map_err(stopped)?;
        }
        let files: Vec<Arc<std::fs::File>> = full.iter().map(|w| w.file().clone()).collect();
        self.sync_files(&files)
    }

    /// Fsyncs every file: the first here, the rest on helpers. Any failure
    /// is [`Error::LogStopped`]: the caller stops the log.
    pub(super) fn sync_files(&self, files: &[Arc<std::fs::File>]) -> Result<()> {
        let Some((first, rest)) = files.split_first() else {
            return Ok(());
        };
        let mut waiting = Vec::with_capacity(rest.len());
        let mut outcome = Ok(());
        for (i, file) in rest.iter().enumerate() {
            let (done, result) = std::sync::mpsc::sync_channel(1);
            match self.jobs.get(i % self.jobs.len().max(1)) {
                Some(helper) if helper.send((file.clone(), done)).is_ok() => waiting.push(result),
                _ => outcome = outcome.and(file.sync_data()),
            }
        }
        outcome = outcome.and(crate::fail::io("log.fsync").and_then(|()| first.sync_data()));
        for result in waiting {
            let synced = result
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the fsync helper thread stopped")));
            outcome = outcome.and(synced);
        }
        outcome.map_err(stopped)
    }
}

/// A failed fsync or writeback: the caller stops the log.
fn stopped(e: std::io::Error) -> Error {
    Error::LogStopped(format!(
        "the stream log stopped accepting writes after a failed fsync ({e}); \
         acknowledged records are intact and readable; restart the server to resume writes"
    ))
}
