//! Continuous query throughput and latency: a filter + projection pipeline
//! (drops 3 of 10 columns, keeps ~90% of rows) over clickstream-shaped rows.
//!
//! `cargo bench --bench pipeline` (release `sluice`; `SLUICE_BENCH_ROWS`,
//! default 1 000 000, sets the backlog for the throughput run). Prints:
//! - backlog throughput: records/s the pipeline drains, per shard task (one
//!   task per shard, so per core while shards ≤ cores);
//! - latency from INSERT acknowledgement to visibility in the derived
//!   stream, p50/p99, at 1k, 10k and 100k rows/s offered.

mod common;

use std::time::{Duration, Instant};

use common::{connect, start_sluice};
use tokio_postgres::Client;

const RAW: &str =
    "(event_time TIMESTAMP NOT NULL, user_id BIGINT, session_id BIGINT, email TEXT, ip TEXT, \
                   url TEXT, referrer TEXT, user_agent TEXT, status INT, bytes BIGINT)";
const CLEAN: &str =
    "SELECT event_time, user_id, session_id, lower(url) AS url, referrer, status, bytes \
                     FROM raw WHERE status <> 404";

fn rows_sql(from: u64, n: u64, with_404: bool) -> String {
    let values: Vec<String> = (from..from + n)
        .map(|i| {
            let status = if with_404 && i % 10 == 0 { 404 } else { 200 };
            format!(
                "('2026-11-25 13:{:02}:{:02}', {}, {}, 'user{}@example.com', '10.0.{}.{}', '/Products/{}', 'https://example.com/r/{}', 'Mozilla/5.0 (X11; Linux x86_64)', {status}, {})",
                (i / 60) % 60, i % 60, i % 100_000, i / 10, i % 1000, i % 256, (i / 256) % 256, i % 500, i % 37, 500 + i % 1500
            )
        })
        .collect();
    format!("INSERT INTO raw VALUES {}", values.join(", "))
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn throughput(shards: u32, rows: u64) -> f64 {
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM raw {RAW} WITH (shards = {shards}, partition_key = 'user_id')"
        ))
        .await
        .expect("create raw");
    let per_stmt = 1000u64;
    let writers = 4u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let conninfo = sluice.conninfo.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&conninfo).await;
            let mut from = w * per_stmt;
            while from < rows {
                client
                    .batch_execute(&rows_sql(from, per_stmt.min(rows - from), true))
                    .await
                    .expect("load");
                from += writers * per_stmt;
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
    let started = Instant::now();
    client
        .batch_execute(&format!("CREATE STREAM clean AS {CLEAN}"))
        .await
        .expect("create clean");
    loop {
        let lag = scalar(
            &client,
            "SELECT lag_records FROM sluice.pipelines WHERE name = 'clean'",
        )
        .await;
        if lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let out = scalar(
        &client,
        "SELECT records FROM sluice.streams WHERE name = 'clean'",
    )
    .await;
    assert_eq!(
        out as u64,
        rows - rows.div_ceil(10),
        "90% of rows pass the filter"
    );
    rows as f64 / elapsed
}

async fn latency(rate_rows_per_sec: u64, seconds: u64) -> (f64, f64) {
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM raw {RAW}; CREATE STREAM clean AS {CLEAN}"
        ))
        .await
        .expect("setup");
    let tick = Duration::from_millis(10);
    let per_tick = (rate_rows_per_sec / 100).max(1);
    let writer_conninfo = sluice.conninfo.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let writer = tokio::spawn(async move {
        let client = connect(&writer_conninfo).await;
        let mut sent = 0u64;
        let mut next = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            client
                .batch_execute(&rows_sql(sent, per_tick, false))
                .await
                .expect("insert");
            sent += per_tick;
            let _ = tx.send((sent, Instant::now()));
            next += tick;
            tokio::time::sleep_until(next.into()).await;
        }
    });
    // Watch the derived stream's record count; each acknowledged statement
    // is visible once the count reaches the rows sent up to it.
    let mut pending: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut latencies = Vec::new();
    loop {
        while let Ok(item) = rx.try_recv() {
            pending.push_back(item);
        }
        if writer.is_finished() && pending.is_empty() && rx.is_empty() {
            break;
        }
        let visible = scalar(
            &client,
            "SELECT records FROM sluice.streams WHERE name = 'clean'",
        )
        .await as u64;
        let now = Instant::now();
        while let Some(&(rows, acked)) = pending.front() {
            if rows > visible {
                break;
            }
            latencies.push(now.saturating_duration_since(acked));
            pending.pop_front();
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    (pct(0.5), pct(0.99))
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("| shards (tasks) | backlog rows | records/s | records/s per task |");
    println!("|---:|---:|---:|---:|");
    for shards in [1u32, 2] {
        let r = throughput(shards, rows).await;
        println!("| {shards} | {rows} | {r:.0} | {:.0} |", r / shards as f64);
    }
    println!();
    println!("| offered rows/s | p50 ms (ack → visible) | p99 ms |");
    println!("|---:|---:|---:|");
    for rate in [1_000u64, 10_000, 100_000] {
        let (p50, p99) = latency(rate, seconds).await;
        println!("| {rate} | {p50:.2} | {p99:.2} |");
    }
}
