//! Continuous queries: a derived stream's pipeline reads its source shard
//! by shard from where it stopped, runs the compiled [`Program`] on each
//! micro-batch as soon as it is durable, and appends the result to the
//! derived stream (same shard number, or by the derived stream's partition
//! key). Output rows and input progress go into the same frames
//! (`StreamLog::append_progress`), so after a crash the pipeline resumes
//! exactly after the last input each output shard holds: no loss, no
//! duplicates. A record whose expression fails goes to `sluice.errors`; a
//! failure of the whole pipeline (disk full, I/O) is retried with bounded
//! backoff and never skips input.

mod compile;
mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use compile::{compile, Program};
use worker::ShardWorker;

use crate::runtime::consumer::{lag_records, run_shard, Backoff, ShardLoop, Tasks};
use crate::runtime::Stream;

/// Retries of a failing pipeline (disk full, I/O): never skipping input.
const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(50),
    max: Duration::from_secs(10),
};

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
    tasks: Tasks,
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
        // Per source shard, per output shard: where that pair's output
        // stopped. A task resumes at the lowest and skips, per output
        // shard, what that shard already holds.
        let ends: Vec<Vec<u64>> = (0..shards)
            .map(|s| {
                let start = start_offsets.get(s as usize).copied().unwrap_or(0);
                (0..output.log.shard_count())
                    .map(|o| output.log.last_progress(o, s).unwrap_or(start).max(start))
                    .collect()
            })
            .collect();
        let offsets: Vec<u64> = ends
            .iter()
            .map(|e| e.iter().copied().min().unwrap_or(0))
            .collect();
        let stats = Arc::new(PipelineStats {
            offsets: offsets.iter().map(|o| AtomicU64::new(*o)).collect(),
            ..PipelineStats::default()
        });
        let (tasks, stop_rx) = Tasks::new();
        let program = Arc::new(program);
        for shard in 0..shards {
            source.log.hold(name, shard, offsets[shard as usize]);
            let worker = ShardWorker {
                name: name.to_string(),
                program: program.clone(),
                source: source.clone(),
                output: output.clone(),
                errors: errors.clone(),
                stats: stats.clone(),
                shard,
                ends: ends[shard as usize].clone(),
            };
            let (source, stats, name) = (source.clone(), stats.clone(), name.to_string());
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let at = ShardLoop {
                    source: &source,
                    shard,
                    hold_name: &name,
                    last_error: &stats.last_error,
                    backoff: BACKOFF,
                };
                run_shard(worker, at, stop).await;
            }));
        }
        Arc::new(Pipeline {
            name: name.to_string(),
            sql: sql.to_string(),
            source,
            output,
            stats,
            tasks,
        })
    }

    /// Source records not yet processed, over all shards.
    pub fn lag_records(&self) -> u64 {
        lag_records(&self.source.log, &self.stats.offsets)
    }

    pub fn state(&self) -> &'static str {
        self.tasks.state(&self.stats.last_error, "failed")
    }

    /// Stops the tasks (after the batch in hand) and releases retention holds.
    pub async fn stop(&self) {
        self.tasks.stop().await;
        self.source.log.release(&self.name);
    }
}
