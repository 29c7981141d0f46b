//! Bulk ingest: COPY (csv) into sluice against PostgreSQL 15 COPY into a
//! logged and an unlogged table, in one run; HTTP NDJSON with 1 and 8
//! producers; Kinesis PutRecords (500 records a call) with 4 producers.
//!
//! `cargo bench --bench ingest` (`SLUICE_BENCH_ROWS`, default 500 000 rows
//! for COPY; `SLUICE_BENCH_SECONDS`, default 5, for HTTP and Kinesis).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::{connect, start_postgres, start_sluice};
use futures::SinkExt;

const COLUMNS: &str =
    "(event_time TIMESTAMP NOT NULL, user_id BIGINT, session_id BIGINT, email TEXT, ip TEXT, \
                       url TEXT, referrer TEXT, status INT, latency_ms INT, user_agent TEXT)";

fn csv_rows(rows: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows as usize * 200);
    for i in 0..rows {
        out.extend_from_slice(
            format!(
                "2026-11-25 13:{:02}:{:02},{},{},user{}@example.com,10.0.{}.{},/products/{},https://example.com/r/{},{},{},Mozilla/5.0 (X11; Linux x86_64) Firefox/{}\n",
                (i / 60) % 60, i % 60, i % 100_000, i / 10, i % 100_000, i % 256, (i / 256) % 256, i % 200, i % 37,
                if i % 20 == 0 { 404 } else { 200 }, i % 900, 100 + i % 30
            )
            .as_bytes(),
        );
    }
    out
}

async fn copy_into(conninfo: &str, table: &str, data: &Bytes) -> f64 {
    let client = connect(conninfo).await;
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    let mut at = 0;
    while at < data.len() {
        let end = (at + 256 * 1024).min(data.len());
        sink.send(data.slice(at..end)).await.expect("copy data");
        at = end;
    }
    sink.finish().await.expect("copy done");
    started.elapsed().as_secs_f64()
}

fn ndjson(batch: u64, salt: u64) -> String {
    (0..batch)
        .map(|i| {
            format!(
                "{{\"event_time\":\"2026-11-25T13:00:{:02}\",\"user_id\":{},\"session_id\":{},\"email\":\"u{}@example.com\",\"url\":\"/p/{}\",\"status\":200,\"latency_ms\":{}}}\n",
                i % 60, salt * 100_000 + i, i / 10, i, i % 200, i % 900
            )
        })
        .collect()
}

async fn http_producers(http: &str, producers: u64, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let url = format!("http://{http}/v1/streams/clicks/records");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body = ndjson(1000, p);
            let mut rows = 0u64;
            while Instant::now() < deadline {
                let report: serde_json::Value = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(report["failed"], 0);
                rows += 1000;
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.expect("producer");
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

async fn kinesis_producers(http: &str, producers: u64, seconds: u64) -> f64 {
    let client = reqwest::Client::new();
    let call = |target: &str, body: serde_json::Value| {
        client
            .post(format!("http://{http}/"))
            .header("x-amz-target", format!("Kinesis_20131202.{target}"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_string())
            .send()
    };
    call(
        "CreateStream",
        serde_json::json!({"StreamName": "k", "ShardCount": 4}),
    )
    .await
    .expect("create");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let url = format!("http://{http}/");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let b64 = base64::engine::general_purpose::STANDARD;
            let records: Vec<serde_json::Value> = (0..500)
                .map(|i| serde_json::json!({
                    "Data": b64.encode(format!("{{\"user\":{i},\"producer\":{p},\"url\":\"/p/{}\",\"pad\":\"{}\"}}", i % 200, "x".repeat(120))),
                    "PartitionKey": format!("user-{i}"),
                }))
                .collect();
            let body = serde_json::json!({"StreamName": "k", "Records": records}).to_string();
            let mut rows = 0u64;
            while Instant::now() < deadline {
                let out: serde_json::Value = client
                    .post(&url)
                    .header("x-amz-target", "Kinesis_20131202.PutRecords")
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("put")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(out["FailedRecordCount"], 0);
                rows += 500;
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.expect("producer");
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let data = Bytes::from(csv_rows(rows));
    let mb = data.len() as f64 / 1e6;

    let sluice = start_sluice();
    connect(&sluice.conninfo)
        .await
        .batch_execute(&format!(
            "CREATE STREAM clicks {COLUMNS} WITH (shards = 4, partition_key = 'user_id')"
        ))
        .await
        .expect("create stream");
    let postgres = start_postgres(55433);
    connect(&postgres.conninfo)
        .await
        .batch_execute(&format!(
            "CREATE TABLE logged {COLUMNS}; CREATE UNLOGGED TABLE unlogged {COLUMNS}"
        ))
        .await
        .expect("create tables");

    let s = copy_into(&sluice.conninfo, "clicks", &data).await;
    let logged = copy_into(&postgres.conninfo, "logged", &data).await;
    let unlogged = copy_into(&postgres.conninfo, "unlogged", &data).await;
    println!("COPY csv, {rows} rows, {mb:.0} MB, one client:");
    println!();
    println!("| target | rows/s | MB/s | sluice ÷ target (rows/s) |");
    println!("|---|---:|---:|---:|");
    for (name, secs) in [
        ("sluice stream (4 shards)", s),
        ("PostgreSQL logged", logged),
        ("PostgreSQL unlogged", unlogged),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.2}× |",
            rows as f64 / secs,
            mb / secs,
            secs / s
        );
    }
    println!();
    println!("| HTTP NDJSON (1000 records/request) | rows/s |");
    println!("|---|---:|");
    for producers in [1u64, 8] {
        let r = http_producers(&sluice.http, producers, seconds).await;
        println!("| {producers} producer(s) | {r:.0} |");
    }
    let k = kinesis_producers(&sluice.http, 4, seconds).await;
    println!();
    println!("Kinesis PutRecords (500 records of ~200 bytes a call, 4 producers, 4 shards): {k:.0} records/s");
}
