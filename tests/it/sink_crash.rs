//! Sinks across crashes: the process dies at each step of a commit
//! (fail points) or by kill -9 while one partition has rolled and another
//! is open; every record is delivered exactly once after the restart.

use std::time::Duration;

use crate::harness::{scalar, wait_for, Server};
use crate::sinks::{assert_exactly_once, delivered_values, insert_range, parquet_files, CLICKS};

/// Kills the server at `point` of a sink commit (the process aborts there,
/// as under kill -9), restarts it, and checks every record is in the files
/// exactly once, including records written after the restart.
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
            .batch_execute("CREATE SINK lake FROM clicks WITH (location = 'lake', rollover_interval = '200 ms')")
            .await
            .unwrap();
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the fail point {point} was not reached");
    // The first commit died before its files were moved into place: a
    // reader listing the directory (skipping `_` names, as Hive readers
    // do) sees none of them.
    let (staged, visible): (Vec<_>, Vec<_>) = parquet_files(&data.join("lake"))
        .into_iter()
        .partition(|f| f.components().any(|c| c.as_os_str() == "_sluice_staging"));
    assert!(
        visible.is_empty(),
        "{point}: uncommitted files in view: {visible:?}"
    );
    if point != "sink.before_upload" {
        assert!(!staged.is_empty(), "{point}: the upload is staged");
    }

    let server = Server::start_in(&data);
    let client = server.client().await;
    client
        .batch_execute(&insert_range("clicks", 1000, 1500))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    // Read the directory as any Hive reader would: exactly once each.
    assert_exactly_once(delivered_values(&data.join("lake"), "n"), 0..1500);
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT n) FROM lake").await,
        1500
    );
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 1500);
    let staged: Vec<_> = parquet_files(&data.join("lake/_sluice_staging"));
    assert!(staged.is_empty(), "{point}: left in staging: {staged:?}");
}

#[tokio::test]
async fn crash_before_upload_delivers_exactly_once() {
    crash_at("sink.before_upload").await;
}

#[tokio::test]
async fn crash_after_upload_before_commit_delivers_exactly_once() {
    crash_at("sink.after_upload").await;
}

#[tokio::test]
async fn crash_after_commit_delivers_exactly_once() {
    crash_at("sink.after_commit").await;
}

/// A partition that rolls while another stays open moves only its own
/// progress; after kill -9 the replay skips what it delivered and delivers
/// the open partition's records once.
#[tokio::test]
async fn partitions_roll_alone_and_replay_skips_what_they_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data);
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM tagged (n BIGINT NOT NULL, tag TEXT, pad TEXT); \
             CREATE SINK by_tag FROM tagged WITH (location = 'tagged', partition_by = 'tag', \
               rollover_size = '16 kB', rollover_interval = '1 h')",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO tagged SELECT n, 'small', 'x' FROM (SELECT unnest(range(0, 10)) AS n)",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO tagged SELECT n, 'big', repeat(md5(CAST(n AS TEXT)), 4) FROM (SELECT unnest(range(10, 3000)) AS n)",
        )
        .await
        .unwrap();
    wait_for(
        "the big partition to roll",
        Duration::from_secs(10),
        async || scalar(&client, "SELECT count(*) FROM by_tag WHERE tag = 'big'").await == 2990,
    )
    .await;
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM by_tag WHERE tag = 'small'").await,
        0,
        "the small partition is still open"
    );
    assert_eq!(
        client
            .query_one("SELECT committed_offsets FROM sluice.sinks", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "[0]",
        "the oldest open record bounds the committed offset"
    );
    drop(client);
    server.kill9();

    let server = Server::start_in(&data);
    let client = server.client().await;
    client
        .batch_execute("INSERT INTO tagged VALUES (3000, 'big', 'after'), (3001, 'small', 'after')")
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK by_tag").await.unwrap();
    assert_exactly_once(delivered_values(&data.join("tagged"), "n"), 0..3002);
    assert_eq!(scalar(&client, "SELECT count(*) FROM by_tag").await, 3002);
}
