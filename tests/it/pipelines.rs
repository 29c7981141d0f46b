//! Continuous queries: latency at idle, chains, per-record failures,
//! restart resume, and exactly-once output across `kill -9`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::{scalar as count, tear_last_frame, Server};

const CLICKS: &str = "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, email TEXT, url TEXT, status INT, payload TEXT) \
                      WITH (shards = 2, partition_key = 'user_id')";
const CLEAN: &str = "CREATE STREAM clean_clicks AS \
                     SELECT event_time, user_id, lower(url) AS url, status, CAST(payload AS INT) AS amount \
                     FROM clicks WHERE status < 500 AND url NOT LIKE '/internal/%'";

/// Polls `sql` (a count) until it returns `want`; returns how long it took.
async fn wait_for_count(client: &Client, sql: &str, want: i64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = count(client, sql).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{sql}: {got} after {within:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// At idle, a row crosses a chain of two pipelines well within a second
/// (what the rows hold is checked in `sql/pipelines_flow.slt`).
#[tokio::test]
async fn one_row_crosses_two_pipelines_within_a_second() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    // Rows written before the pipeline exists are processed too (start = earliest).
    client
        .batch_execute(
            "INSERT INTO clicks VALUES ('2026-11-25 13:00:00', 1, 'a@x.io', '/Home', 200, '10')",
        )
        .await
        .unwrap();
    client.batch_execute(CLEAN).await.unwrap();
    client
        .batch_execute("CREATE STREAM buys AS SELECT * FROM clean_clicks WHERE url = '/buy'")
        .await
        .unwrap();
    wait_for_count(
        &client,
        "SELECT count(*) FROM clean_clicks",
        1,
        Duration::from_secs(5),
    )
    .await;

    // At idle one row shows up in the derived stream well within a second.
    client
        .batch_execute(
            "INSERT INTO clicks VALUES ('2026-11-25 13:00:01', 2, 'b@x.io', '/BUY', 200, '7')",
        )
        .await
        .unwrap();
    let took = wait_for_count(
        &client,
        "SELECT count(*) FROM buys",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "idle latency through two pipelines: {took:?}"
    );
}

#[tokio::test]
async fn a_failing_record_goes_to_sluice_errors_and_the_rest_flows() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client.batch_execute(CLEAN).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO clicks VALUES ('2026-11-25 13:00:00', 1, NULL, '/a', 200, '1'), \
                                      ('2026-11-25 13:00:00', 1, NULL, '/b', 200, 'not a number'), \
                                      ('2026-11-25 13:00:00', 1, NULL, '/c', 200, '3')",
        )
        .await
        .unwrap();
    wait_for_count(
        &client,
        "SELECT count(*) FROM clean_clicks",
        2,
        Duration::from_secs(5),
    )
    .await;
    wait_for_count(
        &client,
        "SELECT count(*) FROM sluice.errors",
        1,
        Duration::from_secs(5),
    )
    .await;
    let row = client
        .query_one("SELECT stream, pipeline, stage, error_code, error_message, raw, attempts FROM sluice.errors", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "clicks");
    assert_eq!(row.get::<_, String>(1), "clean_clicks");
    assert_eq!(row.get::<_, String>(2), "transform");
    assert_eq!(row.get::<_, String>(3), "22P02");
    assert!(row.get::<_, String>(4).contains("not a number"));
    let raw: serde_json::Value = serde_json::from_str(&row.get::<_, String>(5)).unwrap();
    assert_eq!(raw["url"], "/b");
    assert_eq!(raw["payload"], "not a number");
    assert_eq!(row.get::<_, i32>(6), 1);
    assert_eq!(
        count(
            &client,
            "SELECT errors FROM sluice.pipelines WHERE name = 'clean_clicks'"
        )
        .await,
        1
    );
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_pipeline_failed_records{pipeline=\"clean_clicks\"} 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_pipeline_lag_records{pipeline=\"clean_clicks\"} 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn pipelines_survive_restart_and_drop_follows_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    {
        let client = server.client().await;
        client.batch_execute(CLICKS).await.unwrap();
        client.batch_execute(CLEAN).await.unwrap();
        client
            .batch_execute(
                "INSERT INTO clicks VALUES ('2026-11-25 13:00:00', 1, NULL, '/a', 200, '1')",
            )
            .await
            .unwrap();
        wait_for_count(
            &client,
            "SELECT count(*) FROM clean_clicks",
            1,
            Duration::from_secs(5),
        )
        .await;
    }
    assert!(server.terminate().success());
    let server = Server::start_in(dir.path());
    let client = server.client().await;
    client
        .batch_execute("INSERT INTO clicks VALUES ('2026-11-25 13:00:01', 2, NULL, '/b', 200, '2')")
        .await
        .unwrap();
    wait_for_count(
        &client,
        "SELECT count(*) FROM clean_clicks",
        2,
        Duration::from_secs(5),
    )
    .await;
    // Nothing is processed twice after the restart.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&client, "SELECT count(*) FROM clean_clicks").await, 2);

    let err = client
        .batch_execute("DROP STREAM clicks")
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "2BP01");
    client
        .batch_execute("DROP STREAM clicks CASCADE")
        .await
        .unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.pipelines").await,
        0
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.streams").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_keeps_derived_output_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE STREAM src (k BIGINT NOT NULL, n BIGINT NOT NULL, tag TEXT) WITH (shards = 3, partition_key = 'k'); \
                 CREATE STREAM out AS SELECT k, n * 10 AS n10, upper(tag) AS tag FROM src WHERE n % 3 <> 0; \
                 CREATE STREAM evens WITH (shards = 2, partition_key = 'tag') AS SELECT n, tag FROM src WHERE n % 2 = 0",
            )
            .await
            .unwrap();
    }
    let mut next = 0i64;
    for _round in 0..3 {
        let conninfo = server.conninfo();
        let start = next;
        // Two writers; each statement inserts 20 rows with distinct n.
        let writers: Vec<_> = (0..2i64)
            .map(|w| {
                let conninfo = conninfo.clone();
                tokio::spawn(async move {
                    let Ok((client, conn)) =
                        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await
                    else {
                        return;
                    };
                    tokio::spawn(conn);
                    for batch in 0i64.. {
                        let base = start + (batch * 2 + w) * 20;
                        let values: Vec<String> = (base..base + 20)
                            .map(|n| format!("({}, {n}, 't{n}')", n % 7))
                            .collect();
                        let sql = format!("INSERT INTO src VALUES {}", values.join(", "));
                        if client.batch_execute(&sql).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        for w in writers {
            w.await.unwrap();
        }
        server = Server::start_in(dir.path());
        let client = server.client().await;
        next = client
            .query_one("SELECT max(n) FROM src", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            + 1_000_000;
    }
    let client = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &client,
        "SELECT lag_records FROM sluice.pipelines WHERE name = 'out'",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "pipeline did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for r in client
        .query("SELECT n FROM src WHERE n % 3 <> 0", &[])
        .await
        .unwrap()
    {
        *expected.entry(r.get::<_, i64>(0) * 10).or_default() += 1;
    }
    let mut got: BTreeMap<i64, i64> = BTreeMap::new();
    for r in client.query("SELECT n10, tag FROM out", &[]).await.unwrap() {
        let n10: i64 = r.get(0);
        assert_eq!(r.get::<_, String>(1), format!("T{}", n10 / 10));
        *got.entry(n10).or_default() += 1;
    }
    assert!(
        expected.len() > 100,
        "the test ingested too little: {}",
        expected.len()
    );
    assert!(expected.values().all(|c| *c == 1), "source rows are unique");
    let duplicated: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicated in output: {duplicated:?}"
    );
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing from output: {missing:?}");
    assert_eq!(got.len(), expected.len());

    // The re-sharded derived stream (3 source shards into 2, by key) too.
    while count(
        &client,
        "SELECT lag_records FROM sluice.pipelines WHERE name = 'evens'",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "pipeline evens did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = count(&client, "SELECT count(*) FROM src WHERE n % 2 = 0").await;
    let rows = count(&client, "SELECT count(*) FROM evens").await;
    let distinct = count(&client, "SELECT count(DISTINCT n) FROM evens").await;
    assert_eq!(
        (rows, distinct),
        (want, want),
        "evens: every even row exactly once"
    );
    let shards_used = count(
        &client,
        "SELECT count(*) FROM sluice.shards WHERE stream = 'evens' AND records > 0",
    )
    .await;
    assert_eq!(shards_used, 2);
}

/// A crash can leave one output shard's last frame torn while another
/// shard's frame of the same batch is durable. Recovery must re-derive the
/// rows of the torn shard only.
#[tokio::test]
async fn a_torn_output_shard_is_rebuilt_without_duplicating_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    let before: std::collections::BTreeSet<_> = std::fs::read_dir(dir.path().join("streams"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    {
        let client = server.client().await;
        client
            .batch_execute("CREATE STREAM src (n BIGINT NOT NULL)")
            .await
            .unwrap();
        client
            .batch_execute(
                "CREATE STREAM spread WITH (shards = 2, partition_key = 'n') AS SELECT n FROM src",
            )
            .await
            .unwrap();
        let values: Vec<String> = (0..200).map(|n| format!("({n})")).collect();
        client
            .batch_execute(&format!("INSERT INTO src VALUES {}", values.join(", ")))
            .await
            .unwrap();
        wait_for_count(
            &client,
            "SELECT count(*) FROM spread",
            200,
            Duration::from_secs(5),
        )
        .await;
    }
    assert!(server.terminate().success());
    // The derived stream's log is the newest directory; tear shard 1's tail.
    let spread = std::fs::read_dir(dir.path().join("streams"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !before.contains(n))
        .max_by_key(|n| n.to_string_lossy().parse::<u64>().unwrap_or(0))
        .unwrap();
    tear_last_frame(&dir.path().join("streams").join(spread).join("shard-1"), 10);

    let server = Server::start_in(dir.path());
    let client = server.client().await;
    wait_for_count(
        &client,
        "SELECT count(*) FROM spread",
        200,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&client, "SELECT count(*) FROM spread").await, 200);
    assert_eq!(
        count(&client, "SELECT count(DISTINCT n) FROM spread").await,
        200
    );
}
