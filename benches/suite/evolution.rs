//! Schema evolution: a scan and a pipeline over a log written in three
//! schema versions (a third of the rows each: the original, then `status`
//! widened to BIGINT, then a `country` column added) against the same rows
//! in one version. Old frames are adapted as they are read (a cast, a NULL
//! column), so the ratio shows what that costs; the goal is ≥ 0.9. Runs on
//! both row shapes.

use std::time::{Duration, Instant};

use super::data::{self, Shape};
use super::{create_clicks_stream, drain_rate, scalar, Row, Scale};
use crate::common::{connect, start_sluice};

const NAMES: &str =
    "event_time, user_id, session_id, email, ip, url, referrer, status, latency_ms, user_agent";

/// A full scan that decodes a string and the (widened) integer column.
const SCAN: &str =
    "SELECT CAST(count(*) + sum(length(url)) + sum(status) AS BIGINT) FROM raw WHERE status <> 404";

const CLEAN: &str =
    "SELECT event_time, user_id, lower(url) AS url, status FROM raw WHERE status <> 404";

/// (scan rows/s best of three, pipeline drain rows/s) over `rows` of
/// `shape` written in `versions` (1 or 3) schema versions.
async fn measure(rows: u64, versions: u64, shape: Shape) -> (f64, f64) {
    let sluice = start_sluice();
    let client = connect(&sluice.conninfo).await;
    create_clicks_stream(&client, "raw", 2).await;
    let per_version = rows.div_ceil(versions);
    let mut from = 0;
    for version in 1..=versions {
        match version {
            2 => {
                client
                    .batch_execute("ALTER STREAM raw ALTER COLUMN status TYPE BIGINT")
                    .await
            }
            3 => {
                client
                    .batch_execute("ALTER STREAM raw ADD COLUMN country TEXT")
                    .await
            }
            _ => Ok(()),
        }
        .expect("alter");
        let end = (from + per_version).min(rows);
        while from < end {
            let n = 1000.min(end - from);
            let sql = data::insert_sql_shaped("raw", from, n, rows, shape).replacen(
                "INSERT INTO raw VALUES",
                &format!("INSERT INTO raw ({NAMES}) VALUES"),
                1,
            );
            client.batch_execute(&sql).await.expect("load");
            from += n;
        }
    }
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        scalar(&client, SCAN).await;
        best = best.min(started.elapsed());
    }
    let drain = drain_rate(&client, CLEAN, rows).await;
    (rows as f64 / best.as_secs_f64(), drain)
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let rows = scale.rows.min(1_000_000);
    let mut out = Vec::new();
    for shape in [Shape::Narrow, Shape::Wide] {
        let (scan_one, drain_one) = measure(rows, 1, shape).await;
        let (scan_three, drain_three) = measure(rows, 3, shape).await;
        let name = shape.name();
        out.push(
            Row::new(
                "evolution",
                format!("scan of {rows} rows in 3 schema versions, {name}"),
                format!("{scan_three:.0} rows/s"),
            )
            .peer(
                format!("{scan_one:.0} rows/s in 1 version"),
                Some(scan_three / scan_one),
            ),
        );
        out.push(
            Row::new(
                "evolution",
                format!("pipeline drain of {rows} rows in 3 schema versions, {name}"),
                format!("{drain_three:.0} rows/s"),
            )
            .peer(
                format!("{drain_one:.0} rows/s in 1 version"),
                Some(drain_three / drain_one),
            ),
        );
    }
    out
}
