//! PostgreSQL sinks (`location = 'postgresql://user@host:port/db'`,
//! `table = '…'`): one task per source shard batches records (by
//! `batch_rows`, `batch_bytes`, `batch_interval`) and writes each batch in
//! one transaction on the target: `COPY … FROM STDIN (FORMAT binary)` and
//! the shard's next offset in the target's `sluice_sink_offsets` table.
//! The offset row is the truth: after a crash, a lost connection or a
//! restart of either side the task reads it back and goes on from there,
//! so every record is in the target exactly once. The offset update is
//! guarded by the value it replaces, so even a stale writer (a connection
//! that outlived its task) cannot deliver a batch twice.
//!
//! While the database is down the task retries with backoff and shows
//! `last_error`; the source keeps the records. Rows the target refuses
//! (a value too long for a `varchar(n)`, a constraint) are found by
//! halving the batch; each goes to `sluice.errors` (stage `delivery`) and
//! the rest are delivered.

mod copy;
mod target;
mod tls;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::Schema;
use futures::SinkExt;
use tokio::sync::mpsc;

use super::core::{json_records, FlushRequest, SinkCore};
use crate::catalog::{EndpointDef, SinkDef, SinkProgress};
use crate::error::{Error, Result};
use crate::runtime::consumer::{Input, ShardConsumer, Stepped};
use crate::runtime::dead_letters::{self, DeadLetter};
pub use target::Target;
use target::{is_data_error, Plan};

/// Rows encoded per COPY data message: bounds the encode buffer while a
/// large batch streams to the target.
const COPY_CHUNK_ROWS: usize = 4_096;
/// Room reserved for the first chunk of a batch.
const FIRST_CHUNK_BYTES: usize = 1 << 20;

/// Checks a new sink's target at CREATE: connects, matches the columns
/// and creates the offsets table. An unreachable database is an error
/// (08001) only with `validate`; otherwise the sink starts and retries.
pub async fn prepare(def: &SinkDef, source: &Schema, validate: bool) -> Result<()> {
    let target = Target::new(def)?;
    match target.connect().await {
        Ok(client) => {
            target.plan(&client, source, &def.source, true).await?;
            Ok(())
        }
        Err(e) if validate => Err(e),
        Err(e) => {
            tracing::warn!(sink = %def.name, error = %e, "PostgreSQL target not reachable at CREATE; the sink will retry");
            Ok(())
        }
    }
}

struct Connected {
    client: tokio_postgres::Client,
    plan: Plan,
    planned_at: Instant,
}

/// How often a connected sink matches the columns again, so a column the
/// target gains (after the stream gained it) is delivered from then on.
const PLAN_REFRESH: Duration = Duration::from_secs(10);

pub(super) struct PostgresWorker {
    core: Arc<SinkCore>,
    target: Arc<Target>,
    batching: EndpointDef,
    shard: u32,
    conn: Option<Connected>,
    /// Next source offset the target holds.
    committed: u64,
    /// Next source offset to read.
    read: u64,
    /// Records read and not yet delivered, from offset `committed` on.
    pending: Vec<RecordBatch>,
    pending_rows: u64,
    pending_bytes: u64,
    oldest: Option<Instant>,
    flushes: mpsc::Receiver<FlushRequest>,
    waiting: Vec<FlushRequest>,
}

/// How one transaction on the target ended.
enum Outcome {
    Committed,
    /// The target refused a row of it; nothing was written.
    Refused(String),
}

impl PostgresWorker {
    pub fn new(
        core: Arc<SinkCore>,
        target: Arc<Target>,
        shard: u32,
        committed: SinkProgress,
        flushes: mpsc::Receiver<FlushRequest>,
    ) -> Result<PostgresWorker> {
        let batching =
            core.def.endpoint.clone().ok_or_else(|| {
                Error::Internal("a PostgreSQL sink without batching settings".into())
            })?;
        Ok(PostgresWorker {
            core,
            target,
            batching,
            shard,
            conn: None,
            committed: committed.next,
            read: committed.next,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            oldest: None,
            flushes,
            waiting: Vec::new(),
        })
    }

    fn due(&self) -> bool {
        let interval = Duration::from_millis(self.batching.batch_interval_ms);
        self.pending_rows >= u64::from(self.batching.batch_rows)
            || self.pending_bytes >= self.batching.batch_bytes
            || self.oldest.is_some_and(|t| t.elapsed() >= interval)
            || self.waiting.iter().any(|f| f.offset <= self.read)
    }

    /// Connects, checks the table and takes the target's offset for this
    /// shard as where delivery stands (it is ahead of sluice's catalog
    /// after a crash between the target's commit and the catalog's).
    async fn connect(&mut self) -> Result<()> {
        let client = self.target.connect().await?;
        let plan = self.plan(&client).await?;
        let offsets = self.target.offsets(&client, &plan).await?;
        self.conn = Some(Connected {
            client,
            plan,
            planned_at: Instant::now(),
        });
        if let Some(&next) = offsets.get(&self.shard) {
            if next != self.committed {
                tracing::info!(sink = %self.core.def.name, shard = self.shard, from = self.committed, to = next, "taking the target's offset");
                self.reset_to(next);
                self.core.commit_progress(self.shard, next).await?;
            }
        }
        Ok(())
    }

