//! Group commit. The appending task that finds no commit running becomes
//! the leader: it writes and fsyncs its own statement together with every
//! statement queued at that moment and answers them. A lone client thus
//! pays one fsync and no thread hand-off per statement.
//!
//! When statements queued while the leader worked, clients are
//! concurrent: the lead goes to the stream's committer thread, which
//! commits group after group, each holding everything queued while the
//! previous one was fsynced, until the queue is empty. Handing the lead to
//! a waiting task instead cost a task wake-up plus giving its runtime
//! worker up for the fsync (`block_in_place`) per group, and left the
//! disk idle between groups for longer than an fsync takes.
//!
//! A waiting statement only waits for its outcome: a cancelled one is
//! still committed (it was queued) and its answer dropped.

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
    /// The parts went to a shard in turn (no partition key): the group
    /// may move them to another shard.
    pub any_shard: bool,
}

impl Request {
    pub(super) fn new(parts: Vec<(u32, RecordBatch)>, schema_version: u32) -> Request {
        Request {
            parts,
            schema_version,
            progress: None,
            bulk: None,
            any_shard: false,
        }
    }

    fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}

struct Queued {
    request: Request,
    outcome: oneshot::Sender<Result<AppendAck>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    /// A leader (a task or the committer thread) is committing.
    leading: bool,
    /// The committer thread holds the lead.
    thread_leads: bool,
    /// The committer thread is running (started on first need).
    thread_started: bool,
    /// Appends are refused (`close`).
    closed: bool,
    /// The committer thread ends once it holds no lead (the log is gone).
    exit: bool,
}

/// What the leaders share: the queue and the means to write a group.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the lead ends (for `close`).
    idle: Condvar,
    /// Signalled when the committer thread is handed the lead or must exit.
    work: Condvar,
    shards: Vec<Arc<Shard>>,
    helpers: SyncHelpers,
    segment_size_bytes: u64,
    /// Only the leader takes ids; the lock is never contended.
    unit_ids: Mutex<UnitIds>,
    /// Why appends are refused (a failed fsync), if they are.
    stopped: Arc<Mutex<Option<String>>>,
}

/// The group commit of one stream's log.
pub(super) struct Committer {
    shared: Arc<Shared>,
    /// Bounds the statements in flight (`append_queue_depth`).
    slots: Semaphore,
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
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                idle: Condvar::new(),
                work: Condvar::new(),
                helpers: SyncHelpers::start(&shards)?,
                shards,
                segment_size_bytes,
                unit_ids: Mutex::new(UnitIds::after(last_unit_id)),
                stopped,
            }),
            slots: Semaphore::new(queue_depth.clamp(1, Semaphore::MAX_PERMITS)),
        })
    }

    /// Stores `request`, resolving once it is durable (or failed).
    pub(super) async fn append(&self, request: Request) -> Result<AppendAck> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let outcome = {
            let mut queue = self.shared.queue()?;
            if queue.closed {
                return Err(Error::ShuttingDown);
            }
            if queue.leading {
                let (tx, rx) = oneshot::channel();
                queue.waiting.push_back(Queued {
                    request,
                    outcome: tx,
                });
                rx
            } else {
                queue.leading = true;
                drop(queue);
                return self.lead(request);
            }
        };
        outcome.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Commits `own` with the statements queued now and answers them;
    /// statements queued meanwhile go to the committer thread. Returns
    /// `own`'s outcome. Never awaits: a lead cannot be cancelled halfway.
    fn lead(&self, own: Request) -> Result<AppendAck> {
        let outcome = self.shared.commit_with_queued(own, true);
        // A poisoned queue fails every later append; this one's outcome
        // is known and stands.
        let Ok(mut queue) = self.shared.queue() else {
            return outcome;
        };
        if queue.waiting.is_empty() {
            queue.leading = false;
            self.shared.lead_ended(&queue);
        } else if self.committer_thread(&mut queue) {
            queue.thread_leads = true;
            self.shared.work.notify_one();
        } else {
            // No thread to hand the lead to: commit the rest here.
            drop(queue);
            blocking(|| self.shared.drain());
        }
        outcome
    }

    /// Whether the committer thread runs, starting it if it does not yet.
    fn committer_thread(&self, queue: &mut Queue) -> bool {
        if queue.thread_started {
            return true;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-commit".into())
            .spawn(move || shared.run_thread());
        match spawned {
            Ok(_) => queue.thread_started = true,
            Err(e) => tracing::warn!(error = %e, "could not start a log committer thread"),
        }
        queue.thread_started
    }

    /// Refuses new appends and waits for the statements already queued to
    /// be committed (bounded by [`CLOSE_WAIT`]).
    pub(super) fn close(&self) {
        let Ok(mut queue) = self.shared.queue.lock() else {
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
            queue = match self.shared.idle.wait_timeout(queue, left) {
                Ok((queue, _)) => queue,
                Err(_) => return,
            };
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.exit = true;
            self.shared.work.notify_all();
        }
    }
}

