//! Delta sinks against plain Parquet sinks on the same data, each in its
//! own server: delivery rate (COPY → committed, hourly partitions, 1 s
//! rollover, no compaction, so the difference is the log), freshness
//! (ack → visible to a Delta reader: an external Delta table, which reads
//! the latest version at every query), and the four lake queries over the
//! Delta table against DuckDB on the same files.

use std::time::Instant;

use super::data::{Shape, COLUMNS};
use super::delivery::{copy_all, peers, python_name, time_query, QUERIES};
use super::{ack_to_visible, Row, Scale};
use crate::common::{connect, start_sluice};

/// The phase on both row shapes.
pub async fn run(scale: Scale) -> Vec<Row> {
    let mut out = Vec::new();
    for shape in [Shape::Narrow, Shape::Wide] {
        out.extend(run_shape(scale, shape).await);
    }
    out
}

async fn run_shape(scale: Scale, shape: Shape) -> Vec<Row> {
    let mut out = Vec::new();
    let mut rates = Vec::new();
    for format in ["parquet", "delta"] {
        let sluice = start_sluice();
        let client = connect(&sluice.conninfo).await;
        client
            .batch_execute(&format!(
                "CREATE STREAM clicks {COLUMNS} WITH (shards = 2, partition_key = 'user_id', event_time = 'event_time'); \
                 CREATE SINK lake FROM clicks WITH (location = 'lake', format = '{format}', time_partition = 'hour', \
                   rollover_interval = '1 s', compaction = 'off', bloom_filter_columns = 'user_id')"
            ))
            .await
            .expect("setup");
        let started = Instant::now();
        copy_all(&client, scale.rows, shape).await;
        client
            .batch_execute("FLUSH SINK lake")
            .await
            .expect("flush");
        rates.push(scale.rows as f64 / started.elapsed().as_secs_f64());
        if format != "delta" {
            continue;
        }
        let version: i64 = client
            .query_one(
                "SELECT delta_version FROM sluice.sinks WHERE name = 'lake'",
                &[],
            )
            .await
            .expect("sinks")
            .get(0);
        out.push(
            Row::new(
                "delta",
                format!(
                    "COPY → committed Delta table, {} rows, {} (24 hourly partitions)",
                    scale.rows,
                    shape.name()
                ),
                format!("{:.0} rows/s; version {version}", rates[1]),
            )
            .peer(
                format!("plain Parquet {:.0} rows/s", rates[0]),
                Some(rates[1] / rates[0]),
            )
            .rss(sluice.peak_rss_mb()),
        );
        client
            .batch_execute("CREATE EXTERNAL TABLE lake_delta STORED AS DELTA LOCATION 'lake'")
            .await
            .expect("external delta table");
        let insert =
            move |sent, n| super::data::insert_sql_shaped("clicks", sent, n, 1_000_000, shape);
        let (p50, p99) = ack_to_visible(
            &sluice.conninfo,
            10_000,
            scale.seconds.max(3),
            insert,
            "SELECT count(*) FROM lake_delta",
        )
        .await;
        out.push(
            Row::new(
                "delta",
                format!(
                    "ack → visible to a Delta reader, 10k rows/s, 1 s rollover, {}",
                    shape.name()
                ),
                format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
            )
            .peer("goal: p99 ≤ 2000 ms", Some(2000.0 / p99))
            .rss(sluice.peak_rss_mb()),
        );
        let peer = peers(&sluice.data_dir().join("lake"));
        for (name, sql) in QUERIES {
            let (cold, warm) =
                time_query(&client, &sql.replace("FROM lake", "FROM lake_delta")).await;
            let duck = peer
                .get("duckdb")
                .and_then(|d| d.get(python_name(name)))
                .and_then(|q| Some((q.get("cold_ms")?.as_f64()?, q.get("warm_ms")?.as_f64()?)));
            out.push(
                Row::new(
                    "delta",
                    format!("{name} over the Delta table, {} (ms, warm)", shape.name()),
                    format!("{warm:.1} (cold {cold:.1})"),
                )
                .peer(
                    duck.map_or("DuckDB n/a".to_string(), |(c, w)| {
                        format!("DuckDB on the files {w:.1} (cold {c:.1})")
                    }),
                    duck.map(|(_, w)| w / warm),
                )
                .rss(sluice.peak_rss_mb()),
            );
        }
    }
    out
}
