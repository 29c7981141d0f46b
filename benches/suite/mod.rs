//! The phases of the end-to-end benchmark (`benches/e2e.rs`): each
//! measures sluice and, where one exists, a peer on the same machine in the
//! same run, and returns rows for the one table the suite prints.

pub mod data;
pub mod delivery;
pub mod delta;
pub mod destinations;
pub mod evolution;
pub mod hostile;
pub mod ingest;
mod insert;
pub mod memory;
pub mod transform;

/// How big a run is: `--quick` is a smoke test of every phase.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
    /// Rows for COPY, the transform backlog and delivery.
    pub rows: u64,
    /// Length of each timed measurement.
    pub seconds: u64,
}

/// One line of the result table.
pub struct Row {
    pub phase: &'static str,
    pub what: String,
    pub sluice: String,
    pub peer: String,
    /// sluice ÷ peer, oriented so that > 1 means sluice is better.
    pub ratio: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

impl Row {
    pub fn new(phase: &'static str, what: impl Into<String>, sluice: impl Into<String>) -> Row {
        Row {
            phase,
            what: what.into(),
            sluice: sluice.into(),
            peer: String::new(),
            ratio: None,
            peak_rss_mb: None,
        }
    }

    pub fn peer(mut self, peer: impl Into<String>, ratio: Option<f64>) -> Row {
        self.peer = peer.into();
        self.ratio = ratio;
        self
    }

    pub fn rss(mut self, mb: f64) -> Row {
        self.peak_rss_mb = Some(mb);
        self
    }
}

/// p-th quantile of sorted durations, in ms.
pub fn quantile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Latency from INSERT acknowledgement to visibility, p50/p99 ms: one
/// writer sends `rate` rows/s (a statement every 10 ms, `insert(sent, n)`
/// builds it) for `seconds`; a reader polls `visible_sql` (a count that
/// grows by the rows made visible) and times each statement.
pub async fn ack_to_visible(
    conninfo: &str,
    rate: u64,
    seconds: u64,
    insert: impl Fn(u64, u64) -> String + Send + 'static,
    visible_sql: &str,
) -> (f64, f64) {
    use std::time::{Duration, Instant};
    let client = crate::common::connect(conninfo).await;
    let base = scalar(&client, visible_sql).await as u64;
    let writer = crate::common::connect(conninfo).await;
    let per_tick = (rate / 100).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let task = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut next = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            writer
                .batch_execute(&insert(sent, per_tick))
                .await
                .expect("insert");
            sent += per_tick;
            let _ = tx.send((sent, Instant::now()));
            next += Duration::from_millis(10);
            tokio::time::sleep_until(next.into()).await;
        }
    });
    let mut pending = std::collections::VecDeque::new();
    let mut latencies = Vec::new();
    loop {
        while let Ok(item) = rx.try_recv() {
            pending.push_back(item);
        }
        if task.is_finished() && pending.is_empty() && rx.is_empty() {
            break;
        }
        let visible = (scalar(&client, visible_sql).await as u64).saturating_sub(base);
        let now = Instant::now();
        while let Some(&(rows, acked)) = pending.front() {
            if rows > visible {
                break;
            }
            latencies.push(now.saturating_duration_since(acked));
            pending.pop_front();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort_unstable();
    (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.99))
}

/// Creates stream `name` of clickstream rows over `shards`, keyed by
/// `user_id`.
pub async fn create_clicks_stream(client: &tokio_postgres::Client, name: &str, shards: u32) {
    client
        .batch_execute(&format!(
            "CREATE STREAM {name} {} WITH (shards = {shards}, partition_key = 'user_id')",
            data::COLUMNS
        ))
        .await
        .expect("create stream");
}

/// Records/s of a new derived stream `clean AS select` draining a backlog
/// of `rows`: from its CREATE until its lag is 0.
pub async fn drain_rate(client: &tokio_postgres::Client, select: &str, rows: u64) -> f64 {
    let started = std::time::Instant::now();
    client
        .batch_execute(&format!("CREATE STREAM clean AS {select}"))
        .await
        .expect("create clean");
    let lag = "SELECT lag_records FROM sluice.pipelines WHERE name = 'clean'";
    while scalar(client, lag).await > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}
