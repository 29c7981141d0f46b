//! The memory soak: sustained COPY into a keyed 4-shard stream delivered
//! by a Delta sink and a plain Parquet sink (2 s rollovers, the Delta
//! sink compacting by default), with an ad hoc query on each sink table
//! every second. The server's RssAnon is sampled over the run; a full run
//! (`SLUICE_BENCH_SOAK_SECONDS`, default 1800) fails unless the peak of
//! its last third is within 10 % of the peak of its middle third. The
//! `--quick` run only reports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;

use super::{Row, Scale};
use crate::common::{connect, start_sluice};

/// Rows a writer sends per COPY.
const CHUNK_ROWS: u64 = 20_000;

fn chunk(writer: u64, n: u64) -> Bytes {
    let mut csv = String::with_capacity(CHUNK_ROWS as usize * 48);
    for i in 0..CHUNK_ROWS {
        let key = writer * 1_000_000_000 + n + i;
        csv.push_str(&format!(
            "2026-12-08 10:{:02}:{:02},{key},/p{},{}\n",
            (i / 60) % 60,
            i % 60,
            i % 50,
            200 + (i % 3) * 100
        ));
    }
    Bytes::from(csv)
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let seconds = std::env::var("SLUICE_BENCH_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if scale.quick { 12 } else { 1800 });
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    client
        .batch_execute(
            "CREATE STREAM ev (ts TIMESTAMP NOT NULL, k BIGINT, url TEXT, status INT) \
               WITH (shards = 4, partition_key = 'k', event_time = 'ts'); \
             CREATE SINK dl FROM ev WITH (location = 'dl', format = 'delta', rollover_interval = '2 s'); \
             CREATE SINK pq FROM ev WITH (location = 'pq', rollover_interval = '2 s')",
        )
        .await
        .expect("setup");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut writers = Vec::new();
    for writer in 0..2u64 {
        let conninfo = sluice.conninfo.clone();
        writers.push(tokio::spawn(async move {
            let client = connect(&conninfo).await;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let sink = client
                    .copy_in::<_, Bytes>("COPY ev FROM STDIN (FORMAT csv)")
                    .await
                    .expect("copy");
                futures::pin_mut!(sink);
                sink.send(chunk(writer, sent)).await.expect("copy data");
                sink.finish().await.expect("copy done");
                sent += CHUNK_ROWS;
            }
            sent
        }));
    }
    let sample_every = Duration::from_secs((seconds / 30).max(1));
    let mut samples: Vec<(u64, f64)> = Vec::new();
    let started = Instant::now();
    let mut next_sample = started;
    while Instant::now() < deadline {
        for sql in ["SELECT count(*) FROM dl", "SELECT count(*) FROM pq"] {
            client.query_one(sql, &[]).await.expect(sql);
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
        format!("RssAnon, {seconds} s of COPY into Delta + Parquet sinks ({rows} rows)"),
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
