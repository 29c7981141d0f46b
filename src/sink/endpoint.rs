//! HTTP endpoint sinks (`location = 'https://…'`, `format = 'firehose'`
//! or `'ndjson'`): one task per source shard batches rows as JSON records
//! (by `batch_rows`, `batch_bytes`, `batch_interval`) and POSTs each batch
//! until the endpoint accepts it, with exponential backoff and jitter up to
//! `retry_duration`; then the batch's records go to `sluice.errors` (stage
//! `delivery`, each with its JSON) and delivery moves on. The shard's
//! offset is committed only after a batch is accepted (or dead-lettered),
//! so delivery is at least once: a crash between the receiver's answer and
//! the commit sends that batch again, with the same Firehose request id.
//!
//! `format = 'firehose'` speaks Firehose's HTTP endpoint delivery protocol
//! 1.0: headers `X-Amz-Firehose-Protocol-Version`, `-Request-Id`,
//! `-Source-Arn`, `-Access-Key`; body `{"requestId", "timestamp",
//! "records": [{"data": base64}]}`; success only on 200 with the same
//! `requestId` in the answer. A 413 splits the batch in two (a record
//! alone that is still too large is dead-lettered).

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use tokio::sync::mpsc;

use super::core::{json_records, FlushRequest, SinkCore};
use crate::catalog::{EndpointDef, SinkFormat, SinkProgress};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::consumer::{set_error, Input, ShardConsumer, Stepped};
use crate::runtime::dead_letters::{self, DeadLetter};

/// First retry delay; it doubles (with jitter) up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(super) struct EndpointWorker {
    core: Arc<SinkCore>,
    def: EndpointDef,
    shard: u32,
    client: reqwest::Client,
    /// Next source offset not yet accepted (committed).
    committed: u64,
    /// Next source offset to read.
    read: u64,
    /// Records read and not yet sent, from offset `committed` on.
    pending: Vec<String>,
    pending_bytes: u64,
    oldest: Option<Instant>,
    flushes: mpsc::Receiver<FlushRequest>,
    waiting: Vec<FlushRequest>,
}

