//! What pipelines and sinks share as consumers of a stream: one loop per
//! source shard ([`run_shard`]) that waits on the shard's appends, reads
//! a bounded run of records ([`Stream::read`]), hands it to the
//! consumer's step, moves the retention hold, and backs off and shows
//! `last_error` when a step fails; a set of tasks with one stop signal;
//! lag and state as shown in `sluice.pipelines` / `sluice.sinks`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::log::StreamLog;

use super::{ReadLimits, Stream};

/// Most source records one step reads; bounds the decoded batch and the
/// work a retry repeats.
pub const MAX_STEP_RECORDS: u64 = 65_536;

/// Retry delays after a failed step: doubling from `min` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Sleeps `delay`, or less if `stop` changes; returns the next delay.
    pub async fn wait(&self, delay: Duration, stop: &mut watch::Receiver<bool>) -> Duration {
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        (delay * 2).min(self.max)
    }
}

/// Source records `[offset, end)` of one shard, decoded.
#[derive(Debug)]
pub struct Input {
    pub batch: RecordBatch,
    pub offset: u64,
    pub end: u64,
}

/// What a step did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stepped {
    /// It made progress: step again before waiting.
    pub more: bool,
    /// Nothing that failed before is still pending: clear `last_error` and
    /// start the next backoff from its minimum.
    pub healthy: bool,
    /// Every record before this offset is done with: retention may take it.
    pub hold: Option<u64>,
}

/// A consumer of one source shard: a pipeline's transform or a sink's
/// delivery. [`run_shard`] drives it.
#[async_trait]
pub trait ShardConsumer: Send {
    /// Where the next read starts.
    fn position(&self) -> u64;

    /// The source columns to decode (`None`: all).
    fn projection(&self) -> Option<Vec<usize>> {
        None
    }

    /// One step over the records read at [`ShardConsumer::position`], or
    /// over none when the shard has nothing new (rollover timers, flushes).
    async fn step(&mut self, input: Option<Input>) -> Result<Stepped>;

    /// After a failed step, before the backoff: drop partial work.
    async fn failed(&mut self, _error: &Error) {}

    /// Resolves when something besides an append needs a step (a flush
    /// request, a rollover deadline); `false` means stop.
    async fn wake(&mut self) -> bool {
        std::future::pending().await
    }

    /// The loop ends (stop signal, source closed).
    async fn stopped(&mut self) {}
}

/// Where a consumer's loop reports: its hold name on the source, its
/// `last_error`, and what to call it in logs.
/// A consumer chosen at run time (a sink's file or endpoint worker).
#[async_trait]
impl ShardConsumer for Box<dyn ShardConsumer> {
    fn position(&self) -> u64 {
        (**self).position()
    }

    fn projection(&self) -> Option<Vec<usize>> {
        (**self).projection()
    }

    async fn step(&mut self, input: Option<Input>) -> Result<Stepped> {
        (**self).step(input).await
    }

    async fn failed(&mut self, error: &Error) {
        (**self).failed(error).await
    }

    async fn wake(&mut self) -> bool {
        (**self).wake().await
    }

    async fn stopped(&mut self) {
        (**self).stopped().await
    }
}

pub struct ShardLoop<'a> {
    pub source: &'a Stream,
    pub shard: u32,
    pub hold_name: &'a str,
    pub last_error: &'a Mutex<Option<String>>,
    pub backoff: Backoff,
}

/// Runs `consumer` on one source shard until `stop`.
pub async fn run_shard<C: ShardConsumer>(
    mut consumer: C,
    at: ShardLoop<'_>,
    mut stop: watch::Receiver<bool>,
) {
    let log = &at.source.log;
    let Some(mut appended) = log.subscribe(at.shard) else {
        return;
    };
    let mut backoff = at.backoff.min;
    loop {
        if *stop.borrow() {
            break;
        }
        let stepped = match read(
            at.source,
            at.shard,
            consumer.position(),
            consumer.projection(),
        )
        .await
        {
            Ok(input) => consumer.step(input).await,
            Err(e) => Err(e),
        };
        match stepped {
            Ok(stepped) => {
                if let Some(offset) = stepped.hold {
                    log.hold(at.hold_name, at.shard, offset);
                }
                if stepped.healthy {
                    backoff = at.backoff.min;
                    set_error(at.last_error, None);
                }
                if stepped.more {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %at.hold_name, shard = at.shard, error = %e, "step failed; retrying");
                set_error(at.last_error, Some(e.to_string()));
                consumer.failed(&e).await;
                backoff = at.backoff.wait(backoff, &mut stop).await;
                continue;
            }
        }
        // Wait for the next durable append (or the consumer's own reason),
        // not a timer.
        tokio::select! {
            _ = stop.changed() => {}
            changed = appended.changed() => if changed.is_err() { break },
            more = consumer.wake() => if !more { break },
        }
    }
    consumer.stopped().await;
}

/// Up to about [`MAX_STEP_RECORDS`] records of `shard` from `offset`;
/// `None` when there are none.
async fn read(
    source: &Stream,
    shard: u32,
    offset: u64,
    projection: Option<Vec<usize>>,
) -> Result<Option<Input>> {
    let records = source
        .read(
            shard,
            offset,
            ReadLimits::records(MAX_STEP_RECORDS),
            projection.as_deref(),
        )
        .await?;
    Ok(records.map(|r| Input {
        batch: r.batch,
        offset: r.first,
        end: r.end,
    }))
}

/// Sets (or with `None` clears) a consumer's shown failure.
pub fn set_error(last_error: &Mutex<Option<String>>, error: Option<String>) {
    if let Ok(mut last) = last_error.lock() {
        *last = error;
    }
}

/// Background tasks that stop together.
#[derive(Debug)]
pub struct Tasks {
    stop: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    /// The task set and the stop signal its tasks watch.
    pub fn new() -> (Tasks, watch::Receiver<bool>) {
        let (stop, rx) = watch::channel(false);
        (
            Tasks {
                stop,
                handles: Mutex::new(Vec::new()),
            },
            rx,
        )
    }

    pub fn push(&self, handle: JoinHandle<()>) {
        if let Ok(mut handles) = self.handles.lock() {
            handles.push(handle);
        }
    }

    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Signals stop and waits for every task to end.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let handles: Vec<_> = self
            .handles
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for handle in handles {
            let _ = handle.await;
        }
    }

    /// `stopped`, `failing` while `last_error` is set, else `running`.
    pub fn state(&self, last_error: &Mutex<Option<String>>, failing: &'static str) -> &'static str {
        if self.stopped() {
            "stopped"
        } else if last_error.lock().map(|e| e.is_some()).unwrap_or(false) {
            failing
        } else {
            "running"
        }
    }
}

/// Records of `source` after each shard's consumed position.
pub fn lag_records(source: &StreamLog, consumed: &[AtomicU64]) -> u64 {
    source
        .end_offsets()
        .iter()
        .zip(consumed)
        .map(|(end, done)| end.saturating_sub(done.load(Ordering::Relaxed)))
        .sum()
}
