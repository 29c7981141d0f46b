//! Continuous queries: a derived stream's pipeline reads its source shard
//! by shard from where it stopped, runs the compiled [`Program`] on each
//! micro-batch as soon as it is durable, and appends the result to the same
//! shard of the derived stream. Output rows and input progress go into one
//! frame ([`StreamLog::append_to_shard`]), so after a crash the pipeline
//! resumes exactly after the last input it wrote out: no loss, no
//! duplicates. A record whose expression fails goes to `sluice.errors`; a
//! failure of the whole pipeline (disk full, I/O) is retried with bounded
//! backoff and never skips input.

mod compile;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use compile::{compile, Program};

use crate::engine::Stream;
use crate::error::{Error, Result};
use crate::ingest::dead_letter::{self, DeadLetter};
use crate::log::read_frame;
use crate::types::{ColumnDef, SqlType};

/// Most source records taken into one micro-batch; bounds memory and the
/// work lost to a retry.
const MAX_BATCH_RECORDS: u64 = 65_536;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The columns of `sluice.errors`, the dead-letter stream of every stage.
pub fn errors_columns() -> Vec<ColumnDef> {
    let col = |name: &str, sql_type: SqlType, nullable: bool| ColumnDef {
        name: name.into(),
        sql_type,
        nullable,
    };
    vec![
        col("at", SqlType::TimestampTz, false),
        col("stream", SqlType::Text, true),
        col("pipeline", SqlType::Text, true),
        col("stage", SqlType::Text, false),
        col("error_code", SqlType::Text, false),
        col("error_message", SqlType::Text, false),
        col("raw", SqlType::Text, true),
        col("attempts", SqlType::Integer, false),
    ]
}

/// Counters and state shown in `sluice.pipelines`.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub processed: AtomicU64,
    pub errors: AtomicU64,
    /// `None` while healthy; the last failure while retrying.
    pub last_error: Mutex<Option<String>>,
    /// Next source sequence to read, per shard.
    pub offsets: Vec<AtomicU64>,
}

/// A running continuous query.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub sql: String,
    pub source: Arc<Stream>,
    pub output: Arc<Stream>,
    pub stats: Arc<PipelineStats>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct ShardWorker {
    name: String,
    program: Arc<Program>,
    source: Arc<Stream>,
    output: Arc<Stream>,
    errors: Arc<Stream>,
    stats: Arc<PipelineStats>,
    shard: u32,
}

impl Pipeline {
    /// Starts one task per source shard, each resuming after the progress
    /// recorded in its output shard (or at `start_offsets`).
    pub fn start(
        name: &str,
        sql: &str,
        program: Program,
        source: Arc<Stream>,
        output: Arc<Stream>,
        errors: Arc<Stream>,
        start_offsets: &[u64],
    ) -> Arc<Pipeline> {
        let shards = source.log.shard_count();
        let offsets: Vec<u64> = (0..shards)
            .map(|s| {
                let start = start_offsets.get(s as usize).copied().unwrap_or(0);
                output.log.last_source_seq(s).unwrap_or(start).max(start)
            })
            .collect();
        let stats = Arc::new(PipelineStats {
            offsets: offsets.iter().map(|o| AtomicU64::new(*o)).collect(),
            ..PipelineStats::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let program = Arc::new(program);
        let tasks = (0..shards)
            .map(|shard| {
                source.log.hold(name, shard, offsets[shard as usize]);
                let worker = ShardWorker {
                    name: name.to_string(),
                    program: program.clone(),
                    source: source.clone(),
                    output: output.clone(),
                    errors: errors.clone(),
                    stats: stats.clone(),
                    shard,
                };
                tokio::spawn(worker.run(offsets[shard as usize], stop_rx.clone()))
            })
            .collect();
        Arc::new(Pipeline {
            name: name.to_string(),
            sql: sql.to_string(),
            source,
            output,
            stats,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// Source records not yet processed, over all shards.
    pub fn lag_records(&self) -> u64 {
        self.source
            .log
            .end_offsets()
            .iter()
            .zip(&self.stats.offsets)
            .map(|(end, done)| end.saturating_sub(done.load(Ordering::Relaxed)))
            .sum()
    }

    pub fn state(&self) -> &'static str {
        if *self.stop.borrow() {
            "stopped"
        } else if self
            .stats
            .last_error
            .lock()
            .map(|e| e.is_some())
            .unwrap_or(false)
        {
            "failed"
        } else {
            "running"
        }
    }

    /// Stops the tasks (after the batch in hand) and releases retention holds.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        self.source.log.release(&self.name);
    }
}

impl ShardWorker {
    async fn run(self, mut offset: u64, mut stop: watch::Receiver<bool>) {
        let Some(mut appended) = self.source.log.subscribe(self.shard) else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return;
            }
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
            match self.process(frames, offset, end).await {
                Ok(()) => {
                    offset = end;
                    self.stats.offsets[self.shard as usize].store(offset, Ordering::Relaxed);
                    self.source.log.hold(&self.name, self.shard, offset);
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

    /// Decodes, transforms and appends one micro-batch; the output frame
    /// carries `end`, the input position after it.
    async fn process(
        &self,
        frames: Vec<(Arc<std::fs::File>, crate::log::FrameRef)>,
        offset: u64,
        end: u64,
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
        let (output, failures) = self.transform(&input);
        let failed = failures.len() as u64;
        self.dead_letter(failures).await?;
        let output = self.conform(output)?;
        self.output
            .log
            .append_to_shard(self.shard, output, end)
            .await?;
        self.stats
            .processed
            .fetch_add(input.num_rows() as u64, Ordering::Relaxed);
        self.stats.errors.fetch_add(failed, Ordering::Relaxed);
        Ok(())
    }

    /// Runs the program on the batch; if that fails, row by row, so one bad
    /// record fails alone. Returns the output and the failed rows.
    fn transform(&self, input: &RecordBatch) -> (RecordBatch, Vec<(RecordBatch, Error)>) {
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
        dead_letter::record(&self.errors, &letters).await
    }
}

/// One row as a JSON object, for `sluice.errors.raw`.
fn row_json(row: &RecordBatch) -> Option<String> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(row).ok()?;
        writer.finish().ok()?;
    }
    String::from_utf8(out)
        .ok()
        .map(|s| s.trim_end().to_string())
}
