//! Injected storage faults (`SLUICE_FAIL_POINT=<point>=<errno>@<trigger>`,
//! active while the trigger file exists) in a running server: each write
//! is refused with the right SQLSTATE, nothing acknowledged is lost, and
//! the server recovers when the fault is gone (a failed fsync excepted:
//! that stream stops taking writes until a restart).

use std::path::Path;

use std::time::Duration;

use crate::harness::{scalar, sqlstate, wait_for, Server};

/// A server whose `point` fails with `errno` while `<tmp>/fault` exists.
fn faulty_server(tmp: &Path, point: &str, errno: &str) -> (Server, std::path::PathBuf) {
    faulty_server_with(tmp, point, errno, None)
}

/// [`faulty_server`] with the config file `config`.
fn faulty_server_with(
    tmp: &Path,
    point: &str,
    errno: &str,
    config: Option<&Path>,
) -> (Server, std::path::PathBuf) {
    let trigger = tmp.join("fault");
    let spec = format!("{point}={errno}@{}", trigger.display());
    let server = Server::spawn_with(&tmp.join("data"), config, &[("SLUICE_FAIL_POINT", &spec)]);
    (server, trigger)
}

#[tokio::test]
async fn a_full_disk_refuses_the_write_with_53100_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, trigger) = faulty_server(tmp.path(), "log.write", "ENOSPC");
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM t (k BIGINT, v TEXT) WITH (shards = 4, partition_key = 'k'); \
             INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .unwrap();
    std::fs::write(&trigger, b"").unwrap();
    let err = client
        .batch_execute("INSERT INTO t VALUES (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53100");
    let message = err.as_db_error().unwrap().message().to_string();
    assert_eq!(
        message, "disk full: No space left on device (os error 28)",
        "one clean message"
    );
    std::fs::remove_file(&trigger).unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (7, 'g'), (8, 'h'), (9, 'i')")
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT sum(k) FROM t").await,
        1 + 2 + 7 + 8 + 9,
        "the refused statement left no row in any shard"
    );
}

/// Whether `dir` is on ext4 or XFS, where a group's overwrites across
/// shards share one fsync's device flush (`log::durable`).
fn flush_is_shared(dir: &Path) -> bool {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .unwrap();
    let fs = String::from_utf8_lossy(&out.stdout);
    matches!(fs.trim(), "ext2/ext3" | "xfs")
}

#[tokio::test]
async fn a_failed_writeback_of_a_group_over_shards_stops_the_stream_as_a_failed_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, trigger) = faulty_server(tmp.path(), "log.writeback", "EIO");
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM t (k BIGINT) WITH (shards = 2, partition_key = 'k'); \
             INSERT INTO t VALUES (1), (2), (3), (4), (5), (6), (7), (8)",
        )
        .await
        .unwrap();
    let filled = "SELECT count(*) FROM sluice.shards WHERE stream = 't' AND records > 0";
    assert_eq!(scalar(&client, filled).await, 2, "rows in both shards");
    // Both shards' next writes overwrite the zeros written ahead of the
    // first: one is waited to the device, the other fsynced.
    std::fs::write(&trigger, b"").unwrap();
    let next = client
        .batch_execute("INSERT INTO t VALUES (11), (12), (13), (14), (15), (16), (17), (18)")
        .await;
    if flush_is_shared(tmp.path()) {
        assert_eq!(sqlstate(&next.unwrap_err()), "58030");
        assert_eq!(scalar(&client, "SELECT sum(k) FROM t").await, 36);
    } else {
        // Elsewhere every shard is fsynced and the point is never reached.
        next.unwrap();
        assert_eq!(scalar(&client, "SELECT sum(k) FROM t").await, 36 + 116);
    }
}

