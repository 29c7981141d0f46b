//! Ingest: multi-row and single-row INSERT with 1/4/16 clients, COPY csv,
//! HTTP NDJSON and Kinesis PutRecords into sluice; INSERT and COPY into
//! PostgreSQL logged and unlogged tables as the peer.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::SinkExt;

use super::data::{self, Click, Shape, COLUMNS};
use super::{create_clicks_stream, insert, Row, Scale};
use crate::common::{connect, Postgres, Sluice};

/// Seconds for one client to COPY `csv` into `table`.
pub(super) async fn copy(conninfo: &str, table: &str, csv: &Bytes) -> f64 {
    let client = connect(conninfo).await;
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    for at in (0..csv.len()).step_by(256 * 1024) {
        sink.send(csv.slice(at..(at + 256 * 1024).min(csv.len())))
            .await
            .expect("copy data");
    }
    sink.finish().await.expect("copy done");
    started.elapsed().as_secs_f64()
}

/// The median of `values` (sorted in place).
pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// (rows/s, MB/s) over producers that each return (rows, bytes) sent.
async fn rates(tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>, started: Instant) -> (f64, f64) {
    let (mut rows, mut bytes) = (0, 0);
    for t in tasks {
        let (r, b) = t.await.expect("producer");
        rows += r;
        bytes += b;
    }
    let secs = started.elapsed().as_secs_f64();
    (rows as f64 / secs, bytes as f64 / 1e6 / secs)
}

/// (rows/s, MB/s) of NDJSON POSTs of 1000 records from `producers`.
async fn http(addr: &str, producers: u64, shape: Shape, seconds: u64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let url = format!("http://{addr}/v1/streams/clicks/records");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body: String = (0..1000)
                .map(|i| Click::shaped(p * 1000 + i, 1_000_000, shape).json() + "\n")
                .collect();
            let mut rows = 0u64;
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                bytes += body.len() as u64;
                post_ndjson(&client, &url, body.clone()).await;
                rows += 1000;
            }
            (rows, bytes)
        }));
    }
    rates(tasks, started).await
}

/// POSTs NDJSON `body` to a stream's records URL; every record must be
/// stored.
pub(super) async fn post_ndjson(client: &reqwest::Client, url: &str, body: String) {
    let report: serde_json::Value = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(report["failed"], 0, "{report}");
}

/// An AWS-style put of 500 records per call into stream `k`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Put {
    KinesisPutRecords,
    FirehosePutRecordBatch,
}

/// Creates raw stream `k` (4 shards) with Kinesis's CreateStream.
pub(super) async fn create_raw_stream(addr: &str) {
    reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("x-amz-target", "Kinesis_20131202.CreateStream")
        .header("content-type", "application/x-amz-json-1.1")
        .body(serde_json::json!({"StreamName": "k", "ShardCount": 4}).to_string())
        .send()
        .await
        .expect("create");
}

/// (records/s, MB/s of record data) of `put` calls of 500 records into
/// stream `k` from `producers` for `seconds`.
pub(super) async fn aws_puts(
    addr: &str,
    put: Put,
    (producers, shape): (u64, Shape),
    seconds: u64,
) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let url = format!("http://{addr}/");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let b64 = base64::engine::general_purpose::STANDARD;
            let clicks: Vec<Click> = (0..500)
                .map(|i| Click::shaped(p * 500 + i, 1_000_000, shape))
                .collect();
            let (target, body, failed) = match put {
                Put::KinesisPutRecords => {
                    let records: Vec<serde_json::Value> = clicks
                        .iter()
                        .map(|c| serde_json::json!({"Data": b64.encode(c.json()), "PartitionKey": c.user.to_string()}))
                        .collect();
                    (
                        "Kinesis_20131202.PutRecords",
                        serde_json::json!({"StreamName": "k", "Records": records}),
                        "FailedRecordCount",
                    )
                }
                Put::FirehosePutRecordBatch => {
                    let records: Vec<serde_json::Value> = clicks
                        .iter()
                        .map(|c| serde_json::json!({"Data": b64.encode(c.json())}))
                        .collect();
                    (
                        "Firehose_20150804.PutRecordBatch",
                        serde_json::json!({"DeliveryStreamName": "k", "Records": records}),
                        "FailedPutCount",
                    )
                }
            };
            let body = body.to_string();
            let data_bytes: u64 = clicks.iter().map(|c| c.json().len() as u64).sum();
            let mut rows = 0u64;
            while Instant::now() < deadline {
                let out: serde_json::Value = client
                    .post(&url)
                    .header("x-amz-target", target)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("put")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(out[failed], 0, "{out}");
                rows += 500;
            }
            (rows, rows / 500 * data_bytes)
        }));
    }
    rates(tasks, started).await
}

