//! Delta sinks and Delta tables, read by delta-rs's Python package and
//! Polars (engines other than sluice): every commit exactly once, a
//! compaction as one swap, statistics in the log, each crash window of a
//! commit, and `CREATE EXTERNAL TABLE … STORED AS DELTA` with time travel.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{explain, python_json, scalar, sqlstate, wait_for, Server};
use crate::sinks::{insert_range, CLICKS};

/// `python3 tests/clients/delta_tables.py args…` with `env`, parsed.
pub fn delta_py(args: &[&str], env: &[(&str, &str)]) -> Value {
    python_json("delta_tables.py", args, env)
}

fn read_delta(dir: &Path, version: Option<i64>) -> Value {
    read_delta_at(dir.to_string_lossy().as_ref(), version, &[])
}

/// What delta-rs reads of the table at `table` (a directory or an s3:// URL).
pub fn read_delta_at(table: &str, version: Option<i64>, env: &[(&str, &str)]) -> Value {
    let version = version.map(|v| v.to_string());
    let mut args = vec!["read", table, "n"];
    if let Some(v) = &version {
        args.push(v);
    }
    delta_py(&args, env)
}

/// Waits for a sink's first compaction, running `each` (checks that must
/// hold at every snapshot) at every poll meanwhile, then flushes.
pub async fn until_compacted(client: &tokio_postgres::Client, sink: &str, mut each: impl FnMut()) {
    let sql = format!("SELECT compactions FROM sluice.sinks WHERE name = '{sink}'");
    wait_for("a compaction", Duration::from_secs(60), async || {
        each();
        scalar(client, &sql).await > 0
    })
    .await;
    client
        .batch_execute(&format!("FLUSH SINK {sink}"))
        .await
        .unwrap();
}

/// Rows per `dt/hour` partition as sluice's own table counts them.
pub async fn sluice_partitions(client: &tokio_postgres::Client, table: &str) -> Value {
    let rows = client
        .query(
            &format!("SELECT CAST(dt AS TEXT), hour, count(*) FROM {table} GROUP BY 1, 2"),
            &[],
        )
        .await
        .unwrap();
    let mut out = serde_json::Map::new();
    for row in rows {
        let key = format!("{}/{}", row.get::<_, String>(0), row.get::<_, i32>(1));
        out.insert(key, Value::from(row.get::<_, i64>(2)));
    }
    Value::Object(out)
}

#[tokio::test]
async fn delta_sink_commits_are_read_exactly_once_and_compaction_is_one_swap() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', \
             rollover_interval = '1 h', compaction_min_files = 3)",
        )
        .await
        .unwrap();
    // Three flushes of one file per shard each: small files to compact.
    let mut first_version = None;
    for round in 0..3 {
        client
            .batch_execute(&insert_range("clicks", round * 100, (round + 1) * 100))
            .await
            .unwrap();
        client.batch_execute("FLUSH SINK lake").await.unwrap();
        first_version.get_or_insert(
            scalar(
                &client,
                "SELECT delta_version FROM sluice.sinks WHERE name = 'lake'",
            )
            .await,
        );
    }
    let first_version = first_version.unwrap();
    let dir = server.data_dir().join("lake");
    let before = read_delta(&dir, None);
    assert_eq!(before["rows"], 300, "{before}");
    assert_eq!(before["distinct"], 300, "{before}");
    assert_eq!(before["polars_rows"], 300, "{before}");
    assert_eq!(
        before["stats_rows"], 300,
        "every add carries numRecords: {before}"
    );
    assert_eq!(
        before["partition_columns"],
        serde_json::json!(["dt", "hour"])
    );
    assert_eq!(before["schema"]["hour"], "int32", "{before}");
    assert_eq!(before["schema"]["dt"], "date32[day]", "{before}");
    let files_before = before["files"].as_i64().unwrap();

    assert_eq!(
        before["partitions"],
        sluice_partitions(&client, "lake").await
    );

    // Background compaction: one Delta commit that removes the small files
    // and adds their merge; every snapshot read meanwhile has each record
    // once.
    let mut reads_during = 0;
    until_compacted(&client, "lake", || {
        let during = read_delta(&dir, None);
        assert_eq!(during["rows"], 300, "{during}");
        assert_eq!(during["distinct"], 300, "{during}");
        reads_during += 1;
    })
    .await;
    assert!(reads_during > 0);
    let after = read_delta(&dir, None);
    assert_eq!(after["rows"], 300, "{after}");
    assert_eq!(after["distinct"], 300, "{after}");
    assert!(
        after["files"].as_i64().unwrap() <= files_before,
        "{after} vs {before}"
    );
    assert_eq!(
        after["files"].as_i64().unwrap(),
        scalar(
            &client,
            "SELECT files FROM sluice.sinks WHERE name = 'lake'"
        )
        .await,
        "the log lists the catalog's files"
    );
    assert_eq!(
        after["partitions"],
        sluice_partitions(&client, "lake").await
    );
    assert!(
        after["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "OPTIMIZE"),
        "{after}"
    );
    // The compacted-away files stay for readers of older versions.
    let older = read_delta(&dir, Some(before["version"].as_i64().unwrap()));
    assert_eq!(older["rows"], 300, "{older}");

    let row = client
        .query_one(
            "SELECT format, delta_version FROM sluice.sinks WHERE name = 'lake'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delta");
    assert_eq!(row.get::<_, Option<i64>>(1), after["version"].as_i64());

    // The same table through sluice's own Delta reader, now and at the
    // version the first FLUSH SINK returned at (its 100 records).
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE lake_now STORED AS DELTA LOCATION 'lake'; \
             CREATE EXTERNAL TABLE lake_first STORED AS DELTA LOCATION 'lake' \
               OPTIONS ('version' '{first_version}')"
        ))
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT n) FROM lake_now").await,
        300
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM lake_first").await,
        100
    );
    assert_eq!(
        read_delta(&dir, Some(first_version))["rows"],
        100,
        "delta-rs agrees"
    );
    // A table without a version follows the log; a pinned one does not.
    client
        .batch_execute(&insert_range("clicks", 300, 350))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT n) FROM lake_now").await,
        350
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM lake_first").await,
        100
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM lake_now WHERE hour = 11").await,
        scalar(&client, "SELECT count(*) FROM lake WHERE hour = 11").await
    );
}

