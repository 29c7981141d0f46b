//! Transform: a filter + projection pipeline (drops 3 of 10 columns, keeps
//! the ~90% of rows that are not 404s) draining a backlog, per task, and
//! the latency from acknowledgement to visibility in the derived stream.
//! Both run on both row shapes.

use super::data::{self, Shape, COLUMNS};
use super::{ack_to_visible, create_clicks_stream, drain_rate, Row, Scale};
use crate::common::{connect, start_sluice};

const CLEAN: &str =
    "SELECT event_time, user_id, session_id, lower(url) AS url, referrer, status, latency_ms \
                     FROM raw WHERE status <> 404";

/// Records/s the pipeline drains from a backlog of `rows` of `shape` over
/// `shards`.
async fn drain(shards: u32, rows: u64, shape: Shape) -> (f64, f64) {
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    create_clicks_stream(&client, "raw", shards).await;
    let per_stmt = 1000;
    let mut from = 0;
    while from < rows {
        let n = per_stmt.min(rows - from);
        client
            .batch_execute(&data::insert_sql_shaped("raw", from, n, rows, shape))
            .await
            .expect("load");
        from += n;
    }
    (drain_rate(&client, CLEAN, rows).await, sluice.peak_rss_mb())
}

/// Ack → visible in the derived stream at `rate` rows/s of `shape`,
/// p50/p99 ms.
async fn latency(rate: u64, seconds: u64, shape: Shape) -> (f64, f64) {
    let sluice = start_sluice();
    connect(&sluice.conninfo)
        .await
        .batch_execute(&format!(
            "CREATE STREAM raw {COLUMNS}; CREATE STREAM clean AS {CLEAN}"
        ))
        .await
        .expect("setup");
    // Status 200 only: every row passes the filter.
    let insert = move |sent, n| {
        data::insert_sql_shaped("raw", sent, n, u64::MAX, shape).replace(", 404, ", ", 200, ")
    };
    ack_to_visible(
        &sluice.conninfo,
        rate,
        seconds,
        insert,
        "SELECT records FROM sluice.streams WHERE name = 'clean'",
    )
    .await
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let mut out = Vec::new();
    for shape in [Shape::Narrow, Shape::Wide] {
        for shards in [1u32, 2] {
            let (rate, rss) = drain(shards, scale.rows, shape).await;
            out.push(
                Row::new(
                    "transform",
                    format!(
                        "filter+projection backlog, {shards} task(s), {}",
                        shape.name()
                    ),
                    format!("{rate:.0} records/s ({:.0}/task)", rate / shards as f64),
                )
                .rss(rss),
            );
        }
    }
    let rates: &[u64] = if scale.quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    for shape in [Shape::Narrow, Shape::Wide] {
        for &rate in rates {
            let (p50, p99) = latency(rate, scale.seconds, shape).await;
            out.push(Row::new(
                "transform",
                format!(
                    "ack → visible in derived stream at {rate} rows/s, {}",
                    shape.name()
                ),
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
            ));
        }
    }
    out
}
