//! What a Delta sink keeps in memory is bounded by the table, not by how
//! many commits it has made: the publisher's snapshot is loaded anew
//! after 20 replayed versions (`sluice_sink_delta_snapshot_versions`),
//! and an external Delta table read at its latest version the same way.

use crate::harness::{scalar, Server};
use crate::sinks::{insert_range, CLICKS};

/// The value of a gauge for `sink` in the Prometheus text.
fn gauge(metrics: &str, name: &str, sink: &str) -> Option<f64> {
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn delta_snapshots_are_loaded_anew_instead_of_growing_with_commits() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', \
             rollover_interval = '1 h', compaction = 'off')",
        )
        .await
        .unwrap();
    let mut most_replayed = 0.0f64;
    for round in 0..45 {
        client
            .batch_execute(&insert_range("clicks", round * 10, round * 10 + 10))
            .await
            .unwrap();
        client.batch_execute("FLUSH SINK lake").await.unwrap();
        if round == 0 {
            client
                .batch_execute("CREATE EXTERNAL TABLE lake_now STORED AS DELTA LOCATION 'lake'")
                .await
                .unwrap();
        }
        // Read at its latest version, across its own reloads.
        assert_eq!(
            scalar(&client, "SELECT count(*) FROM lake_now").await,
            (round + 1) * 10
        );
        let replayed = gauge(
            &server.metrics().await,
            "sluice_sink_delta_snapshot_versions",
            "lake",
        )
        .expect("the gauge is exported");
        most_replayed = most_replayed.max(replayed);
    }
    let version = scalar(
        &client,
        "SELECT delta_version FROM sluice.sinks WHERE name = 'lake'",
    )
    .await;
    assert!(version >= 45, "one commit per flush at least: {version}");
    assert!(
        most_replayed <= 20.0,
        "a snapshot replays at most 20 versions before it is loaded anew: {most_replayed}"
    );
    assert!(most_replayed >= 10.0, "{most_replayed}");
    let outbox = gauge(
        &server.metrics().await,
        "sluice_sink_delta_outbox_changes",
        "lake",
    );
    assert_eq!(outbox, Some(0.0));
}

#[tokio::test]
async fn metrics_show_what_open_files_buffer_until_they_are_committed() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', \
             rollover_interval = '1 h')",
        )
        .await
        .unwrap();
    client
        .batch_execute(&insert_range("clicks", 0, 2000))
        .await
        .unwrap();
    // The rows reach the open file within a step of the shard task.
    let mut buffered = 0.0;
    for _ in 0..100 {
        buffered = gauge(
            &server.metrics().await,
            "sluice_sink_buffered_bytes",
            "lake",
        )
        .expect("the gauge is exported");
        if buffered > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(buffered > 0.0, "open files hold the rows: {buffered}");
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    let metrics = server.metrics().await;
    assert_eq!(
        gauge(&metrics, "sluice_sink_buffered_bytes", "lake"),
        Some(0.0)
    );
    assert_eq!(
        gauge(&metrics, "sluice_sink_compaction_bytes", "lake"),
        Some(0.0)
    );
}
