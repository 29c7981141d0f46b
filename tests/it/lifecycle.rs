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