impl Shared {
    fn queue(&self) -> Result<MutexGuard<'_, Queue>> {
        self.queue
            .lock()
            .map_err(|_| Error::Internal("log queue lock poisoned".into()))
    }

    /// Wakes `close`, the only waiter for the end of a lead. It sets
    /// `closed` under the lock before it waits, so without it nobody
    /// waits (and a lone client's statement saves a futex call).
    fn lead_ended(&self, queue: &Queue) {
        if queue.closed {
            self.idle.notify_all();
        }
    }

    /// The committer thread: waits for the lead, commits until the queue
    /// is empty, and again, until the log is gone.
    fn run_thread(&self) {
        loop {
            {
                let Ok(mut queue) = self.queue.lock() else {
                    return;
                };
                while !queue.thread_leads {
                    if queue.exit {
                        return;
                    }
                    queue = match self.work.wait(queue) {
                        Ok(queue) => queue,
                        Err(_) => return,
                    };
                }
            }
            self.drain();
        }
    }

    /// Commits queued groups until the queue is empty, then ends the
    /// lead. Runs on a thread that may block (the committer thread, or a
    /// task that gave its worker up).
    fn drain(&self) {
        loop {
            let first = {
                let mut queue = match self.queue() {
                    Ok(queue) => queue,
                    Err(e) => {
                        tracing::error!(error = %e, "log commit queue unusable");
                        return;
                    }
                };
                match queue.waiting.pop_front() {
                    Some(first) => first,
                    None => {
                        queue.leading = false;
                        queue.thread_leads = false;
                        self.lead_ended(&queue);
                        return;
                    }
                }
            };
            let result = self.commit_with_queued(first.request, false);
            // A cancelled statement's answer has no one to go to.
            let _ = first.outcome.send(result);
        }
    }

    /// Commits `first` and the statements queued behind it (a bulk alone),
    /// answers the queued ones and returns `first`'s outcome. A task that
    /// leads (`on_task`) gives its runtime worker up for a group that is
    /// large or of several statements.
    fn commit_with_queued(&self, first: Request, on_task: bool) -> Result<AppendAck> {
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
                    replies.push(next.outcome);
                }
            }
        }
        // A lone small statement is committed right on the task's thread:
        // moving the runtime's tasks off it would cost more than its fsync.
        let alone = group.len() == 1 && group[0].bulk.is_none();
        let heavy = !alone || group_bytes >= INLINE_GROUP_MAX_BYTES;
        let mut results = if heavy && on_task {
            blocking(|| self.commit(group))
        } else {
            self.commit(group)
        }
        .into_iter();
        let own = results
            .next()
            .unwrap_or_else(|| Err(Error::Internal("a log commit lost a statement".into())));
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
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
        gather_unkeyed(&mut group);
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
}

/// Moves the rows of a group's statements that went to a shard in turn
/// (a stream without partition key) to the shard of the first of them.
/// Concurrent single-row INSERTs otherwise land on as many shards as
/// statements, and the group pays a write and a device write-back per
/// shard; gathered, it is one write and one fsync. The first statement's
/// shard still rotates, so groups spread over the shards.
pub(super) fn gather_unkeyed(group: &mut [Request]) {
    let mut movable = group.iter_mut().filter(|r| r.any_shard);
    let Some(target) = movable
        .next()
        .and_then(|first| first.parts.first().map(|(shard, _)| *shard))
    else {
        return;
    };
    for request in movable {
        for (shard, _) in &mut request.parts {
            *shard = target;
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