impl EndpointWorker {
    pub fn new(
        core: Arc<SinkCore>,
        shard: u32,
        committed: SinkProgress,
        flushes: mpsc::Receiver<FlushRequest>,
    ) -> Result<EndpointWorker> {
        let def = core
            .def
            .endpoint
            .clone()
            .ok_or_else(|| Error::Internal("an HTTP sink without endpoint settings".into()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(def.request_timeout_ms))
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        Ok(EndpointWorker {
            core,
            def,
            shard,
            client,
            committed: committed.next,
            read: committed.next,
            pending: Vec::new(),
            pending_bytes: 0,
            oldest: None,
            flushes,
            waiting: Vec::new(),
        })
    }

    fn full(&self) -> bool {
        self.pending.len() >= self.def.batch_rows as usize
            || self.pending_bytes >= self.def.batch_bytes
    }

    fn due(&self) -> bool {
        let interval = Duration::from_millis(self.def.batch_interval_ms);
        self.full()
            || self.oldest.is_some_and(|t| t.elapsed() >= interval)
            || self.waiting.iter().any(|f| f.offset <= self.read)
    }

    /// Sends the oldest batch and commits past it.
    async fn send_batch(&mut self) -> Result<()> {
        let take = self.pending.len().min(self.def.batch_rows as usize);
        let mut records: Vec<String> = Vec::with_capacity(take);
        let mut bytes = 0u64;
        for record in self.pending.iter().take(take) {
            if !records.is_empty() && bytes + record.len() as u64 > self.def.batch_bytes {
                break;
            }
            bytes += record.len() as u64;
            records.push(record.clone());
        }
        let failed = self.deliver(self.committed, &records).await;
        if !failed.is_empty() {
            self.dead_letter(failed).await?;
        }
        crate::fail::point("sink.endpoint.after_delivery");
        let sent = records.len();
        self.pending.drain(..sent);
        self.pending_bytes = self.pending.iter().map(|r| r.len() as u64).sum();
        if self.pending.is_empty() {
            self.oldest = None;
        }
        self.commit(self.committed + sent as u64).await
    }

    /// Delivers `records`, splitting on 413; returns those that could not
    /// be delivered within `retry_duration`, with the last error.
    /// `records` are the source's from offset `first` on.
    async fn deliver(&self, first: u64, records: &[String]) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        let mut todo: Vec<(u64, &[String])> = vec![(first, records)];
        while let Some((first, batch)) = todo.pop() {
            match self.post_with_retries(first, batch).await {
                Ok(()) => {}
                Err(Rejection::TooLarge) if batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    todo.push((first + a.len() as u64, b));
                    todo.push((first, a));
                }
                Err(rejection) => {
                    let why = rejection.to_string();
                    failed.extend(batch.iter().map(|r| (r.clone(), why.clone())));
                }
            }
        }
        failed
    }

    async fn post_with_retries(
        &self,
        first: u64,
        records: &[String],
    ) -> std::result::Result<(), Rejection> {
        let request_id = self.request_id(first, records.len());
        let started = Instant::now();
        let budget = Duration::from_millis(self.def.retry_duration_ms);
        let mut delay = MIN_BACKOFF;
        loop {
            let outcome = self.post(records, &request_id).await;
            match outcome {
                Ok(()) => {
                    set_error(&self.core.stats.last_error, None);
                    return Ok(());
                }
                Err(Rejection::TooLarge) => return Err(Rejection::TooLarge),
                Err(e) => {
                    let message = format!("{}: {e}", self.core.def.location);
                    tracing::warn!(sink = %self.core.def.name, error = %message, "delivery failed; retrying");
                    set_error(&self.core.stats.last_error, Some(message));
                    if started.elapsed() + delay > budget {
                        return Err(e);
                    }
                }
            }
            // Full jitter: a random wait up to the doubling delay, so many
            // shards retrying do not hit the endpoint in step.
            let jittered = delay.mul_f64(0.5 + 0.5 * jitter());
            tokio::time::sleep(jittered).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// The Firehose request id of the records `[first, first + count)` of
    /// this shard: the same on every retry and, because it follows from
    /// the records, when the same batch is sent again after a restart, so
    /// a receiver may deduplicate on it. A batch of other records (a
    /// different size after a restart) gets another id.
    fn request_id(&self, first: u64, count: usize) -> String {
        use sha2::Digest as _;
        let def = &self.core.def;
        let key = format!(
            "{}\0{}\0{}\0{first}\0{count}",
            def.name, def.created_at_ms, self.shard
        );
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // A version-8 (custom) UUID, as RFC 9562 allows for derived ids.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(bytes).to_string()
    }

    async fn post(
        &self,
        records: &[String],
        request_id: &str,
    ) -> std::result::Result<(), Rejection> {
        let firehose = self.core.def.format == SinkFormat::Firehose;
        let (body, content_type) = if firehose {
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = serde_json::json!({
                "requestId": request_id,
                "timestamp": now_ms(),
                "records": records.iter().map(|r| serde_json::json!({ "data": b64.encode(r) })).collect::<Vec<_>>(),
            });
            (body.to_string().into_bytes(), "application/json")
        } else {
            let mut body = records.join("\n").into_bytes();
            body.push(b'\n');
            (body, "application/x-ndjson")
        };
        let mut request = self
            .client
            .post(&self.core.def.location)
            .header("content-type", content_type);
        let body = if self.def.gzip {
            request = request.header("content-encoding", "gzip");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body)
                .and_then(|()| gz.finish())
                .map_err(|e| Rejection::Failed(format!("gzip: {e}")))?
        } else {
            body
        };
        if firehose {
            request = request
                .header("x-amz-firehose-protocol-version", "1.0")
                .header("x-amz-firehose-request-id", request_id)
                .header(
                    "x-amz-firehose-source-arn",
                    format!(
                        "arn:aws:firehose:us-east-1:000000000000:deliverystream/{}",
                        self.core.def.name
                    ),
                );
            if let Some(key) = &self.def.access_key {
                request = request.header("x-amz-firehose-access-key", key);
            }
        }
        let response = request.body(body).send().await.map_err(|e| {
            Rejection::Failed(if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.to_string()
            })
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(Rejection::TooLarge);
        }
        if firehose {
            // Firehose's rule: only a 200 whose body echoes the request id.
            let text = response.text().await.unwrap_or_default();
            let echoed = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("requestId")
                        .and_then(|r| r.as_str().map(str::to_string))
                });
            if status != reqwest::StatusCode::OK {
                return Err(Rejection::Failed(format!(
                    "HTTP {status}: {}",
                    snippet(&text)
                )));
            }
            if echoed.as_deref() != Some(request_id) {
                return Err(Rejection::Failed(format!(
                    "HTTP 200 without this request's requestId: {}",
                    snippet(&text)
                )));
            }
            return Ok(());
        }
        if status.is_success() {
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(Rejection::Failed(format!(
                "HTTP {status}: {}",
                snippet(&text)
            )))
        }
    }

    async fn dead_letter(&self, failed: Vec<(String, String)>) -> Result<()> {
        let letters: Vec<DeadLetter> = failed
            .into_iter()
            .map(|(raw, why)| DeadLetter {
                stream: Some(self.core.def.source.clone()),
                pipeline: Some(self.core.def.name.clone()),
                stage: "delivery",
                raw: Some(raw),
                error: Error::Storage(format!(
                    "not delivered to {} within retry_duration: {why}",
                    self.core.def.location
                )),
            })
            .collect();
        dead_letters::record(&self.core.errors, &letters).await?;
        self.core
            .stats
            .dead_letters
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn commit(&mut self, next: u64) -> Result<()> {
        self.core.commit_progress(self.shard, next).await?;
        self.committed = next;
        Ok(())
    }
}

