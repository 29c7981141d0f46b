//! The Firehose API and KPL-aggregated records, driven by boto3's
//! `firehose` and `kinesis` clients and AWS's `aws-kinesis-agg` package
//! (tests/clients/firehose_boto3.py): a delivery stream is a sluice stream,
//! PutRecordBatch answers per record, aggregated records are stored as
//! their user records on both APIs.

use std::process::Command;

use serde_json::Value;

use crate::harness::{scalar, Server};

#[tokio::test]
async fn boto3_firehose_puts_and_kpl_aggregates_are_stored_per_user_record() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM fh (user_id BIGINT NOT NULL, url TEXT) WITH (shards = 2, partition_key = 'user_id'); \
             CREATE SINK fh_lake FROM fh WITH (location = 'fh_lake')",
        )
        .await
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/firehose_boto3.py");
    let endpoint = format!("http://{}", server.http_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(endpoint).output()
    })
    .await
    .unwrap()
    .expect("python3 with boto3 and aws-kinesis-agg (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(found["destinations"], serde_json::json!(["fh_lake"]));
    assert_eq!(found["too_many"], "InvalidArgumentException");
    assert_eq!(found["unknown"], "ResourceNotFoundException");
    assert_eq!(
        found["raw_read"], 301,
        "300 user records and one look-alike"
    );
    assert!(
        found["raw_aggregated_puts"].as_i64().unwrap() < 300,
        "the producer aggregated: {found}"
    );

    // 1 + 500 + 2 good + 300 de-aggregated user records, each once.
    assert_eq!(scalar(&client, "SELECT count(*) FROM fh").await, 803);
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT user_id) FROM fh").await,
        803
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM fh WHERE url = '/kpl'").await,
        300
    );
    // The bad record is a dead letter with its raw bytes.
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice.errors WHERE stream = 'fh' AND raw = 'not json'"
        )
        .await,
        1
    );
}
