//! Group commit without a writer thread. The appending task that finds no
//! commit running becomes the leader: it writes and fsyncs its own
//! statement together with every statement queued at that moment, answers
//! them, and hands the lead to the oldest statement still waiting. A lone
//! client thus pays one fsync and no thread hand-off per statement (the
//! writer-thread design paid two wake-ups: to the writer and back), while
//! concurrent clients still share fsyncs.
//!
//! The lead is handed over through the waiting statement's own channel; a
//! waiter dropped before it reads its turn (a cancelled statement) takes
//! the lead in its destructor, so the queue never stalls.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::{oneshot, Semaphore};

use super::bulk::{self, BulkFiles};
use super::frame::Progress;
use super::shard::Shard;
use super::writer::{commit_group, GroupPart, SyncHelpers, UnitIds};
use super::AppendAck;
use crate::error::{Error, Result};

/// Most statements merged into one group commit; bounds the work (and the
/// latency) of one fsync round.
const MAX_GROUP_REQUESTS: usize = 4096;
/// Most bytes of Arrow data merged into one group commit.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// A statement at least this large is written with the runtime told the
/// thread blocks (`block_in_place`), as is every group of several
/// statements; a lone small one (one write and one fsync, tens of
/// microseconds) costs less than moving the runtime's other tasks off the
/// thread.
const INLINE_GROUP_MAX_BYTES: usize = 1024 * 1024;
/// How long `close` waits for a commit in progress.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// One statement's rows, as the log writes them.
pub(super) struct Request {
    pub parts: Vec<(u32, RecordBatch)>,
    /// The schema version every part is written in.
    pub schema_version: u32,
    /// Pipeline progress to record with these rows.
    pub progress: Option<Progress>,
    /// A spilled bulk append, written alone (see `bulk`).
    pub bulk: Option<BulkFiles>,
}

impl Request {
    fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}

/// What a waiting statement is told: its outcome, or that it leads now
/// (its rows not yet written).
enum Turn {
    Done(Result<AppendAck>),
    Lead(Request),
}

struct Queued {
    request: Request,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    /// A leader is committing, or the lead is on its way to a waiter.
    leading: bool,
    closed: bool,
}

/// The group commit of one stream's log.
pub(super) struct Committer {
    queue: Mutex<Queue>,
    /// Signalled when the lead ends (for `close`).
    idle: Condvar,
    /// Bounds the statements in flight (`append_queue_depth`).
    slots: Semaphore,
    shards: Vec<Arc<Shard>>,
    helpers: SyncHelpers,
    segment_size_bytes: u64,
    /// Only the leader takes ids; the lock is never contended.
    unit_ids: Mutex<UnitIds>,
    /// Why appends are refused (a failed fsync), if they are.
    stopped: Arc<Mutex<Option<String>>>,
}

impl Committer {
    pub(super) fn new(
        shards: Vec<Arc<Shard>>,
        queue_depth: usize,
        segment_size_bytes: u64,
        last_unit_id: u64,
        stopped: Arc<Mutex<Option<String>>>,
    ) -> std::io::Result<Committer> {
        Ok(Committer {
            queue: Mutex::new(Queue::default()),
            idle: Condvar::new(),
            slots: Semaphore::new(queue_depth.clamp(1, Semaphore::MAX_PERMITS)),
            helpers: SyncHelpers::start(shards.len())?,
            shards,
            segment_size_bytes,
            unit_ids: Mutex::new(UnitIds::after(last_unit_id)),
            stopped,
        })
    }

