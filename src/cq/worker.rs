//! One task of a pipeline: reads one source shard, transforms each
//! micro-batch, and appends the output to every output shard with the
//! progress it covers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use tokio::sync::watch;

use super::{PipelineStats, Program};
use crate::error::{Error, Result};
use crate::log::{read_frame, FrameRef};
use crate::runtime::dead_letters::{self, row_json, DeadLetter};
use crate::runtime::Stream;

/// Most source records taken into one micro-batch; bounds memory and the
/// work lost to a retry.
const MAX_BATCH_RECORDS: u64 = 65_536;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Source rows whose transform failed, with why.
type Failures = Vec<(RecordBatch, Error)>;

pub(super) struct ShardWorker {
    pub name: String,
    pub program: Arc<Program>,
    pub source: Arc<Stream>,
    pub output: Arc<Stream>,
    pub errors: Arc<Stream>,
    pub stats: Arc<PipelineStats>,
    pub shard: u32,
}

impl ShardWorker {
    /// `ends[o]`: the source position output shard `o` already holds.
    pub async fn run(self, mut ends: Vec<u64>, mut stop: watch::Receiver<bool>) {
        let Some(mut appended) = self.source.log.subscribe(self.shard) else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return;
            }
            let offset = ends.iter().copied().min().unwrap_or(0);
            let frames = self
                .source
                .log
                .frames_from(self.shard, offset, MAX_BATCH_RECORDS);
            if frames.is_empty() {
                // Wait for the next durable append, not a timer.
                tokio::select! {
                    _ = stop.changed() => return,
                    changed = appended.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let end = frames.last().map_or(offset, |(_, f)| f.end_seq());
            match self.process(frames, offset, end, &ends).await {
                Ok(()) => {
                    ends.iter_mut().for_each(|e| *e = (*e).max(end));
                    self.stats.offsets[self.shard as usize].store(end, Ordering::Relaxed);
                    self.source.log.hold(&self.name, self.shard, end);
                    if let Ok(mut e) = self.stats.last_error.lock() {
                        *e = None;
                    }
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(pipeline = %self.name, shard = self.shard, error = %e, "pipeline batch failed; retrying");
                    if let Ok(mut last) = self.stats.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Decodes, transforms and appends one micro-batch `[offset, end)`.
    async fn process(
        &self,
        frames: Vec<(Arc<std::fs::File>, FrameRef)>,
        offset: u64,
        end: u64,
        ends: &[u64],
    ) -> Result<()> {
        let projection = self.program.projection.clone();
        let schema = match &projection {
            Some(p) => Arc::new(self.source.schema.project(p)?),
            None => self.source.schema.clone(),
        };
        let input = tokio::task::spawn_blocking(move || -> Result<RecordBatch> {
            let batches = frames
                .iter()
                .map(|(file, frame)| read_frame(file, frame, projection.as_deref(), offset))
                .collect::<Result<Vec<_>>>()?;
            Ok(concat_batches(&schema, &batches)?)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        // After a crash, output shards may hold different amounts of this
        // range: then each row is placed (and skipped) one by one.
        let uneven = ends.iter().any(|e| *e > offset);
        let (parts, failures) = if uneven {
            self.transform_catching_up(&input, offset, ends)?
        } else {
            let (output, failures) = self.transform(&input);
            (self.split(self.conform(output)?)?, failures)
        };
        let failed = failures.len() as u64;
        self.dead_letter(failures).await?;
        self.output
            .log
            .append_progress(parts, (self.shard, end))
            .await?;
        self.stats
            .processed
            .fetch_add(input.num_rows() as u64, Ordering::Relaxed);
        self.stats.errors.fetch_add(failed, Ordering::Relaxed);
        Ok(())
    }

    /// Runs the program on the batch; if that fails, row by row, so one bad
    /// record fails alone. Returns the output and the failed rows.
    fn transform(&self, input: &RecordBatch) -> (RecordBatch, Failures) {
        if let Ok(out) = self.program.run(input) {
            return (out, Vec::new());
        }
        let mut good = Vec::new();
        let mut failures = Vec::new();
        for row in 0..input.num_rows() {
            let one = input.slice(row, 1);
            match self.program.run(&one) {
                Ok(out) => good.push(out),
                Err(e) => failures.push((one, Error::from_datafusion(e))),
            }
        }
        let output = concat_batches(&self.program.output, &good)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.program.output.clone()));
        (output, failures)
    }

    /// Row-by-row transform that leaves out, per output shard, rows of
    /// source positions that shard already holds (`ends`).
    fn transform_catching_up(
        &self,
        input: &RecordBatch,
        offset: u64,
        ends: &[u64],
    ) -> Result<(Vec<(u32, RecordBatch)>, Failures)> {
        let mut per_shard: Vec<Vec<RecordBatch>> = vec![Vec::new(); ends.len()];
        let mut failures = Vec::new();
        for row in 0..input.num_rows() {
            let one = input.slice(row, 1);
            let out = match self.program.run(&one) {
                Ok(out) => self.conform(out)?,
                Err(e) => {
                    if ends.iter().all(|e| offset + (row as u64) < *e) {
                        continue; // every shard is past it: reported before.
                    }
                    failures.push((one, Error::from_datafusion(e)));
                    continue;
                }
            };
            for (shard, part) in self.split(out)? {
                if offset + row as u64 >= ends[shard as usize] && part.num_rows() > 0 {
                    per_shard[shard as usize].push(part);
                }
            }
        }
        let parts = per_shard
            .into_iter()
            .enumerate()
            .map(|(shard, batches)| {
                Ok((shard as u32, concat_batches(&self.output.schema, &batches)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((parts, failures))
    }

    /// Output rows per output shard; every shard gets a part (maybe empty)
    /// so that each records this batch's progress.
    fn split(&self, output: RecordBatch) -> Result<Vec<(u32, RecordBatch)>> {
        let shards = self.output.log.shard_count();
        let empty = || RecordBatch::new_empty(self.output.schema.clone());
        let mut parts: Vec<(u32, RecordBatch)> = (0..shards).map(|s| (s, empty())).collect();
        match self.output.log.split_by_key(&output)? {
            Some(rows) => {
                for (shard, rows) in rows.into_iter().enumerate() {
                    if !rows.is_empty() {
                        parts[shard].1 = take_record_batch(&output, &UInt32Array::from(rows))?;
                    }
                }
            }
            None => parts[(self.shard % shards) as usize].1 = output,
        }
        Ok(parts)
    }

    /// Casts the program's output to the derived stream's declared schema.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let target = &self.output.schema;
        let columns = target
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, col)| {
                if col.data_type() == field.data_type() {
                    Ok(col.clone())
                } else {
                    datafusion::arrow::compute::cast(col, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            target.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?)
    }

    async fn dead_letter(&self, failures: Vec<(RecordBatch, Error)>) -> Result<()> {
        let letters: Vec<DeadLetter> = failures
            .into_iter()
            .map(|(row, error)| DeadLetter {
                stream: Some(self.source.def.name.clone()),
                pipeline: Some(self.name.clone()),
                stage: "transform",
                raw: row_json(&row),
                error,
            })
            .collect();
        dead_letters::record(&self.errors, &letters).await
    }
}
