//! Delivery to Parquet and ad hoc queries on what was delivered.
//!
//! `cargo bench --bench delivery` (release `sluice`; `SLUICE_BENCH_ROWS`,
//! default 1 000 000 clickstream rows over one day). Prints:
//! - end to end: rows/s from the start of a COPY to the last row committed
//!   in Parquet, with the files and bytes it produced;
//! - freshness: acknowledged INSERT → visible in the sink's table, p50/p99,
//!   at `rollover_interval = '1 s'` and 10k rows/s offered;
//! - the same four ad hoc queries through sluice over pgwire and through
//!   DuckDB and DataFusion (Python, in process) on the same files, cold and
//!   median of warm runs, with ratios.

mod common;

use std::time::{Duration, Instant};

use common::{connect, start_sluice};
use futures::SinkExt;
use tokio_postgres::Client;

const WARM_RUNS: usize = 5;

const QUERIES: [(&str, &str); 4] = [
    (
        "count_one_hour",
        "SELECT count(*) FROM lake WHERE dt = '2026-11-25' AND hour = 12",
    ),
    (
        "top10_urls",
        "SELECT url, count(*) AS c, avg(latency_ms) AS avg_latency FROM lake GROUP BY url ORDER BY c DESC, url LIMIT 10",
    ),
    (
        "distinct_users",
        "SELECT count(DISTINCT user_id) FROM lake WHERE status = 500 AND hour BETWEEN 8 AND 11",
    ),
    (
        "user_events",
        "SELECT event_time, url, status FROM lake WHERE user_id = 4242 ORDER BY event_time DESC LIMIT 100",
    ),
];

