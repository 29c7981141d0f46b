//! Delivery and the lake: COPY → committed Parquet (hourly partitions,
//! 1 s rollover) end to end, freshness (ack → visible in the sink's table),
//! files per partition, then four ad hoc queries through sluice over
//! pgwire against DuckDB and DataFusion (Python, in process) on the same
//! files: cold, and the median of warm runs.

use std::time::Instant;

use futures::SinkExt;
use tokio_postgres::Client;

use super::data::{self, Shape, COLUMNS};
use super::{ack_to_visible, scalar, Row, Scale};
use crate::common::{connect, start_sluice};

const WARM_RUNS: usize = 5;

pub const QUERIES: [(&str, &str); 4] = [
    (
        "count, one hour",
        "SELECT count(*) FROM lake WHERE dt = '2026-11-25' AND hour = 12",
    ),
    (
        "top-10 urls, avg latency",
        "SELECT url, count(*) AS c, avg(latency_ms) AS avg_latency FROM lake GROUP BY url ORDER BY c DESC, url LIMIT 10",
    ),
    (
        "distinct users, status+hours",
        "SELECT count(DISTINCT user_id) FROM lake WHERE status = 500 AND hour BETWEEN 8 AND 11",
    ),
    (
        "one user's 100 newest",
        "SELECT event_time, url, status FROM lake WHERE user_id = 4242 ORDER BY event_time DESC LIMIT 100",
    ),
];

pub(super) async fn copy_all(client: &Client, rows: u64, shape: Shape) {
    let csv = data::csv_shaped(rows, shape);
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY clicks FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    for at in (0..csv.len()).step_by(1 << 20) {
        sink.send(csv.slice(at..(at + (1 << 20)).min(csv.len())))
            .await
            .expect("copy data");
    }
    sink.finish().await.expect("copy done");
}

/// (cold, median warm) ms of `sql` over pgwire.
pub(super) async fn time_query(client: &Client, sql: &str) -> (f64, f64) {
    let mut times = Vec::new();
    for _ in 0..=WARM_RUNS {
        let started = Instant::now();
        client.simple_query(sql).await.expect(sql);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let cold = times.remove(0);
    times.sort_by(f64::total_cmp);
    (cold, times[times.len() / 2])
}

/// DuckDB and DataFusion on the same files (benches/peers/lake_queries.py).
pub(super) fn peers(dir: &std::path::Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/lake_queries.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(WARM_RUNS.to_string())
        .output();
    match out {
        Ok(out) => serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            serde_json::json!({"error": format!("{e}: {}", String::from_utf8_lossy(&out.stderr))})
        }),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// The phase on both row shapes, each on a fresh server.
pub async fn run(scale: Scale) -> Vec<Row> {
    let mut out = Vec::new();
    for shape in [Shape::Narrow, Shape::Wide] {
        out.extend(run_shape(scale, shape).await);
    }
    out
}

async fn run_shape(scale: Scale, shape: Shape) -> Vec<Row> {
    let mut out = Vec::new();
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM clicks {COLUMNS} WITH (shards = 2, partition_key = 'user_id', event_time = 'event_time'); \
             CREATE SINK lake FROM clicks WITH (location = 'lake', time_partition = 'hour', rollover_interval = '1 s', \
               compaction = 'off', bloom_filter_columns = 'user_id')"
        ))
        .await
        .expect("setup");
    let started = Instant::now();
    copy_all(&client, scale.rows, shape).await;
    client
        .batch_execute("FLUSH SINK lake")
        .await
        .expect("flush");
    let rate = scale.rows as f64 / started.elapsed().as_secs_f64();
    let row = client
        .query_one(
            "SELECT files, bytes FROM sluice.sinks WHERE name = 'lake'",
            &[],
        )
        .await
        .expect("sinks");
    let (files, bytes): (i64, i64) = (row.get(0), row.get(1));
    out.push(
        Row::new(
            "delivery",
            format!(
                "COPY → committed Parquet, {} rows, {} (24 hourly partitions)",
                scale.rows,
                shape.name()
            ),
            format!(
                "{rate:.0} rows/s; {files} files ({:.1} per partition), {:.2} MB/file",
                files as f64 / 24.0,
                bytes as f64 / 1e6 / files.max(1) as f64
            ),
        )
        .rss(sluice.peak_rss_mb()),
    );
    let insert = move |sent, n| data::insert_sql_shaped("clicks", sent, n, 1_000_000, shape);
    let (p50, p99) = ack_to_visible(
        &sluice.conninfo,
        10_000,
        scale.seconds.max(3),
        insert,
        "SELECT count(*) FROM lake",
    )
    .await;
    out.push(
        Row::new(
            "delivery",
            format!(
                "ack → visible in the sink table, 10k rows/s, 1 s rollover, {}",
                shape.name()
            ),
            format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
        )
        .peer("Firehose Parquet: ≥ 60 s buffering", Some(60_000.0 / p99))
        .rss(sluice.peak_rss_mb()),
    );
    let peer = peers(&sluice.data_dir().join("lake"));
    for (name, sql) in QUERIES {
        let (cold, warm) = time_query(&client, sql).await;
        let peer_ms = |engine: &str| -> Option<(f64, f64)> {
            let q = peer.get(engine)?.get(python_name(name))?;
            Some((q.get("cold_ms")?.as_f64()?, q.get("warm_ms")?.as_f64()?))
        };
        let (duck, df) = (peer_ms("duckdb"), peer_ms("datafusion"));
        let show = |v: Option<(f64, f64)>| {
            v.map_or("n/a".to_string(), |(c, w)| format!("{w:.1} (cold {c:.1})"))
        };
        out.push(
            Row::new(
                "query",
                format!("{name}, {} (ms, warm)", shape.name()),
                format!("{warm:.1} (cold {cold:.1})"),
            )
            .peer(
                format!("DuckDB {} · DataFusion {}", show(duck), show(df)),
                duck.map(|(_, w)| w / warm),
            )
            .rss(sluice.peak_rss_mb()),
        );
    }
    out.extend(compaction(&client, &sluice, shape).await);
    out.push(bloom_gain(&client, &sluice, shape).await);
    for engine in ["duckdb", "datafusion"] {
        if let Some(why) = peer.get(engine).and_then(|e| e.get("missing")) {
            eprintln!("{engine} is not installed ({why}); pip install {engine}");
        }
    }
    if let Some(err) = peer.get("error") {
        eprintln!("peer queries failed: {err}");
    }
    out
}