#[tokio::test]
async fn a_failed_fsync_stops_the_stream_for_writes_until_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut server, trigger) = faulty_server(tmp.path(), "log.fsync", "EIO");
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE STREAM t (k BIGINT) WITH (shards = 2, partition_key = 'k'); \
                 CREATE STREAM other (k BIGINT); \
                 INSERT INTO t VALUES (1), (2)",
            )
            .await
            .unwrap();
        std::fs::write(&trigger, b"").unwrap();
        let err = client
            .batch_execute("INSERT INTO t VALUES (3), (4)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "58030");
        std::fs::remove_file(&trigger).unwrap();
        // The fault is gone, but a failed fsync proves nothing about the
        // pages it covered: the stream keeps refusing writes.
        let err = client
            .batch_execute("INSERT INTO t VALUES (5)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "58030");
        assert!(
            err.as_db_error().unwrap().message().contains("restart"),
            "{err:?}"
        );
        // Reads go on; other streams take writes.
        assert_eq!(scalar(&client, "SELECT sum(k) FROM t").await, 3);
        client
            .batch_execute("INSERT INTO other VALUES (10)")
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT state, last_error FROM sluice.streams WHERE name = 't'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "stopped");
        assert!(row.get::<_, Option<&str>>(1).unwrap().contains("fsync"));
    }
    server.terminate();
    let server = Server::start_in(&tmp.path().join("data"));
    let client = server.client().await;
    client
        .batch_execute("INSERT INTO t VALUES (6)")
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT sum(k) FROM t").await,
        1 + 2 + 6,
        "the statement whose fsync failed is absent after the restart"
    );
    let state: String = client
        .query_one("SELECT state FROM sluice.streams WHERE name = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "running");
}

#[tokio::test]
async fn a_full_disk_under_the_catalog_fails_ddl_and_sink_commits_until_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, trigger) = faulty_server(tmp.path(), "catalog.write", "ENOSPC");
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM a (n BIGINT); \
             CREATE SINK lake FROM a WITH (location = 'lake', rollover_interval = '100 ms'); \
             INSERT INTO a VALUES (1), (2); \
             FLUSH SINK lake",
        )
        .await
        .unwrap();
    std::fs::write(&trigger, b"").unwrap();
    let err = client
        .batch_execute("CREATE STREAM b (n BIGINT)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53100", "{err:?}");
    // The log is not the catalog: ingest goes on, delivery waits.
    client
        .batch_execute("INSERT INTO a VALUES (3)")
        .await
        .unwrap();
    let err = client.batch_execute("FLUSH SINK lake").await.unwrap_err();
    assert_eq!(sqlstate(&err), "58030", "{err:?}");

    std::fs::remove_file(&trigger).unwrap();
    // No restart: the catalog is reopened and works again.
    client
        .batch_execute("CREATE STREAM b (n BIGINT)")
        .await
        .unwrap();
    wait_for(
        "the sink to deliver again",
        Duration::from_secs(30),
        async || client.batch_execute("FLUSH SINK lake").await.is_ok(),
    )
    .await;
    assert_eq!(scalar(&client, "SELECT sum(n) FROM lake").await, 6);
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 3);
}

/// A sink commits a file only after fsyncing it and its directories: while
/// the fsync fails nothing is committed (the sink retries, lag visible),
/// and once it succeeds every record is delivered exactly once.
#[tokio::test]
async fn a_sink_commits_only_files_it_could_fsync() {
    sink_fault("sink.fsync", "EIO", "fsync").await;
}

/// The same for a full disk while uploading.
#[tokio::test]
async fn a_sink_upload_on_a_full_disk_is_retried_and_delivered_once() {
    sink_fault("sink.upload", "ENOSPC", "No space left").await;
}

