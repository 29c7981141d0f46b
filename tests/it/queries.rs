//! Queries are bounded: a CancelRequest, `statement_timeout` and a client
//! that goes away stop execution (57014), and the shared memory pool makes
//! a query that outgrows it spill or fail with 53200 while other sessions
//! go on.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::harness::{assert_answers, sqlstate, wait_for, Server};

/// Another session answers while a heavy query runs (bounded for a debug
/// build on a busy CI machine).
async fn answers_meanwhile(other: &tokio_postgres::Client) {
    let started = Instant::now();
    assert_answers(other).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

fn message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default()
}

/// Runs for minutes unless stopped (a debug build sums ~10^7 rows a second).
const ENDLESS: &str = "SELECT sum(v) FROM generate_series(1, 100000000000) AS t(v)";

#[tokio::test]
async fn a_cancel_request_stops_a_running_query() {
    let server = Server::start();
    let client = server.client().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await.unwrap();
    });
    let err = client.simple_query(ENDLESS).await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert!(message(&err).contains("user request"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The connection is usable afterwards.
    assert_answers(&client).await;
}

#[tokio::test]
async fn statement_timeout_stops_execution_in_both_protocols() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("SET statement_timeout = 300")
        .await
        .unwrap();
    let started = Instant::now();
    let err = client.simple_query(ENDLESS).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert!(message(&err).contains("statement timeout"), "{err:?}");
    let err = client.query(ENDLESS, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 1000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn the_configured_statement_timeout_is_every_session_default() {
    let server = Server::start_with_config("[limits]\nstatement_timeout_ms = 300\n");
    let client = server.client().await;
    let err = client.simple_query(ENDLESS).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
}

#[tokio::test]
async fn a_query_stops_when_its_client_disconnects() {
    let server = Server::start();
    let (client, connection) = tokio_postgres::connect(&server.conninfo(), NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    let query = tokio::spawn(async move {
        let _ = client.simple_query(ENDLESS).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client process "dies": its socket closes mid-query.
    conn.abort();
    query.abort();
    let log = server.data_dir().with_extension("log");
    wait_for(
        "the server to cancel the orphaned query",
        Duration::from_secs(20),
        async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("client disconnected; canceling its statement")
        },
    )
    .await;
}

/// A query that outgrows `query_memory_bytes` fails with 53200 (or spills)
/// instead of growing the server; another session answers meanwhile.
#[tokio::test]
async fn a_query_over_the_memory_pool_fails_with_53200_and_others_go_on() {
    let server = Server::start_with_config("[limits]\nquery_memory_bytes = 8388608\n");
    let client = server.client().await;
    let other = server.client().await;
    let heavy = tokio::spawn(async move {
        client
            .simple_query("SELECT array_agg(v) FROM generate_series(1, 20000000) AS t(v)")
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    answers_meanwhile(&other).await;
    let err = heavy.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "53200", "{err:?}");
}

/// A GROUP BY of millions of wide groups over a 32 MiB pool spills and
/// answers right, with the server's memory growing by far less than the
/// groups take in memory; another session answers meanwhile.
#[tokio::test]
async fn a_large_group_by_spills_within_the_memory_pool() {
    let server = Server::start_with_config("[limits]\nquery_memory_bytes = 33554432\n");
    let client = server.client().await;
    let other = server.client().await;
    let before = server.peak_rss_bytes();
    let heavy = tokio::spawn(async move {
        client
            .query_one(
                "SELECT count(*) FROM (SELECT k, count(*) AS n FROM \
                 (SELECT concat(repeat('x', 100), v % 1000000) AS k \
                  FROM generate_series(1, 2000000) AS t(v)) AS s GROUP BY k) AS g",
                &[],
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    answers_meanwhile(&other).await;
    let groups: i64 = heavy.await.unwrap().unwrap().get(0);
    assert_eq!(groups, 1_000_000);
    let grown = server.peak_rss_bytes().saturating_sub(before);
    println!("peak RSS grew by {} MiB", grown >> 20);
    assert!(
        grown < MAX_GROWTH_BYTES,
        "peak RSS grew by {} MiB",
        grown >> 20
    );
}

/// Peak RSS growth of the query above, measured on a debug build: 262 MiB
/// without a pool limit, 109 MiB with the 32 MiB pool (the pool, batches in
/// flight, spill buffers, allocator slack). The bound sits between.
const MAX_GROWTH_BYTES: u64 = 180 << 20;
