//! Destinations besides files: the PostgreSQL sink against plain `COPY`
//! of the same rows into the same PostgreSQL, the HTTP endpoint sink
//! (Firehose protocol) to a receiver in this process (rows/s of a backlog,
//! and latency from INSERT acknowledgement to the receiver), and
//! Firehose's PutRecordBatch against Kinesis's PutRecords, on both row
//! shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine as _;

use super::data::{self, Shape, COLUMNS};
use super::delivery::copy_all;
use super::ingest::{aws_puts, copy, create_raw_stream, median, Put};
use super::{create_clicks_stream, quantile_ms, scalar, Row, Scale};
use crate::common::{connect, start_sluice, Postgres};

/// What the receiver saw: records, and when each `n` arrived.
#[derive(Default)]
struct Received {
    records: u64,
    arrived: HashMap<i64, Instant>,
}

/// A Firehose HTTP endpoint receiver on a free port; its URL.
async fn receiver(state: Arc<Mutex<Received>>) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: Bytes| {
            let state = state.clone();
            async move {
                let now = Instant::now();
                let envelope: serde_json::Value = serde_json::from_slice(&body).expect("json");
                let records = envelope["records"].as_array().expect("records");
                let mut seen = state.lock().expect("state");
                seen.records += records.len() as u64;
                for r in records {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(r["data"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    let row: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                    if let Some(n) = row.get("n").and_then(|n| n.as_i64()) {
                        seen.arrived.insert(n, now);
                    }
                }
                axum::Json(serde_json::json!({
                    "requestId": envelope["requestId"],
                    "timestamp": 0,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// The backlog figures on both row shapes (a fresh server each), the
/// latency of one small row once.
pub async fn run(scale: Scale, postgres: Option<&Postgres>) -> Vec<Row> {
    let mut out = Vec::new();
    for shape in [Shape::Narrow, Shape::Wide] {
        let sluice = start_sluice();
        let client = connect(&sluice.conninfo).await;
        create_clicks_stream(&client, "clicks", 4).await;
        copy_all(&client, scale.rows, shape).await;
        if let Some(pg) = postgres {
            let secs = postgres_sink(&client, pg, scale, shape).await;
            out.push(secs.rss(sluice.peak_rss_mb()));
        }
        let state = Arc::new(Mutex::new(Received::default()));
        let url = receiver(state.clone()).await;
        out.push(
            http_backlog(&client, &url, &state, scale, shape)
                .await
                .rss(sluice.peak_rss_mb()),
        );
        if shape == Shape::Narrow {
            out.push(
                http_latency(&client, &url, &state, scale)
                    .await
                    .rss(sluice.peak_rss_mb()),
            );
        }
        out.push(
            firehose_vs_kinesis(&sluice.http, scale, shape)
                .await
                .rss(sluice.peak_rss_mb()),
        );
    }
    out
}

/// The PostgreSQL sink delivering the stream's backlog against
/// PostgreSQL's own COPY of the same rows.
async fn postgres_sink(
    client: &tokio_postgres::Client,
    pg: &Postgres,
    scale: Scale,
    shape: Shape,
) -> Row {
    let target = connect(&pg.conninfo).await;
    let csv = data::csv_shaped(scale.rows, shape);
    let port = pg
        .conninfo
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .expect("port");
    let tag = match shape {
        Shape::Narrow => "n",
        Shape::Wide => "w",
    };
    // Rounds alternate the sink and the peer into fresh tables, each
    // after a CHECKPOINT, so neither pays for the other's writes
    // (checkpoints, autovacuum); medians are compared.
    let rounds = if scale.quick { 1 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (sunk, copied) = (format!("sunk_{tag}{round}"), format!("copied_{tag}{round}"));
        target
            .batch_execute(&format!(
                "CREATE TABLE {sunk} {COLUMNS}; CREATE TABLE {copied} {COLUMNS}; CHECKPOINT"
            ))
            .await
            .expect("tables");
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE SINK pg_{tag}{round} FROM clicks WITH (location = 'postgresql://postgres@127.0.0.1:{port}/postgres', table = '{sunk}'); \
                 FLUSH SINK pg_{tag}{round}"
            ))
            .await
            .expect("PostgreSQL sink");
        ours.push(started.elapsed().as_secs_f64());
        assert_eq!(
            scalar(&target, &format!("SELECT count(*) FROM {sunk}")).await as u64,
            scale.rows,
            "every row in the target once"
        );
        client
            .batch_execute(&format!("DROP SINK pg_{tag}{round}"))
            .await
            .expect("drop");
        target
            .batch_execute("CHECKPOINT")
            .await
            .expect("checkpoint");
        theirs.push(copy(&pg.conninfo, &copied, &csv).await);
    }
    let (secs, peer_secs) = (median(&mut ours), median(&mut theirs));
    let rate = |secs: f64| format!("{:.0} rows/s", scale.rows as f64 / secs);
    Row::new(
        "destinations",
        format!(
            "PostgreSQL sink, {} rows backlog, {}, exactly once (binary COPY, 4 shards; median of {rounds})",
            scale.rows,
            shape.name()
        ),
        rate(secs),
    )
    .peer(
        format!("PG COPY csv from a client, 1 stream: {}", rate(peer_secs)),
        Some(peer_secs / secs),
    )
}

/// The HTTP endpoint sink delivering the stream's backlog.
async fn http_backlog(
    client: &tokio_postgres::Client,
    url: &str,
    state: &Mutex<Received>,
    scale: Scale,
    shape: Shape,
) -> Row {
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE SINK hook FROM clicks WITH (location = '{url}', format = 'firehose', batch_rows = 500, batch_interval = '100 ms'); \
             FLUSH SINK hook"
        ))
        .await
        .expect("HTTP sink");
    let secs = started.elapsed().as_secs_f64();
    let received = state.lock().expect("state").records;
    assert_eq!(received, scale.rows, "every record reached the receiver");
    client.batch_execute("DROP SINK hook").await.expect("drop");
    Row::new(
        "destinations",
        format!(
            "HTTP sink (Firehose protocol, 500 records/request), {} rows backlog, {}",
            scale.rows,
            shape.name()
        ),
        format!("{:.0} rows/s", scale.rows as f64 / secs),
    )
}

/// One row every 10 ms, each timed from its INSERT's acknowledgement to
/// its arrival at the receiver.
async fn http_latency(
    client: &tokio_postgres::Client,
    url: &str,
    state: &Mutex<Received>,
    scale: Scale,
) -> Row {
    client
        .batch_execute(&format!(
            "CREATE STREAM pings (n BIGINT NOT NULL) WITH (shards = 4); \
             CREATE SINK ping FROM pings WITH (location = '{url}', format = 'firehose', batch_interval = '0 s')"
        ))
        .await
        .expect("ping sink");
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(scale.seconds.max(2));
    let mut n = 0i64;
    while Instant::now() < deadline {
        client
            .batch_execute(&format!("INSERT INTO pings VALUES ({n})"))
            .await
            .expect("insert");
        acked.push((n, Instant::now()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .batch_execute("FLUSH SINK ping")
        .await
        .expect("flush");
    let mut latencies: Vec<Duration> = {
        let seen = state.lock().expect("state");
        acked
            .iter()
            .filter_map(|(n, at)| {
                seen.arrived
                    .get(n)
                    .map(|got| got.saturating_duration_since(*at))
            })
            .collect()
    };
    assert_eq!(latencies.len(), acked.len(), "every ping arrived");
    latencies.sort_unstable();
    Row::new(
        "destinations",
        "HTTP sink latency, INSERT ack → receiver (batch_interval 0 s), p50/p99 ms",
        format!(
            "{:.1} / {:.1}",
            quantile_ms(&latencies, 0.5),
            quantile_ms(&latencies, 0.99)
        ),
    )
}

/// Firehose's PutRecordBatch against Kinesis's PutRecords, 4 producers.
async fn firehose_vs_kinesis(http: &str, scale: Scale, shape: Shape) -> Row {
    create_raw_stream(http).await;
    let mut rates = Vec::new();
    for put in [Put::KinesisPutRecords, Put::FirehosePutRecordBatch] {
        rates.push(aws_puts(http, put, (4, shape), scale.seconds).await);
    }
    let ((kinesis, _), (firehose, mb)) = (rates[0], rates[1]);
    Row::new(
        "destinations",
        format!(
            "Firehose PutRecordBatch (500/call), 4 producers, {}",
            shape.name()
        ),
        format!("{firehose:.0} records/s, {mb:.0} MB/s"),
    )
    .peer(
        format!("sluice Kinesis PutRecords {kinesis:.0} records/s"),
        Some(firehose / kinesis),
    )
}
