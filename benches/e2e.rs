//! The benchmark suite: ingest, transform, delivery, ad hoc queries and
//! other destinations (PostgreSQL, HTTP endpoints, the Firehose API),
//! each next to a peer measured on the same machine in the same run
//! (PostgreSQL 15 with fsync on, DuckDB and DataFusion on the same Parquet
//! files), printed as one table with ratios (> 1 means sluice is ahead)
//! and sluice's peak memory per phase.
//!
//! `cargo bench --bench e2e` (release build; installs the PostgreSQL
//! server package if absent; DuckDB/DataFusion from `pip install duckdb
//! datafusion`). `cargo bench --bench e2e -- --quick` (or `cargo test
//! --bench e2e -- --quick`, debug build) runs every phase small, in under
//! two minutes: a smoke test, not a measurement. `SLUICE_BENCH_ROWS` and
//! `SLUICE_BENCH_SECONDS` override the sizes; `SLUICE_BENCH_PHASES` (a
//! comma-separated list of ingest, transform, delivery, delta,
//! destinations, evolution, memory, hostile; `insert` is the ingest phase's
//! INSERT steps alone) runs only those. `hostile` is a soak, not a
//! measurement: random protocol messages and attack statements, and the
//! run fails if the server panics, writes outside its data directory or
//! changes a row. `memory` is a soak too: sustained COPY into Delta and
//! Parquet sinks for `SLUICE_BENCH_SOAK_SECONDS` (default 1800), failing
//! when the server's RssAnon has no plateau.

mod common;
mod suite;

use common::{postgres_available, start_postgres, start_sluice};
use suite::{Row, Scale};

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = Scale {
        quick,
        rows: env_u64("SLUICE_BENCH_ROWS").unwrap_or(if quick { 20_000 } else { 1_000_000 }),
        seconds: env_u64("SLUICE_BENCH_SECONDS").unwrap_or(if quick { 1 } else { 5 }),
    };
    let phases = std::env::var("SLUICE_BENCH_PHASES").unwrap_or_default();
    let run = |phase: &str| phases.is_empty() || phases.split(',').any(|p| p.trim() == phase);
    let mut rows: Vec<Row> = Vec::new();
    if run("ingest") || run("insert") {
        let sluice = start_sluice();
        let postgres = postgres_available(!quick).then(start_postgres);
        if postgres.is_none() {
            eprintln!("PostgreSQL server not found: ingest is measured without its peer");
        }
        eprintln!("ingest …");
        let inserts_only = !run("ingest");
        rows.extend(suite::ingest::run(scale, &sluice, postgres.as_ref(), inserts_only).await);
    }
    if run("transform") {
        eprintln!("transform …");
        rows.extend(suite::transform::run(scale).await);
    }
    if run("delivery") {
        eprintln!("delivery and queries …");
        rows.extend(suite::delivery::run(scale).await);
    }
    if run("delta") {
        eprintln!("Delta sinks …");
        rows.extend(suite::delta::run(scale).await);
    }
    if run("destinations") {
        eprintln!("destinations …");
        let postgres = postgres_available(false).then(start_postgres);
        rows.extend(suite::destinations::run(scale, postgres.as_ref()).await);
    }
    if run("evolution") {
        eprintln!("schema evolution …");
        rows.extend(suite::evolution::run(scale).await);
    }
    if run("memory") {
        eprintln!("memory soak …");
        rows.extend(suite::memory::run(scale).await);
    }
    if run("hostile") {
        eprintln!("hostile input …");
        rows.extend(suite::hostile::run(scale).await);
    }

    println!(
        "sluice {} e2e benchmark{}: {} rows, {} s per timed step",
        env!("CARGO_PKG_VERSION"),
        if quick { " (--quick smoke run)" } else { "" },
        scale.rows,
        scale.seconds
    );
    println!();
    println!("| phase | measurement | sluice | peer (same run) | ratio | sluice peak RSS MB |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.phase,
            r.what,
            r.sluice,
            if r.peer.is_empty() { "–" } else { &r.peer },
            r.ratio.map_or("–".to_string(), |x| format!("{x:.2}×")),
            r.peak_rss_mb.map_or("–".to_string(), |m| format!("{m:.0}"))
        );
    }
}
