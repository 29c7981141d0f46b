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

/// The CBOR 1.1 protocol (the AWS Java SDK's default): blobs travel as
/// byte strings and timestamps as tag-1 epoch values.
#[tokio::test]
async fn cbor_protocol_round_trip() {
    use ciborium::Value as Cbor;
    let server = Server::start();
    let http = reqwest::Client::new();
    let call = |target: &'static str, body: Vec<(&'static str, Cbor)>| {
        let http = http.clone();
        let url = format!("http://{}/", server.http_addr);
        async move {
            let map = Cbor::Map(
                body.into_iter()
                    .map(|(k, v)| (Cbor::Text(k.into()), v))
                    .collect(),
            );
            let mut bytes = Vec::new();
            ciborium::ser::into_writer(&map, &mut bytes).unwrap();
            let response = http
                .post(url)
                .header("x-amz-target", format!("Kinesis_20131202.{target}"))
                .header("content-type", "application/x-amz-cbor-1.1")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert_eq!(
                response.headers()["content-type"].to_str().unwrap(),
                "application/x-amz-cbor-1.1"
            );
            let body = response.bytes().await.unwrap();
            let value: Cbor = ciborium::de::from_reader(body.as_ref()).unwrap();
            (status, value)
        }
    };
    let get = |value: &Cbor, key: &str| -> Cbor {
        value
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in {value:?}"))
    };
    let name = || Cbor::Text("c".into());
    let (status, _) = call(
        "CreateStream",
        vec![
            ("StreamName", name()),
            ("ShardCount", Cbor::Integer(1.into())),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let payload = vec![0u8, 255, 1, 2];
    let (status, put) = call(
        "PutRecord",
        vec![
            ("StreamName", name()),
            ("Data", Cbor::Bytes(payload.clone())),
            ("PartitionKey", Cbor::Text("k".into())),
        ],
    )
    .await;
    assert_eq!(status, 200, "{put:?}");
    let shard = get(&put, "ShardId");
    let (_, it) = call(
        "GetShardIterator",
        vec![
            ("StreamName", name()),
            ("ShardId", shard),
            ("ShardIteratorType", Cbor::Text("TRIM_HORIZON".into())),
        ],
    )
    .await;
    let (status, records) = call(
        "GetRecords",
        vec![("ShardIterator", get(&it, "ShardIterator"))],
    )
    .await;
    assert_eq!(status, 200);
    let record = get(&records, "Records").as_array().unwrap()[0].clone();
    assert_eq!(get(&record, "Data").as_bytes(), Some(&payload));
    assert!(matches!(
        get(&record, "ApproximateArrivalTimestamp"),
        Cbor::Tag(1, _)
    ));
    let (status, err) = call(
        "DescribeStreamSummary",
        vec![("StreamName", Cbor::Text("missing".into()))],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        get(&err, "__type").as_text(),
        Some("ResourceNotFoundException")
    );
}

/// One Kinesis JSON 1.1 call: (HTTP status, body).
async fn kinesis_call(
    server: &Server,
    target: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/", server.http_addr))
        .header("X-Amz-Target", format!("Kinesis_20131202.{target}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A request whose every record is bad is answered record by record (as
/// AWS does), not with an error SDKs would retry forever, and every record
/// is a dead letter.
#[tokio::test]
async fn a_request_of_only_bad_records_gets_per_record_failures() {
    use base64::Engine as _;
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM plain (n BIGINT NOT NULL) WITH (shards = 2)")
        .await
        .unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(b"{\"n\": \"not a number\"}");
    let records: Vec<_> = (0..3)
        .map(|i| serde_json::json!({"Data": data, "PartitionKey": format!("k{i}")}))
        .collect();
    let (status, body) = kinesis_call(
        &server,
        "PutRecords",
        serde_json::json!({"StreamName": "plain", "Records": records}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["FailedRecordCount"], 3, "{body}");
    assert!(body["Records"][0]["ErrorCode"].is_string(), "{body}");
    let dead = crate::harness::scalar(
        &client,
        "SELECT count(*) FROM sluice.errors WHERE stream = 'plain'",
    )
    .await;
    assert_eq!(dead, 3);
}

/// Shard iterators and sequence numbers come from clients: a forged shard
/// or a sequence at the top of the range is refused, never indexed or
/// wrapped around.
#[tokio::test]
async fn forged_iterators_and_overflowing_sequences_are_refused() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = Server::start();
    server
        .client()
        .await
        .batch_execute("CREATE STREAM s (n BIGINT) WITH (shards = 2); INSERT INTO s VALUES (1)")
        .await
        .unwrap();
    let (status, body) = kinesis_call(
        &server,
        "GetShardIterator",
        serde_json::json!({"StreamName": "s", "ShardId": "shardId-000000000000",
                           "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                           "StartingSequenceNumber": u64::MAX.to_string()}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "InvalidArgumentException", "{body}");

    let (_, body) = kinesis_call(
        &server,
        "GetShardIterator",
        serde_json::json!({"StreamName": "s", "ShardId": "shardId-000000000000",
                           "ShardIteratorType": "TRIM_HORIZON"}),
    )
    .await;
    let token = body["ShardIterator"].as_str().unwrap();
    let mut it: serde_json::Value = serde_json::from_slice(&b64.decode(token).unwrap()).unwrap();
    it["shard"] = 99.into();
    let forged = b64.encode(it.to_string());
    let (status, body) = kinesis_call(
        &server,
        "GetRecords",
        serde_json::json!({"ShardIterator": forged}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "InvalidArgumentException", "{body}");
    // The server is still there.
    let (status, _) = kinesis_call(
        &server,
        "GetRecords",
        serde_json::json!({"ShardIterator": token}),
    )
    .await;
    assert_eq!(status, 200);
}
