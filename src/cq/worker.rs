//! One task of a pipeline: reads one source shard, transforms each
//! micro-batch, and appends the output to every output shard with the
//! progress it covers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};

use super::{PipelineStats, Program};
use crate::error::{Error, Result};
use crate::runtime::consumer::{Input, ShardConsumer, Stepped};
use crate::runtime::dead_letters::{self, row_json, DeadLetter};
use crate::runtime::Stream;

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
    /// `ends[o]`: the source position output shard `o` already holds.
    pub ends: Vec<u64>,
}

#[async_trait]
impl ShardConsumer for ShardWorker {
    fn position(&self) -> u64 {
        self.ends.iter().copied().min().unwrap_or(0)
    }

    fn projection(&self) -> Option<Vec<usize>> {
        self.program.projection.clone()
    }

    async fn step(&mut self, input: Option<Input>) -> Result<Stepped> {
        let Some(input) = input else {
            return Ok(Stepped {
                healthy: true,
                ..Stepped::default()
            });
        };
        let end = input.end;
        self.process(input).await?;
        self.ends.iter_mut().for_each(|e| *e = (*e).max(end));
        self.stats.offsets[self.shard as usize].store(end, Ordering::Relaxed);
        Ok(Stepped {
            more: true,
            healthy: true,
            hold: Some(end),
        })
    }
}

impl ShardWorker {
    /// Transforms and appends one micro-batch `[offset, end)`.
    async fn process(&self, input: Input) -> Result<()> {
        let Input { batch, offset, end } = input;
        // After a crash, output shards may hold different amounts of this
        // range: then each row is placed (and skipped) one by one.
        let uneven = self.ends.iter().any(|e| *e > offset);
        let (parts, failures) = if uneven {
            self.transform_catching_up(&batch, offset, &self.ends)?
        } else {
            let (output, failures) = self.transform(&batch);
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
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
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