async fn sink_fault(point: &str, errno: &str, reported: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (server, trigger) = faulty_server(tmp.path(), point, errno);
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM a (n BIGINT, tag TEXT); \
             CREATE SINK lake FROM a WITH (location = 'lake', partition_by = 'tag', \
               rollover_interval = '100 ms'); \
             INSERT INTO a VALUES (1, 'x'), (2, 'y'); \
             FLUSH SINK lake",
        )
        .await
        .unwrap();
    std::fs::write(&trigger, b"").unwrap();
    client
        .batch_execute("INSERT INTO a VALUES (3, 'z'), (4, 'x')")
        .await
        .unwrap();
    let err = client.batch_execute("FLUSH SINK lake").await.unwrap_err();
    assert_eq!(sqlstate(&err), "58030", "{err:?}");
    let row = client
        .query_one(
            "SELECT state, last_error, lag_records FROM sluice.sinks WHERE name = 'lake'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "retrying");
    let last_error = row.get::<_, Option<&str>>(1).unwrap();
    assert!(last_error.contains(reported), "{last_error}");
    assert_eq!(row.get::<_, i64>(2), 2);
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 2);

    std::fs::remove_file(&trigger).unwrap();
    wait_for(
        "the sink to deliver again",
        Duration::from_secs(30),
        async || client.batch_execute("FLUSH SINK lake").await.is_ok(),
    )
    .await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 4);
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT n) FROM lake").await,
        4
    );
    let files = crate::harness::files_with_extension(&tmp.path().join("data/lake"), "parquet");
    assert_eq!(
        files.len() as i64,
        scalar(&client, "SELECT files FROM sluice.sinks").await,
        "no file the catalog does not list: {files:?}"
    );
}

/// A request's good rows and its dead letters: when the dead letters cannot
/// be written the request fails and none of its rows is stored, so the
/// client's retry stores each exactly once.
#[tokio::test]
async fn a_failed_dead_letter_write_stores_none_of_the_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, trigger) = faulty_server(tmp.path(), "errors.append", "EIO");
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM t (n BIGINT NOT NULL)")
        .await
        .unwrap();
    let post = || async {
        reqwest::Client::new()
            .post(format!("http://{}/v1/streams/t/records", server.http_addr))
            .header("content-type", "application/x-ndjson")
            .body("{\"n\": 1}\n{\"n\": \"bad\"}\n{\"n\": 2}\n")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    std::fs::write(&trigger, b"").unwrap();
    assert_eq!(post().await, 500);
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await, 0);
    // The same through COPY … ON_ERROR dead_letter.
    let (_, stderr, _) = server
        .psql("COPY t FROM STDIN WITH (FORMAT csv, ON_ERROR 'dead_letter');\n1\nbad\n2\n\\.\n");
    assert!(stderr.contains("ERROR:  I/O error"), "{stderr}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await, 0);

    std::fs::remove_file(&trigger).unwrap();
    assert_eq!(post().await, 200);
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await, 2);
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice.errors WHERE stream = 't'"
        )
        .await,
        1
    );
}

/// A large COPY goes to staging files while it arrives (`log::direct`:
/// around the page cache where the filesystem allows). When those writes
/// fail on a full disk the COPY fails with 53100, stores none of its rows
/// and leaves no staging file; once space returns the same COPY is stored
/// whole and reads back row for row.
#[tokio::test]
async fn a_full_disk_under_a_large_copy_fails_it_whole_and_recovers() {
    use crate::crash::{copy_csv, create_big, csv_rows};
    use crate::harness::staged_bulks;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("sluice.toml");
    std::fs::write(&config, "[limits]\nmax_statement_bytes = 1048576\n").unwrap();
    let (server, trigger) =
        faulty_server_with(tmp.path(), "log.bulk_write", "ENOSPC", Some(&config));
    let client = server.client().await;
    create_big(&client).await;
    let rows = 40_000;
    let bulk = csv_rows(0, rows);
    std::fs::write(&trigger, b"").unwrap();
    let err = copy_csv(&client, &bulk).await.unwrap_err();
    assert_eq!(sqlstate(&err), "53100", "{err:?}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM big").await, 0);
    assert_eq!(staged_bulks(server.data_dir()), 0, "no staging file stays");

    std::fs::remove_file(&trigger).unwrap();
    assert_eq!(copy_csv(&client, &bulk).await.unwrap(), rows as u64);
    let (count, distinct, body_bytes): (i64, i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT id), sum(length(body)) FROM big",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((count, distinct), (rows, rows));
    let expected: i64 = (0..rows)
        .map(|i| format!("payload-{i}-{}", "z".repeat(80)).len() as i64)
        .sum();
    assert_eq!(body_bytes, expected, "every byte of every row read back");
}
