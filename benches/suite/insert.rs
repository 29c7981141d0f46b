//! INSERT steps of the ingest phase: single- and multi-row statements from
//! 1, 4 and 16 clients into sluice and PostgreSQL.
//!
//! A durable single-row INSERT costs about one fsync on both systems, and
//! this machine's fsync latency drifts by ±20 % over seconds. One long run
//! of each system, one after the other, then compares two different disks.
//! So the clients connect once per system, and short rounds alternate
//! between sluice and PostgreSQL's logged table; the medians of the rounds
//! are compared. PostgreSQL's unlogged table (no fsync) is measured once,
//! for reference.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::data::{self, Shape};
use super::ingest::median;
use super::{quantile_ms, Row, Scale};
use crate::common::{connect, Postgres, Sluice};

/// One step: statements of `rows` rows of `shape` from `clients` clients.
#[derive(Clone, Copy)]
pub(super) struct Step {
    pub clients: u64,
    pub rows: u64,
    pub shape: Shape,
}

/// Connected clients of one system, each with the statement it repeats.
struct Clients {
    clients: Vec<(Arc<Client>, Arc<String>)>,
    rows: u64,
}

impl Clients {
    async fn connect(conninfo: &str, table: &str, step: Step) -> Clients {
        let mut clients = Vec::new();
        for c in 0..step.clients {
            let sql =
                data::insert_sql_shaped(table, c * step.rows, step.rows, 1_000_000, step.shape);
            clients.push((Arc::new(connect(conninfo).await), Arc::new(sql)));
        }
        Clients {
            clients,
            rows: step.rows,
        }
    }

    /// Every client INSERTs in a loop for `duration`: rows/s and each
    /// statement's latency.
    async fn round(&self, duration: Duration) -> (f64, Vec<Duration>) {
        let started = Instant::now();
        let deadline = started + duration;
        let rows = self.rows;
        let tasks: Vec<_> = self
            .clients
            .iter()
            .map(|(client, sql)| {
                let (client, sql) = (client.clone(), sql.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let start = Instant::now();
                        let n = client.execute(sql.as_str(), &[]).await.expect("insert");
                        assert_eq!(n, rows);
                        latencies.push(start.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        let rate = all.len() as f64 * rows as f64 / started.elapsed().as_secs_f64();
        (rate, all)
    }
}

/// Rounds per system and their length: `scale.seconds` of INSERTs per
/// system (as when each ran once), in at least three one-second rounds;
/// one short round in `--quick`.
fn rounds(scale: Scale) -> (usize, Duration) {
    if scale.quick {
        (1, Duration::from_secs(scale.seconds))
    } else {
        (scale.seconds.max(3) as usize, Duration::from_secs(1))
    }
}

/// One step into sluice's `clicks` and PostgreSQL's `logged` table in
/// alternating rounds, then PostgreSQL's `unlogged` once.
pub(super) async fn step(
    scale: Scale,
    sluice: &Sluice,
    postgres: Option<&Postgres>,
    step: Step,
) -> Row {
    let (count, length) = rounds(scale);
    let ours = Clients::connect(&sluice.conninfo, "clicks", step).await;
    let theirs = match postgres {
        Some(pg) => Some(Clients::connect(&pg.conninfo, "logged", step).await),
        None => None,
    };
    let (mut our_rates, mut their_rates) = (Vec::new(), Vec::new());
    let (mut latencies, mut their_latencies) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let (rate, mut lat) = ours.round(length).await;
        our_rates.push(rate);
        latencies.append(&mut lat);
        if let Some(theirs) = &theirs {
            let (rate, mut lat) = theirs.round(length).await;
            their_rates.push(rate);
            their_latencies.append(&mut lat);
        }
    }
    latencies.sort_unstable();
    their_latencies.sort_unstable();
    let rate = median(&mut our_rates);
    let mut row = Row::new(
        "ingest",
        format!(
            "INSERT {} row(s)/stmt, {} clients, {} (p50/p99 ms; median of {count} alternating {}-s rounds)",
            step.rows,
            step.clients,
            step.shape.name(),
            length.as_secs()
        ),
        format!(
            "{rate:.0} rows/s ({:.2}/{:.2})",
            quantile_ms(&latencies, 0.5),
            quantile_ms(&latencies, 0.99)
        ),
    );
    if let Some(pg) = postgres {
        let logged = median(&mut their_rates);
        let unlogged = Clients::connect(&pg.conninfo, "unlogged", step)
            .await
            .round(Duration::from_secs(scale.seconds))
            .await
            .0;
        row = row.peer(
            format!(
                "PG logged {logged:.0} rows/s ({:.2}/{:.2}), unlogged {unlogged:.0}",
                quantile_ms(&their_latencies, 0.5),
                quantile_ms(&their_latencies, 0.99)
            ),
            Some(rate / logged),
        );
    }
    row.rss(sluice.peak_rss_mb())
}
