//! Start, clean shutdown, restart; health endpoint.

use crate::harness::{scalar, Server};

#[tokio::test]
async fn sigterm_exits_cleanly_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE STREAM s (id BIGINT NOT NULL, v TEXT) WITH (shards = 3, partition_key = 'id', retention = '1 day');\
                 INSERT INTO s VALUES (1, 'a'), (2, 'b'), (3, 'c');",
            )
            .await
            .unwrap();
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");

    let server = Server::start_in(dir.path());
    let client = server.client().await;
    let rows = client
        .query("SELECT id, v FROM s ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]);
    let retention: String = client
        .query_one("SELECT retention FROM sluice.streams WHERE name = 's'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(retention, "1 day");
    // Appends continue after recovery with the next sequence numbers.
    client
        .batch_execute("INSERT INTO s VALUES (4, 'd')")
        .await
        .unwrap();
    let count = scalar(&client, "SELECT count(*) FROM s").await;
    assert_eq!(count, 4);
}

#[tokio::test]
async fn health_and_metrics_answer_over_http() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM m (a INT); INSERT INTO m VALUES (1), (2)")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let health: serde_json::Value = http
        .get(format!("http://{}/health", server.http_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["streams"], 1);
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_stream_records{")
                && l.contains("stream=\"m\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
    // The frame index of the shard that holds the rows is in memory.
    let index_bytes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_stream_index_bytes{") && l.contains("stream=\"m\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(index_bytes > 0.0, "{metrics}");
}

#[tokio::test]
async fn a_dropped_stream_leaves_no_files_and_a_new_one_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path());
    let client = server.client().await;
    let logs = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.path().join("streams"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = logs();
    client
        .batch_execute("CREATE STREAM d (a INT); INSERT INTO d VALUES (1), (2)")
        .await
        .unwrap();
    let old: Vec<String> = logs().difference(&before).cloned().collect();
    assert_eq!(old.len(), 1, "one log directory per stream");
    client
        .batch_execute("DROP STREAM d; CREATE STREAM d (a INT)")
        .await
        .unwrap();
    let count = scalar(&client, "SELECT count(*) FROM d").await;
    assert_eq!(count, 0);
    // Removal of the old log runs in the background; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while logs().contains(&old[0]) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !logs().contains(&old[0]),
        "the dropped stream's log is gone"
    );
    assert_eq!(
        logs().len(),
        before.len() + 1,
        "the new stream has a fresh log"
    );
}

/// SIGTERM while one client idles and another is mid-COPY: the idle one is
/// told 57P01, the COPY still completes and is acknowledged, and its rows
/// are there after a restart (the logs closed after the statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_statements_in_flight_and_tells_idle_clients() {
    use futures::SinkExt;

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    let (_idle, idle_connection) =
        tokio_postgres::connect(&server.conninfo(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let idle_connection = tokio::spawn(idle_connection);
    let writer = server.client().await;
    writer
        .batch_execute("CREATE STREAM s (n BIGINT NOT NULL)")
        .await
        .unwrap();
    let copy = writer.copy_in("COPY s FROM STDIN").await.unwrap();
    futures::pin_mut!(copy);
    copy.send(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();

    let terminated = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), idle_connection)
        .await
        .expect("the idle connection is closed at shutdown")
        .unwrap();
    let err = ended.expect_err("the idle client is told why");
    assert_eq!(crate::harness::sqlstate(&err), "57P01", "{err}");

    copy.send(bytes::Bytes::from_static(b"3\n")).await.unwrap();
    let rows = copy.finish().await.expect("the COPY in flight completes");
    assert_eq!(rows, 3);
    let (_server, status) = terminated.await.unwrap();
    assert!(status.success(), "{status:?}");

    let server = Server::start_in(dir.path());
    let client = server.client().await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM s").await, 3);
}

/// A log directory the catalog does not list (a lost or replaced
/// catalog.redb) is moved aside, never deleted, and `sluice.streams` shows
/// it as quarantined, with where it went.
#[tokio::test]
async fn unlisted_logs_are_quarantined_and_shown_in_sluice_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let stranger = data.join("streams").join("424242").join("shard-0");
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::write(stranger.join("00000000000000000000.seg"), vec![7u8; 100]).unwrap();
    let server = Server::start_in(&data);
    let client = server.client().await;
    let row = client
        .query_one(
            "SELECT name, shards, bytes, last_error FROM sluice.streams WHERE state = 'quarantined'",
            &[],
        )
        .await
        .unwrap();
    let name: &str = row.get(0);
    assert!(name.starts_with("quarantine/streams/424242-"), "{name}");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 100);
    assert!(row.get::<_, &str>(3).contains("never deleted"));
    assert!(data.join(name).join("shard-0").exists());
}