    /// The target's columns matched to the stream's; the columns left out
    /// are logged whenever they change.
    async fn plan(&self, client: &tokio_postgres::Client) -> Result<Plan> {
        let plan = self
            .target
            .plan(
                client,
                &self.core.source.schema,
                &self.core.def.source,
                false,
            )
            .await?;
        let before = self.conn.as_ref().map(|c| c.plan.skipped.as_slice());
        if !plan.skipped.is_empty() && before != Some(plan.skipped.as_slice()) {
            tracing::warn!(
                sink = %self.core.def.name,
                columns = %plan.skipped.join(", "),
                target = %self.target.location(),
                "stream columns the target table lacks are not delivered; add them to the table and they are delivered from then on"
            );
        }
        Ok(plan)
    }

    /// Matches the columns again when the plan is older than
    /// [`PLAN_REFRESH`].
    async fn refresh_plan(&mut self) -> Result<()> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        if conn.planned_at.elapsed() < PLAN_REFRESH {
            return Ok(());
        }
        let plan = self.plan(&conn.client).await?;
        if let Some(conn) = &mut self.conn {
            conn.plan = plan;
            conn.planned_at = Instant::now();
        }
        Ok(())
    }

    fn reset_to(&mut self, next: u64) {
        self.committed = next;
        self.read = next;
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.oldest = None;
    }

    /// Delivers everything pending, halving around rows the target refuses.
    async fn deliver(&mut self) -> Result<()> {
        self.refresh_plan().await?;
        let schema = self.core.source.schema.clone();
        let batch = match self.pending.len() {
            1 => self.pending[0].clone(),
            _ => concat_batches(&schema, &self.pending)?,
        };
        let base = self.committed;
        let mut todo = vec![(0usize, batch.num_rows())];
        while let Some((start, len)) = todo.pop() {
            let from = base + start as u64;
            let to = from + len as u64;
            match self
                .transaction(&batch, start..start + len, from..to)
                .await?
            {
                Outcome::Committed => {}
                Outcome::Refused(why) if len > 1 => {
                    tracing::debug!(sink = %self.core.def.name, rows = len, error = %why, "target refused a row; halving the batch");
                    todo.push((start + len / 2, len - len / 2));
                    todo.push((start, len / 2));
                    continue;
                }
                Outcome::Refused(why) => {
                    self.dead_letter(&batch.slice(start, 1), why).await?;
                    // The refused row is done with: move the offset past it.
                    self.advance(&batch, from..to).await?;
                    continue;
                }
            }
            self.committed = to;
            self.core.commit_progress(self.shard, to).await?;
        }
        // Whatever was read past the rows (an empty range) is done too.
        if self.read > self.committed {
            self.advance(&batch, self.committed..self.read).await?;
        }
        self.reset_to(self.committed);
        Ok(())
    }

    /// Moves the shard's offset over `offsets` without writing rows.
    async fn advance(&mut self, batch: &RecordBatch, offsets: Range<u64>) -> Result<()> {
        let to = offsets.end;
        if let Outcome::Refused(why) = self.transaction(batch, 0..0, offsets).await? {
            return Err(Error::Storage(why));
        }
        self.committed = to;
        self.core.commit_progress(self.shard, to).await
    }

    /// One transaction within `request_timeout`: the `rows` of `batch` by
    /// COPY, and the shard's offset moved over `offsets`.
    async fn transaction(
        &mut self,
        batch: &RecordBatch,
        rows: Range<usize>,
        offsets: Range<u64>,
    ) -> Result<Outcome> {
        let timeout = Duration::from_millis(self.batching.request_timeout_ms);
        match tokio::time::timeout(timeout, self.copy_and_commit(batch, rows, offsets)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::ConnectionFailure(format!(
                "{}: a batch took longer than request_timeout ({} ms)",
                self.target.location(),
                self.batching.request_timeout_ms
            ))),
        }
    }

    async fn copy_and_commit(
        &mut self,
        batch: &RecordBatch,
        rows: Range<usize>,
        offsets: Range<u64>,
    ) -> Result<Outcome> {
        let target = self.target.clone();
        let (key, shard) = (target.key.clone(), self.shard as i32);
        let (from_i64, to_i64) = (offset_i64(offsets.start)?, offset_i64(offsets.end)?);
        let (start, len) = (rows.start, rows.len());
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Internal("delivering without a connection".into()))?;
        let failed = |e: tokio_postgres::Error| target.query_error(&e);
        let tx = conn.client.transaction().await.map_err(failed)?;
        if len > 0 {
            let copy_in = tx
                .copy_in::<_, bytes::Bytes>(&conn.plan.copy)
                .await
                .map_err(failed)?;
            futures::pin_mut!(copy_in);
            let mut at = start;
            // Each chunk is encoded into room reserved up front (the last
            // chunk's size), not grown by doubling and copying.
            let mut chunk_bytes = FIRST_CHUNK_BYTES;
            let mut buf = BytesMut::new();
            while at < start + len {
                let n = COPY_CHUNK_ROWS.min(start + len - at);
                buf.reserve(chunk_bytes + chunk_bytes / 8);
                copy::encode_rows(batch.columns(), &conn.plan.columns, at, n, &mut buf)?;
                at += n;
                if at == start + len {
                    copy::finish(&mut buf);
                }
                chunk_bytes = buf.len();
                if let Err(e) = copy_in.send(buf.split().freeze()).await {
                    return refused_or(e, &target);
                }
            }
            if let Err(e) = copy_in.as_mut().finish().await {
                return refused_or(e, &target);
            }
        }
        let updated = tx
            .execute(
                &format!(
                    "INSERT INTO {offsets} AS o (sink, shard, next_offset) VALUES ($1, $2, $3)
                     ON CONFLICT (sink, shard) DO UPDATE
                       SET next_offset = EXCLUDED.next_offset, updated_at = now()
                       WHERE o.next_offset = $4",
                    offsets = conn.plan.offsets
                ),
                &[&key, &shard, &to_i64, &from_i64],
            )
            .await
            .map_err(failed)?;
        if updated == 0 {
            // Someone else moved this shard's offset: take theirs.
            drop(tx);
            self.conn = None;
            return Err(Error::Storage(format!(
                "{}: the offset of shard {shard} moved under this sink (another writer?); reading it again",
                target.location()
            )));
        }
        crate::fail::point("sink.postgres.before_commit");
        tx.commit().await.map_err(failed)?;
        crate::fail::point("sink.postgres.after_commit");
        Ok(Outcome::Committed)
    }

    async fn dead_letter(&self, row: &RecordBatch, why: String) -> Result<()> {
        let letters: Vec<DeadLetter> = json_records(row)?
            .into_iter()
            .map(|raw| DeadLetter {
                stream: Some(self.core.def.source.clone()),
                pipeline: Some(self.core.def.name.clone()),
                stage: "delivery",
                raw: Some(raw),
                error: Error::Storage(format!("refused by the target: {why}")),
            })
            .collect();
        dead_letters::record(&self.core.errors, &letters).await?;
        self.core
            .stats
            .dead_letters
            .fetch_add(letters.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// A COPY that failed: refused rows (the batch is halved), or an error.
fn refused_or(e: tokio_postgres::Error, target: &Target) -> Result<Outcome> {
    if is_data_error(&e) {
        Ok(Outcome::Refused(match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => e.to_string(),
        }))
    } else {
        Err(target.query_error(&e))
    }
}

fn offset_i64(offset: u64) -> Result<i64> {
    i64::try_from(offset).map_err(|_| Error::Internal(format!("offset {offset} beyond bigint")))
}

#[async_trait]
impl ShardConsumer for PostgresWorker {
    fn position(&self) -> u64 {
        self.read
    }

    async fn step(&mut self, input: Option<Input>) -> Result<Stepped> {
        if self.conn.is_none() {
            self.connect().await?;
            if input.as_ref().is_some_and(|i| i.offset != self.read) {
                // The target's offset moved us: read again from there.
                return Ok(Stepped {
                    more: true,
                    healthy: true,
                    hold: Some(self.committed),
                });
            }
        }
        let read_any = input.is_some();
        if let Some(input) = input {
            self.pending_rows += input.batch.num_rows() as u64;
            self.pending_bytes += input.batch.get_array_memory_size() as u64;
            self.pending.push(input.batch);
            self.oldest.get_or_insert_with(Instant::now);
            self.read = input.end;
        }
        let mut sent = false;
        if self.read > self.committed && (self.due() || self.pending_rows == 0) {
            self.deliver().await?;
            sent = true;
        }
        FlushRequest::answer_covered(&mut self.waiting, self.committed);
        Ok(Stepped {
            // Keep reading while under a batch; a full batch was sent above.
            more: read_any || sent,
            healthy: true,
            hold: Some(self.committed),
        })
    }

    async fn failed(&mut self, error: &Error) {
        // A flush asked for while the destination fails gets the failure
        // now rather than waiting for the destination to come back.
        while let Ok(f) = self.flushes.try_recv() {
            self.waiting.push(f);
        }
        for f in self.waiting.drain(..) {
            let _ = f.done.send(Err(error.to_string()));
        }
        // A new connection reads the target's offset again; what was in
        // flight on this one is rolled back by the target.
        self.conn = None;
        self.reset_to(self.committed);
    }

    async fn wake(&mut self) -> bool {
        let deadline = self.oldest.map(|t| {
            tokio::time::Instant::from_std(
                t + Duration::from_millis(self.batching.batch_interval_ms),
            )
        });
        tokio::select! {
            request = self.flushes.recv() => {
                FlushRequest::arrived(request, self.committed, &mut self.waiting)
            }
            _ = super::worker::sleep_until(deadline) => true,
        }
    }
}