/// One COPY of `scale.rows` rows of `shape` into sluice and PostgreSQL.
async fn copy_row(scale: Scale, sluice: &Sluice, postgres: Option<&Postgres>, shape: Shape) -> Row {
    let csv = data::csv_shaped(scale.rows, shape);
    let mb = csv.len() as f64 / 1e6;
    // One COPY varies by up to 2x here (the disk's write-back throttling):
    // rounds alternate sluice and PostgreSQL, and medians are compared.
    let rounds = if scale.quick { 1 } else { 3 };
    let (mut ours, mut logged, mut unlogged) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(copy(&sluice.conninfo, "clicks", &csv).await);
        if let Some(pg) = postgres {
            logged.push(copy(&pg.conninfo, "logged", &csv).await);
            unlogged.push(copy(&pg.conninfo, "unlogged", &csv).await);
        }
    }
    let rate = |secs: f64| {
        format!(
            "{:.0} rows/s, {:.0} MB/s",
            scale.rows as f64 / secs,
            mb / secs
        )
    };
    let secs = median(&mut ours);
    let mut row = Row::new(
        "ingest",
        format!(
            "COPY csv, {} rows ({}, {mb:.0} MB), 1 client (median of {rounds})",
            scale.rows,
            shape.name()
        ),
        rate(secs),
    );
    if postgres.is_some() {
        let (logged, unlogged) = (median(&mut logged), median(&mut unlogged));
        row = row.peer(
            format!("PG logged {} (unlogged {})", rate(logged), rate(unlogged)),
            Some(logged / secs),
        );
    }
    row.rss(sluice.peak_rss_mb())
}

/// The ingest phase; `inserts_only` stops after the INSERT steps.
pub async fn run(
    scale: Scale,
    sluice: &Sluice,
    postgres: Option<&Postgres>,
    inserts_only: bool,
) -> Vec<Row> {
    let mut out = Vec::new();
    create_clicks_stream(&connect(&sluice.conninfo).await, "clicks", 4).await;
    if let Some(pg) = postgres {
        connect(&pg.conninfo)
            .await
            .batch_execute(&format!(
                "CREATE TABLE logged {COLUMNS}; CREATE UNLOGGED TABLE unlogged {COLUMNS}"
            ))
            .await
            .expect("create tables");
    }
    let steps: &[(u64, u64)] = if scale.quick {
        &[(1, 4), (100, 4)]
    } else {
        &[(1, 1), (1, 4), (1, 16), (100, 1), (100, 4), (100, 16)]
    };
    for shape in SHAPES {
        for &(rows, clients) in steps {
            let step = insert::Step {
                clients,
                rows,
                shape,
            };
            out.push(insert::step(scale, sluice, postgres, step).await);
        }
    }
    if inserts_only {
        return out;
    }
    for shape in SHAPES {
        out.push(copy_row(scale, sluice, postgres, shape).await);
    }
    for shape in SHAPES {
        for producers in [1u64, 8] {
            let (r, mb) = http(&sluice.http, producers, shape, scale.seconds).await;
            out.push(
                Row::new(
                    "ingest",
                    format!("HTTP NDJSON, {producers} producer(s), {}", shape.name()),
                    format!("{r:.0} rows/s, {mb:.0} MB/s"),
                )
                .rss(sluice.peak_rss_mb()),
            );
        }
    }
    create_raw_stream(&sluice.http).await;
    for shape in SHAPES {
        let put = Put::KinesisPutRecords;
        let (k, mb) = aws_puts(&sluice.http, put, (4, shape), scale.seconds).await;
        out.push(
            Row::new(
                "ingest",
                format!(
                    "Kinesis PutRecords (500/call), 4 producers, {}",
                    shape.name()
                ),
                format!("{k:.0} records/s, {mb:.0} MB/s"),
            )
            .rss(sluice.peak_rss_mb()),
        );
    }
    out
}

/// Both row shapes, narrow first (its figures compare with earlier runs).
const SHAPES: [Shape; 2] = [Shape::Narrow, Shape::Wide];
