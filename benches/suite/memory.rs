//! The memory soak: the mixed load of a clickstream team at full speed
//! (two HTTP NDJSON writers, one Kinesis PutRecords writer, two multi-row
//! INSERT writers) into a keyed 4-shard stream, two continuous queries,
//! and a Delta sink (compacting by default) and a plain Parquet sink on
//! one of them (2 s rollovers), with ad hoc queries on both sink tables
//! every second. The server's RssAnon is sampled over the run; a full run
//! (`SLUICE_BENCH_SOAK_SECONDS`, default 1800) fails unless the peak of
//! its last third is within 10 % of the peak of its middle third. The
//! `--quick` run only reports.

use std::time::{Duration, Instant};

use base64::Engine as _;

use super::data::{self, Click, Shape, COLUMNS};
use super::ingest::post_ndjson;
use super::{Row, Scale};
use crate::common::{connect, start_sluice};

/// Rows per HTTP POST, Kinesis call and INSERT statement.
const NDJSON_ROWS: u64 = 1000;
const KINESIS_ROWS: u64 = 500;
const INSERT_ROWS: u64 = 500;
/// Rows the event times spread over (a day of 2026-11-25, so every hour's
/// partition closes and compacts).
const DAY_ROWS: u64 = 20_000_000;

/// A writer of the mixed load: how it sends a chunk of rows.
#[derive(Debug, Clone, Copy)]
enum Writer {
    Ndjson,
    Kinesis,
    Insert,
}

impl Writer {
    fn chunk_rows(self) -> u64 {
        match self {
            Writer::Ndjson => NDJSON_ROWS,
            Writer::Kinesis => KINESIS_ROWS,
            Writer::Insert => INSERT_ROWS,
        }
    }

    /// Sends rows until `deadline`, each writer its own range of row
    /// numbers; returns the rows acknowledged.
    async fn run(self, id: u64, conninfo: String, http: String, deadline: Instant) -> u64 {
        let client = connect(&conninfo).await;
        let web = reqwest::Client::new();
        let rows = self.chunk_rows();
        let mut sent = 0u64;
        while Instant::now() < deadline {
            // Row numbers stay inside the day: past it, times would read 24:00.
            let first = (id * 1_000_000_007 + sent) % (DAY_ROWS - rows);
            let clicks = (first..first + rows).map(|i| Click::shaped(i, DAY_ROWS, Shape::Narrow));
            match self {
                Writer::Ndjson => {
                    let body: String = clicks.map(|c| c.json() + "\n").collect();
                    let url = format!("http://{http}/v1/streams/clicks/records");
                    post_ndjson(&web, &url, body).await;
                }
                Writer::Kinesis => {
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let records: Vec<serde_json::Value> = clicks
                        .map(|c| serde_json::json!({"Data": b64.encode(c.json()), "PartitionKey": c.user.to_string()}))
                        .collect();
                    let out: serde_json::Value = web
                        .post(format!("http://{http}/"))
                        .header("x-amz-target", "Kinesis_20131202.PutRecords")
                        .header("content-type", "application/x-amz-json-1.1")
                        .body(
                            serde_json::json!({"StreamName": "clicks", "Records": records})
                                .to_string(),
                        )
                        .send()
                        .await
                        .expect("put")
                        .json()
                        .await
                        .expect("json");
                    assert_eq!(out["FailedRecordCount"], 0, "{out}");
                }
                Writer::Insert => {
                    let sql =
                        data::insert_sql_shaped("clicks", first, rows, DAY_ROWS, Shape::Narrow);
                    client.batch_execute(&sql).await.expect("insert");
                }
            }
            sent += rows;
        }
        sent
    }
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let seconds = std::env::var("SLUICE_BENCH_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if scale.quick { 12 } else { 1800 });
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM clicks {COLUMNS} \
               WITH (shards = 4, partition_key = 'user_id', event_time = 'event_time'); \
             CREATE STREAM served AS SELECT event_time, user_id, url, status, latency_ms \
               FROM clicks WHERE status < 500; \
             CREATE STREAM slow AS SELECT event_time, url, latency_ms FROM clicks WHERE latency_ms > 1000; \
             CREATE SINK dl FROM served WITH (location = 'dl', format = 'delta', rollover_interval = '2 s'); \
             CREATE SINK pq FROM served WITH (location = 'pq', rollover_interval = '2 s')"
        ))
        .await
        .expect("setup");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let load = [
        Writer::Ndjson,
        Writer::Ndjson,
        Writer::Kinesis,
        Writer::Insert,
        Writer::Insert,
    ];
    let writers: Vec<_> = load
        .into_iter()
        .enumerate()
        .map(|(id, writer)| {
            tokio::spawn(writer.run(
                id as u64,
                sluice.conninfo.clone(),
                sluice.http.clone(),
                deadline,
            ))
        })
        .collect();
    let sample_every = Duration::from_secs((seconds / 30).max(1));
    let mut samples: Vec<(u64, f64)> = Vec::new();
    let started = Instant::now();
    let mut next_sample = started;
    while Instant::now() < deadline {
        for sql in [
            "SELECT count(*) FROM dl",
            "SELECT url, count(*) FROM pq GROUP BY url ORDER BY 2 DESC LIMIT 5",
        ] {
            client.query(sql, &[]).await.expect(sql);
        }
        if Instant::now() >= next_sample {
            samples.push((started.elapsed().as_secs(), sluice.rss_anon_mb()));
            next_sample += sample_every;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut rows = 0;
    for writer in writers {
        rows += writer.await.expect("writer");
    }
    samples.push((started.elapsed().as_secs(), sluice.rss_anon_mb()));
    let third = samples.len() / 3;
    let peak = |part: &[(u64, f64)]| part.iter().map(|s| s.1).fold(0.0, f64::max);
    let middle = peak(&samples[third..2 * third]);
    let last = peak(&samples[2 * third..]);
    let plateau = last <= middle * 1.10;
    let curve = samples
        .iter()
        .map(|(t, mb)| format!("{t}s {mb:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("RssAnon MB over {seconds} s and {rows} rows: {curve}");
    assert!(
        scale.quick || plateau,
        "no plateau: the last third peaked at {last:.0} MB, the middle third at {middle:.0} MB ({curve})"
    );
    vec![Row::new(
        "memory",
        format!(
            "RssAnon, {seconds} s of NDJSON, PutRecords and INSERT through 2 CQs into Delta + Parquet sinks ({rows} rows)"
        ),
        format!(
            "peak {:.0} MB; middle third {middle:.0}, last third {last:.0} MB{}",
            peak(&samples),
            if plateau {
                ", plateau"
            } else {
                ", still growing"
            }
        ),
    )
    .rss(sluice.peak_rss_mb())]
}