    fn queue(&self) -> Result<MutexGuard<'_, Queue>> {
        self.queue
            .lock()
            .map_err(|_| Error::Internal("log queue lock poisoned".into()))
    }

    /// Stores `request`, resolving once it is durable (or failed).
    pub(super) async fn append(&self, request: Request) -> Result<AppendAck> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let turn = {
            let mut queue = self.queue()?;
            if queue.closed {
                return Err(Error::ShuttingDown);
            }
            if queue.leading {
                let (tx, rx) = oneshot::channel();
                queue.waiting.push_back(Queued { request, turn: tx });
                rx
            } else {
                queue.leading = true;
                drop(queue);
                return self.lead(request, true);
            }
        };
        let mut waiter = Waiter {
            committer: self,
            turn: Some(turn),
        };
        waiter.wait().await
    }

    /// Commits `own` with the statements queued now, answers them, and
    /// passes the lead on; returns `own`'s outcome. Never awaits: a lead
    /// cannot be cancelled halfway.
    fn lead(&self, own: Request, may_block: bool) -> Result<AppendAck> {
        let mut own = Some(own);
        let mut outcome = None;
        loop {
            if let Some(request) = own.take() {
                let result = self.commit_with_queued(request, may_block);
                outcome.get_or_insert(result);
            }
            let next = {
                let mut queue = match self.queue() {
                    Ok(queue) => queue,
                    Err(e) => return outcome.unwrap_or(Err(e)),
                };
                match queue.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        queue.leading = false;
                        self.idle.notify_all();
                        break;
                    }
                }
            };
            match next.turn.send(Turn::Lead(next.request)) {
                Ok(()) => break,
                // Its waiter is gone: commit it here, then look again.
                Err(Turn::Lead(request)) => own = Some(request),
                Err(Turn::Done(_)) => {}
            }
        }
        outcome.unwrap_or_else(|| Err(Error::Internal("a log commit had no outcome".into())))
    }

    /// Commits `first` and the statements queued behind it (a bulk alone),
    /// answers the queued ones and returns `first`'s outcome.
    fn commit_with_queued(&self, first: Request, may_block: bool) -> Result<AppendAck> {
        let mut group = vec![first];
        let mut replies = Vec::new();
        let mut group_bytes = group[0].bytes();
        if group[0].bulk.is_none() {
            if let Ok(mut queue) = self.queue() {
                while group.len() < MAX_GROUP_REQUESTS && group_bytes < MAX_GROUP_BYTES {
                    // A bulk is written alone, after this group.
                    match queue.waiting.front() {
                        Some(next) if next.request.bulk.is_none() => {}
                        _ => break,
                    }
                    let Some(next) = queue.waiting.pop_front() else {
                        break;
                    };
                    group_bytes += next.request.bytes();
                    group.push(next.request);
                    replies.push(next.turn);
                }
            }
        }
        // A lone small statement is committed right here: moving the
        // runtime's tasks off this thread would cost more than its fsync.
        // When others queued meanwhile, more are arriving: the thread is
        // given up for the fsync so the runtime goes on parsing them (with
        // few workers, a worker stuck in fsync halves how many statements
        // the next group gathers).
        let alone = group.len() == 1 && group[0].bulk.is_none();
        let heavy = !alone || group_bytes >= INLINE_GROUP_MAX_BYTES;
        let mut results = if heavy && may_block {
            blocking(|| self.commit(group))
        } else {
            self.commit(group)
        }
        .into_iter();
        let own = results
            .next()
            .unwrap_or_else(|| Err(Error::Internal("a log commit lost a statement".into())));
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(Turn::Done(result));
        }
        own
    }

    /// Writes a group, one outcome per request in order. A failed fsync
    /// stops the log: later appends are refused until a restart.
    fn commit(&self, group: Vec<Request>) -> Vec<Result<AppendAck>> {
        let count = group.len();
        if let Some(why) = self.stopped.lock().ok().and_then(|s| s.clone()) {
            return (0..count)
                .map(|_| Err(Error::LogStopped(why.clone())))
                .collect();
        }
        let written = catch_unwind(AssertUnwindSafe(|| self.write(group))).unwrap_or_else(|_| {
            Err(Error::LogStopped(
                "the stream log stopped accepting writes after an internal error; \
                 acknowledged records are intact; restart the server to resume writes"
                    .into(),
            ))
        });
        match written {
            Ok(acks) => acks.into_iter().map(Ok).collect(),
            Err(e) => {
                if let Error::LogStopped(why) = &e {
                    tracing::error!(error = %why, "stream log stopped: writes are refused until a restart");
                    if let Ok(mut stopped) = self.stopped.lock() {
                        *stopped = Some(why.clone());
                    }
                }
                (0..count).map(|_| Err(e.duplicate())).collect()
            }
        }
    }

    fn write(&self, mut group: Vec<Request>) -> Result<Vec<AppendAck>> {
        let mut unit_ids = self
            .unit_ids
            .lock()
            .map_err(|_| Error::Internal("log unit id lock poisoned".into()))?;
        if let Some(files) = group.first_mut().and_then(|r| r.bulk.take()) {
            let ack = bulk::adopt_bulk(&self.shards, &files, unit_ids.next(), &self.helpers)?;
            return Ok(vec![ack]);
        }
        let parts: Vec<GroupPart> = group
            .into_iter()
            .map(|r| (r.parts, r.schema_version, r.progress))
            .collect();
        commit_group(
            &self.shards,
            &parts,
            self.segment_size_bytes,
            &self.helpers,
            &mut unit_ids,
        )
    }

    /// Refuses new appends and waits for the statements already queued to
    /// be committed (bounded by [`CLOSE_WAIT`]).
    pub(super) fn close(&self) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        queue.closed = true;
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while queue.leading {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("closing a stream log while a commit is still running");
                return;
            }
            queue = match self.idle.wait_timeout(queue, left) {
                Ok((queue, _)) => queue,
                Err(_) => return,
            };
        }
    }
}

/// A statement waiting for its turn; dropped unanswered (its task was
/// cancelled), it still takes the lead if it was handed it.
struct Waiter<'a> {
    committer: &'a Committer,
    turn: Option<oneshot::Receiver<Turn>>,
}

impl Waiter<'_> {
    async fn wait(&mut self) -> Result<AppendAck> {
        let Some(turn) = self.turn.as_mut() else {
            return Err(Error::Internal("a log waiter was polled twice".into()));
        };
        let received = turn.await;
        self.turn = None;
        match received {
            Ok(Turn::Done(result)) => result,
            Ok(Turn::Lead(request)) => self.committer.lead(request, true),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            // After close() no lead can arrive; one sent before is taken.
            turn.close();
            if let Ok(Turn::Lead(request)) = turn.try_recv() {
                // Not inside the runtime's blocking machinery: this may
                // run while the runtime shuts down.
                let _ = self.committer.lead(request, false);
            }
        }
    }
}

/// Runs `f`, telling a multi-threaded runtime that the thread blocks so
/// its other tasks move on; elsewhere it just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