/// A second sink of the same stream with compaction on: its files once
/// compaction settles, and the top-10 query on them against the same query
/// on a single-file copy of the data (CTAS).
async fn compaction(client: &Client, sluice: &crate::common::Sluice, shape: Shape) -> Vec<Row> {
    client
        .batch_execute(
            "CREATE SINK compacted FROM clicks WITH (location = 'compacted', time_partition = 'hour',                rollover_interval = '1 s', compaction = 'on', compaction_min_files = 2, bloom_filter_columns = 'user_id');              FLUSH SINK compacted",
        )
        .await
        .expect("compacted sink");
    let files_sql = "SELECT files FROM sluice.sinks WHERE name = 'compacted'";
    let before = scalar(client, files_sql).await;
    let started = Instant::now();
    let (mut last, mut stable) = (before, 0);
    while stable < 3 && started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let now = scalar(client, files_sql).await;
        stable = if now == last && now < before {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    client
        .batch_execute("CREATE TABLE single_file AS SELECT * FROM compacted")
        .await
        .expect("ctas");
    let top10 = QUERIES[1].1;
    let (_, on_single) = time_query(client, &top10.replace("FROM lake", "FROM single_file")).await;
    let (_, on_compacted_sink) =
        time_query(client, &top10.replace("FROM lake", "FROM compacted")).await;
    vec![
        Row::new(
            "delivery",
            format!(
                "compaction of the same data, {} (files before → after)",
                shape.name()
            ),
            format!("{before} → {last} files"),
        )
        .rss(sluice.peak_rss_mb()),
        Row::new(
            "query",
            format!(
                "top-10 urls after compaction vs a single-file copy, {} (ms, warm)",
                shape.name()
            ),
            format!("{on_compacted_sink:.1}"),
        )
        .peer(
            format!("single file {on_single:.1}"),
            Some(on_single / on_compacted_sink),
        )
        .rss(sluice.peak_rss_mb()),
    ]
}

/// The point lookup on the same data delivered without bloom filters, to
/// show what they are worth.
async fn bloom_gain(client: &Client, sluice: &crate::common::Sluice, shape: Shape) -> Row {
    client
        .batch_execute(
            "CREATE SINK plain FROM clicks WITH (location = 'plain', time_partition = 'hour', \
               rollover_interval = '1 s', compaction = 'off'); FLUSH SINK plain",
        )
        .await
        .expect("plain sink");
    let lookup = QUERIES[3].1;
    let (_, with_bloom) = time_query(client, lookup).await;
    let (_, without) = time_query(client, &lookup.replace("FROM lake", "FROM plain")).await;
    Row::new(
        "query",
        format!(
            "one user's 100 newest, bloom filter on user_id vs none, {} (ms, warm)",
            shape.name()
        ),
        format!("{with_bloom:.1}"),
    )
    .peer(
        format!("no bloom filter {without:.1}"),
        Some(without / with_bloom),
    )
    .rss(sluice.peak_rss_mb())
}

/// The key of a query in the peers' JSON.
pub(super) fn python_name(name: &str) -> &'static str {
    match name {
        "count, one hour" => "count_one_hour",
        "top-10 urls, avg latency" => "top10_urls",
        "distinct users, status+hours" => "distinct_users",
        _ => "user_events",
    }
}