/// Kills the server at `point` of a Delta sink's commit, restarts it, and
/// checks the Delta log lists every record exactly once.
async fn crash_at(point: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::spawn_with(&data, None, &[("SLUICE_FAIL_POINT", point)]);
    {
        let client = server.client().await;
        client.batch_execute(CLICKS).await.unwrap();
        client
            .batch_execute(&insert_range("clicks", 0, 1000))
            .await
            .unwrap();
        client
            .batch_execute(
                "CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', \
                 rollover_interval = '200 ms')",
            )
            .await
            .unwrap();
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the fail point {point} was not reached");

    let server = Server::start_in(&data);
    let client = server.client().await;
    client
        .batch_execute(&insert_range("clicks", 1000, 1500))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    let read = read_delta(&data.join("lake"), None);
    assert_eq!(read["rows"], 1500, "{point}: {read}");
    assert_eq!(read["distinct"], 1500, "{point}: {read}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 1500);

    // Once more with nothing queued: FLUSH SINK answers at once.
    drop(client);
    let mut server = server;
    assert!(server.terminate().success());
    let server = Server::start_in(&data);
    let client = server.client().await;
    tokio::time::timeout(
        Duration::from_secs(20),
        client.batch_execute("FLUSH SINK lake"),
    )
    .await
    .expect("FLUSH SINK with an empty outbox answers")
    .unwrap();
    assert_eq!(read_delta(&data.join("lake"), None)["rows"], 1500);
}

#[tokio::test]
async fn delta_crash_after_upload_before_commit() {
    crash_at("sink.after_upload").await;
}

/// The catalog has the commit, the Delta log not yet: the queued change
/// is published at restart.
#[tokio::test]
async fn delta_crash_after_catalog_commit_before_delta_commit() {
    crash_at("sink.after_commit").await;
}

/// The Delta log has the commit, the catalog still queues it: the log's
/// `txn` version shows it is there, and it is not committed twice.
#[tokio::test]
async fn delta_crash_after_delta_commit_before_forgetting_it() {
    crash_at("sink.after_delta_commit").await;
}

/// A Delta table written by delta-rs (not sluice): read, pruned by its
/// partitions, and read at an older version; bad options are refused.
#[tokio::test]
async fn external_delta_tables_read_any_writer_with_time_travel() {
    let server = Server::start();
    let client = server.client().await;
    let dir = server.data_dir().join("sales");
    let written = delta_py(&["write", dir.to_string_lossy().as_ref()], &[]);
    assert_eq!(written["version"], 1);
    client
        .batch_execute(
            "CREATE EXTERNAL TABLE sales STORED AS DELTA LOCATION 'sales'; \
             CREATE EXTERNAL TABLE sales_v0 STORED AS DELTA LOCATION 'sales' OPTIONS ('version' '0')",
        )
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM sales").await, 5);
    assert_eq!(scalar(&client, "SELECT count(*) FROM sales_v0").await, 3);
    assert_eq!(
        scalar(
            &client,
            "SELECT CAST(sum(id) AS BIGINT) FROM sales WHERE region = 'us'"
        )
        .await,
        6
    );
    // Travel by time: the version current a second from now (both commits).
    let later = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE sales_then STORED AS DELTA LOCATION 'sales' OPTIONS ('timestamp' '{later}')"
        ))
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM sales_then").await, 5);
    let plan = explain(&client, "EXPLAIN SELECT id FROM sales WHERE region = 'ap'").await;
    assert!(
        plan.contains("file_groups={1 group"),
        "one partition's file is scanned: {plan}"
    );

    let err = client
        .batch_execute(
            "CREATE EXTERNAL TABLE bad STORED AS DELTA LOCATION 'sales' OPTIONS ('version' 'x')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
    std::fs::create_dir_all(server.data_dir().join("empty")).unwrap();
    let err = client
        .batch_execute("CREATE EXTERNAL TABLE none STORED AS DELTA LOCATION 'empty'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err:?}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("no Delta table"), "{message}");
}

/// Many commits: the log gets a checkpoint (readers replay at most ten
/// JSON commits), and files a compaction replaced are deleted once older
/// than `file_retention`, while every version readers can still open
/// keeps its files.
#[tokio::test]
async fn delta_sink_checkpoints_and_vacuums_after_the_retention() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM ev (n BIGINT NOT NULL); \
             CREATE SINK lake FROM ev WITH (location = 'lake', format = 'delta', \
               rollover_interval = '1 h', compaction_min_files = 12, file_retention = '1 s')",
        )
        .await
        .unwrap();
    for round in 0..12 {
        client
            .batch_execute(&format!(
                "INSERT INTO ev SELECT unnest(range({}, {}))",
                round * 10,
                round * 10 + 10
            ))
            .await
            .unwrap();
        client.batch_execute("FLUSH SINK lake").await.unwrap();
    }
    let dir = server.data_dir().join("lake");
    let checkpoints: Vec<_> = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(".checkpoint.parquet")
        })
        .collect();
    assert!(!checkpoints.is_empty(), "a checkpoint after 10 commits");
    let config = &read_delta(&dir, None)["configuration"];
    assert_eq!(
        config["delta.deletedFileRetentionDuration"],
        "interval 1 seconds"
    );
    assert_eq!(config["delta.checkpointInterval"], "10");
    until_compacted(&client, "lake", || {}).await;
    let read = read_delta(&dir, None);
    assert_eq!(read["rows"], 120, "{read}");
    assert_eq!(read["distinct"], 120, "{read}");
    // The retired files go; only the live ones stay on disk.
    wait_for("retired files to go", Duration::from_secs(20), async || {
        let data_files = crate::sinks::parquet_files(&dir)
            .into_iter()
            .filter(|f| !f.starts_with(dir.join("_delta_log")))
            .count();
        data_files as i64 == read["files"].as_i64().unwrap()
    })
    .await;
    assert_eq!(read_delta(&dir, None)["rows"], 120);
}

