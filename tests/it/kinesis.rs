//! The Kinesis-compatible API, driven by a real AWS SDK (boto3).

use std::process::Command;

use crate::harness::Server;

#[tokio::test]
async fn boto3_producer_and_consumer() {
    let server = Server::start();
    server
        .client()
        .await
        .batch_execute(
            "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, url TEXT) \
             WITH (shards = 2, partition_key = 'user_id')",
        )
        .await
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/kinesis_boto3.py");
    let endpoint = format!("http://{}", server.http_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(endpoint).output()
    })
    .await
    .unwrap()
    .expect("python3 runs (and boto3 is installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "boto3 client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\"read\": 501"), "{stdout}");
    // Failed Kinesis records are dead letters like any other ingest failure.
    let client = server.client().await;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM sluice.errors WHERE stream = 'clicks' AND stage = 'ingest'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
