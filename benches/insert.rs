//! INSERT throughput and latency over pgwire: sluice against PostgreSQL 15
//! (fsync = on, synchronous_commit = on) on the same machine, in one run.
//!
//! `cargo bench --bench insert` (release build of sluice; PostgreSQL from
//! `initdb`/`pg_ctl` on the PATH or under /usr/lib/postgresql/*/bin).
//! `SLUICE_BENCH_SECONDS` sets the length of each measurement (default 5).
//! Prints one markdown table: rows/s, p50/p99 statement latency, and the
//! sluice/PostgreSQL throughput ratio.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, start_postgres, start_sluice};

const CREATE_SQL: &str =
    "(event_time TIMESTAMP NOT NULL, user_id BIGINT, email TEXT, url TEXT, status INT)";

struct Measurement {
    rows_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn insert_sql(table: &str, rows: usize, salt: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                "('2026-11-25 13:00:{:02}', {}, 'user{}@example.com', '/page/{}', 200)",
                i % 60,
                salt * 1000 + i,
                i,
                i % 17
            )
        })
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}

async fn measure(
    conninfo: &str,
    table: &str,
    clients: usize,
    rows: usize,
    duration: Duration,
) -> Measurement {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let conninfo = conninfo.to_string();
        let sql = Arc::new(insert_sql(table, rows, c));
        tasks.push(tokio::spawn(async move {
            let client = connect(&conninfo).await;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                let n = client.execute(sql.as_str(), &[]).await.expect("insert");
                assert_eq!(n as usize, rows);
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    Measurement {
        rows_per_sec: (all.len() * rows) as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let sluice = start_sluice();
    let postgres = start_postgres(55432);
    connect(&sluice.conninfo)
        .await
        .batch_execute(&format!(
            "CREATE STREAM clicks {CREATE_SQL} WITH (shards = 4, partition_key = 'user_id')"
        ))
        .await
        .expect("create stream");
    connect(&postgres.conninfo)
        .await
        .batch_execute(&format!("CREATE TABLE clicks {CREATE_SQL}"))
        .await
        .expect("create table");

    println!("| rows/stmt | clients | sluice rows/s | p50 ms | p99 ms | PostgreSQL rows/s | p50 ms | p99 ms | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rows in [1usize, 100] {
        for clients in [1usize, 4, 16] {
            let s = measure(&sluice.conninfo, "clicks", clients, rows, duration).await;
            let p = measure(&postgres.conninfo, "clicks", clients, rows, duration).await;
            println!(
                "| {rows} | {clients} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1}× |",
                s.rows_per_sec,
                s.p50_ms,
                s.p99_ms,
                p.rows_per_sec,
                p.p50_ms,
                p.p99_ms,
                s.rows_per_sec / p.rows_per_sec
            );
        }
    }
}
