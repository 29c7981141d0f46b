//! What pipelines and sinks share as consumers of a stream: a set of
//! background tasks with one stop signal, and their lag and state as
//! shown in `sluice.pipelines` / `sluice.sinks`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log::StreamLog;

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