/// kill -9 while four writers insert and the Delta sink commits every
/// 100 ms (and compacts): after the restart, every acknowledged record is
/// in the Delta table exactly once, as delta-rs reads it.
#[tokio::test]
async fn delta_sink_kill9_during_ingest_keeps_every_acknowledged_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data);
    let conninfo = server.conninfo();
    {
        let client = server.client().await;
        client.batch_execute(CLICKS).await.unwrap();
        client
            .batch_execute(
                "CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', \
                 rollover_interval = '100 ms', compaction_min_files = 4)",
            )
            .await
            .unwrap();
    }
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (conninfo, acked) = (conninfo.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let Ok(client) = crate::harness::connect(&conninfo).await else {
                return;
            };
            for batch in 0.. {
                let from = w * 1_000_000 + batch * 10;
                if client
                    .batch_execute(&insert_range("clicks", from, from + 10))
                    .await
                    .is_err()
                {
                    return;
                }
                acked.lock().unwrap().extend(from..from + 10);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the writers made progress: {}",
        acked.len()
    );

    let server = Server::start_in(&data);
    let client = server.client().await;
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    let read = read_delta(&data.join("lake"), None);
    // Statements in flight at the kill may or may not have landed; every
    // acknowledged one did, and nothing is there twice.
    let stored = scalar(&client, "SELECT count(*) FROM clicks").await;
    assert!(stored >= acked.len() as i64, "{stored} < {}", acked.len());
    assert_eq!(read["rows"], stored, "{read}");
    assert_eq!(read["distinct"], stored, "{read}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, stored);
    let missing = scalar(
        &client,
        &format!(
            "SELECT count(*) FROM (SELECT unnest(make_array({})) AS n) a WHERE n NOT IN (SELECT n FROM lake)",
            acked.iter().take(2000).map(|n| n.to_string()).collect::<Vec<_>>().join(",")
        ),
    )
    .await;
    assert_eq!(missing, 0, "acknowledged records missing from the sink");
}