#[derive(Debug)]
enum Rejection {
    /// 413: the batch is too large for the endpoint.
    TooLarge,
    Failed(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooLarge => {
                f.write_str("HTTP 413: the record is larger than the endpoint accepts")
            }
            Rejection::Failed(why) => f.write_str(why),
        }
    }
}

/// The start of an answer, for an error message.
fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// A number in [0, 1) that differs between calls (retry jitter).
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

#[async_trait]
impl ShardConsumer for EndpointWorker {
    fn position(&self) -> u64 {
        self.read
    }

    async fn step(&mut self, input: Option<Input>) -> Result<Stepped> {
        let read_any = input.is_some();
        if let Some(input) = input {
            let records = json_records(&input.batch)?;
            self.pending_bytes += records.iter().map(|r| r.len() as u64).sum::<u64>();
            self.pending.extend(records);
            self.oldest.get_or_insert_with(Instant::now);
            self.read = input.end;
        }
        let mut sent = false;
        while !self.pending.is_empty() && self.due() {
            self.send_batch().await?;
            sent = true;
        }
        if self.pending.is_empty() && self.read > self.committed {
            // Nothing left to send (an empty input range): move the offset.
            self.commit(self.read).await?;
        }
        let committed = self.committed;
        FlushRequest::answer_covered(&mut self.waiting, committed);
        Ok(Stepped {
            // Keep reading while under a batch; a full batch was sent above.
            more: read_any || sent,
            healthy: true,
            hold: Some(committed),
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
        self.pending.clear();
        self.pending_bytes = 0;
        self.oldest = None;
        self.read = self.committed;
    }

    async fn wake(&mut self) -> bool {
        let deadline = self.oldest.map(|t| {
            tokio::time::Instant::from_std(t + Duration::from_millis(self.def.batch_interval_ms))
        });
        tokio::select! {
            request = self.flushes.recv() => {
                FlushRequest::arrived(request, self.committed, &mut self.waiting)
            }
            _ = super::worker::sleep_until(deadline) => true,
        }
    }
}