/// One clickstream row as CSV (~200 bytes), deterministic in `i`.
fn row(i: u64, rows: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let secs = i * 86_400 / rows.max(1);
    let user = next() % 100_000;
    let status = match next() % 100 {
        0..=89 => 200,
        90..=95 => 404,
        96..=98 => 500,
        _ => 302,
    };
    format!(
        "2026-11-25 {:02}:{:02}:{:02},{user},{},user{user}@example.com,10.{}.{}.{},/products/{},https://ref.example.com/{},{status},{},Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101\n",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        next() % 1_000_000,
        next() % 256,
        next() % 256,
        next() % 256,
        next() % 200,
        next() % 50,
        5 + next() % 2000
    )
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn wait_committed(client: &Client, rows: i64) {
    while scalar(client, "SELECT count(*) FROM lake").await < rows {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup(client: &Client, rollover: &str) {
    client
        .batch_execute(&format!(
            "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, session_id BIGINT, email TEXT, ip TEXT, \
               url TEXT, referrer TEXT, status INT, latency_ms INT, user_agent TEXT) \
             WITH (shards = 2, partition_key = 'user_id', event_time = 'event_time'); \
             CREATE SINK lake FROM clicks WITH (location = 'lake', time_partition = 'hour', rollover_interval = '{rollover}')"
        ))
        .await
        .expect("setup");
}

/// COPY of `rows` rows; returns rows/s until all are committed, files, bytes.
async fn end_to_end(client: &Client, rows: u64) -> (f64, i64, i64) {
    let started = Instant::now();
    let sink = client
        .copy_in("COPY clicks FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy");
    let mut sink = Box::pin(sink);
    let mut chunk = String::new();
    for i in 0..rows {
        chunk.push_str(&row(i, rows));
        if chunk.len() > 4 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .expect("copy data");
        }
    }
    sink.send(bytes::Bytes::from(chunk))
        .await
        .expect("copy data");
    sink.as_mut().finish().await.expect("copy done");
    client
        .batch_execute("FLUSH SINK lake")
        .await
        .expect("flush");
    wait_committed(client, rows as i64).await;
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let stats = client
        .query_one(
            "SELECT files, bytes FROM sluice.sinks WHERE name = 'lake'",
            &[],
        )
        .await
        .expect("sinks");
    (rate, stats.get(0), stats.get(1))
}

/// Ack → visible in `lake`, p50/p99 ms, at `rate` rows/s for `seconds`.
async fn freshness(conninfo: &str, rate: u64, seconds: u64) -> (f64, f64) {
    let client = connect(conninfo).await;
    let base = scalar(&client, "SELECT count(*) FROM lake").await as u64;
    let writer = connect(conninfo).await;
    let per_tick = (rate / 100).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let task = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut next = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let values: Vec<String> = (0..per_tick)
                .map(|k| {
                    format!(
                        "('2026-11-25 23:59:00', {}, 1, 'e', 'ip', '/fresh', 'r', 200, 1, 'ua')",
                        sent + k
                    )
                })
                .collect();
            writer
                .batch_execute(&format!("INSERT INTO clicks VALUES {}", values.join(", ")))
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
        let visible = scalar(&client, "SELECT count(*) FROM lake").await as u64 - base;
        let now = Instant::now();
        while let Some(&(rows, acked)) = pending.front() {
            if rows > visible {
                break;
            }
            latencies.push(now.saturating_duration_since(acked));
            pending.pop_front();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    (pct(0.5), pct(0.99))
}

/// (cold ms, median warm ms) of `sql` over pgwire.
async fn time_query(client: &Client, sql: &str) -> (f64, f64) {
    let run = async || {
        let started = Instant::now();
        client.simple_query(sql).await.expect(sql);
        started.elapsed().as_secs_f64() * 1e3
    };
    let cold = run().await;
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        warm.push(run().await);
    }
    warm.sort_by(f64::total_cmp);
    (cold, warm[warm.len() / 2])
}

fn peers(dir: &std::path::Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/lake_queries.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(WARM_RUNS.to_string())
        .output()
        .expect("python3");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("{e}: {}", String::from_utf8_lossy(&out.stderr)) })
    })
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    setup(&client, "1 s").await;
    let (rate, files, bytes) = end_to_end(&client, rows).await;
    println!("delivery of {rows} rows (COPY csv → committed Parquet, hourly partitions, 2 shards, 1 s rollover)");
    println!(
        "  end to end: {rate:.0} rows/s; {files} files, {:.1} MB, {:.2} MB/file",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / files.max(1) as f64
    );
    let (p50, p99) = freshness(&sluice.conninfo, 10_000, 10).await;
    println!("  freshness at 10k rows/s, 1 s rollover: p50 {p50:.0} ms, p99 {p99:.0} ms");

    let dir = sluice.data_dir().join("lake");
    let peer = peers(&dir);
    println!("ad hoc queries on the delivered files (ms; cold / median of {WARM_RUNS} warm)");
    println!(
        "  {:<16} {:>18} {:>18} {:>18} {:>10} {:>10}",
        "query", "sluice (pgwire)", "DuckDB", "DataFusion", "÷ DuckDB", "÷ DF"
    );
    for (name, sql) in QUERIES {
        let (cold, warm) = time_query(&client, sql).await;
        let peer_ms = |engine: &str| -> Option<(f64, f64)> {
            let q = peer.get(engine)?.get(name)?;
            Some((q.get("cold_ms")?.as_f64()?, q.get("warm_ms")?.as_f64()?))
        };
        let fmt = |v: Option<(f64, f64)>| {
            v.map_or("n/a".to_string(), |(c, w)| format!("{c:.1} / {w:.1}"))
        };
        let duck = peer_ms("duckdb");
        let df = peer_ms("datafusion");
        let ratio =
            |v: Option<(f64, f64)>| v.map_or("n/a".into(), |(_, w)| format!("{:.2}×", warm / w));
        println!(
            "  {:<16} {:>18} {:>18} {:>18} {:>10} {:>10}",
            name,
            format!("{cold:.1} / {warm:.1}"),
            fmt(duck),
            fmt(df),
            ratio(duck),
            ratio(df)
        );
    }
    if let Some(err) = peer.get("error") {
        println!("  peers failed: {err}");
    }
    for engine in ["duckdb", "datafusion"] {
        if let Some(missing) = peer.get(engine).and_then(|e| e.get("missing")) {
            println!("  {engine} not installed ({missing}); pip install {engine}");
        }
    }
}
