//! HTTP ingest: `POST /v1/streams/{name}/records`.

use serde_json::{json, Value};

use crate::harness::{scalar, Server};

const CLICKS: &str =
    "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, url TEXT, status INT) \
                      WITH (shards = 2, partition_key = 'user_id')";

async fn post(
    server: &Server,
    stream: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/streams/{stream}/records",
            server.http_addr
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn ndjson_lines_fail_alone_and_land_in_errors() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    let body = "{\"event_time\":\"2026-11-25T13:00:01\",\"user_id\":7,\"url\":\"/a\",\"status\":200,\"extra\":true}\n\
                {\"event_time\":1795611600,\"user_id\":\"8\",\"url\":\"/b\",\"status\":\"500\"}\n\
                not json\n\
                \n\
                {\"event_time\":\"2026-11-25 13:00:03\",\"user_id\":9,\"status\":\"abc\"}\n\
                {\"user_id\":10}\n";
    let (status, report) = post(&server, "clicks", "application/x-ndjson", body).await;
    assert_eq!(status, 200);
    assert_eq!(report["failed"], 3);
    assert_eq!(report["unknown_fields"], 1);
    let records = report["records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "blank lines are not records");
    assert!(records[0]["sequence"].is_u64() && records[1]["shard"].is_u64());
    assert_eq!(records[2]["error_code"], "22P02");
    assert!(records[2]["error_message"]
        .as_str()
        .unwrap()
        .contains("line 3"));
    assert_eq!(records[3]["error_code"], "22P02");
    assert_eq!(records[4]["error_code"], "23502");

    let rows = client
        .query(
            "SELECT user_id, url, status, CAST(event_time AS TEXT) FROM clicks ORDER BY user_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, String, i32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (7, "/a".into(), 200, "2026-11-25 13:00:01".into()),
            (8, "/b".into(), 500, "2026-11-25 13:00:00".into()),
        ],
        "epoch seconds become a UTC timestamp; numbers in strings convert"
    );
    let raws: Vec<String> = client
        .query(
            "SELECT raw FROM sluice.errors WHERE stage = 'ingest' ORDER BY raw",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(raws.len(), 3);
    assert!(raws.contains(&"not json".to_string()));
    assert!(raws.contains(&"{\"user_id\":10}".to_string()));
}

#[tokio::test]
async fn json_arrays_store_good_records_or_nothing_when_unparseable() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    let mut records: Vec<Value> = (0..500)
        .map(|i| json!({"event_time": "2026-11-25 13:00:00", "user_id": i, "url": "/x", "status": 200}))
        .collect();
    records[250]["status"] = json!("two hundred");
    let (status, report) = post(
        &server,
        "clicks",
        "application/json",
        serde_json::to_vec(&records).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(report["failed"], 1);
    assert_eq!(report["records"][250]["error_code"], "22P02");
    let n = scalar(&client, "SELECT count(*) FROM clicks").await;
    assert_eq!(n, 499);

    let (status, report) = post(
        &server,
        "clicks",
        "application/json",
        "[{\"event_time\":\"2026-11-25 13:00:00\",\"user_id\":1000}, {\"user_id\": ]",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(report["error_code"], "22P02");
    assert!(
        report["error_message"]
            .as_str()
            .unwrap()
            .contains("at byte 66"), /* the `]`, 0-based */
        "{report}"
    );
    let n = scalar(&client, "SELECT count(*) FROM clicks").await;
    assert_eq!(n, 499, "nothing of an unparseable array is stored");
}

#[tokio::test]
async fn unknown_fields_can_be_refused_per_stream() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM strict (a INT, b TEXT) WITH (unknown_fields = 'error')")
        .await
        .unwrap();
    let (status, report) = post(
        &server,
        "strict",
        "application/x-ndjson",
        "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"c\": true}\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(report["failed"], 1);
    assert_eq!(report["records"][1]["error_code"], "42703");
    assert!(report["records"][1]["error_message"]
        .as_str()
        .unwrap()
        .contains("\"c\""));
    let err = client
        .batch_execute("CREATE STREAM s2 (a INT) WITH (unknown_fields = 'maybe')")
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "22023");
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let server = Server::start_with_config("[limits]\nmax_request_bytes = 1024\n");
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    let (status, body) = post(&server, "nope", "application/json", "[]").await;
    assert_eq!((status, body["error_code"].as_str()), (404, Some("42P01")));
    let (status, _) = post(&server, "clicks", "text/plain", "{}").await;
    assert_eq!(status, 415);
    let (status, body) = post(&server, "clicks", "application/x-ndjson", "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&server, "clicks", "application/x-ndjson", "x".repeat(4096)).await;
    assert_eq!(status, 413);
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{body}"
    );
    client
        .batch_execute("CREATE STREAM derived AS SELECT user_id FROM clicks")
        .await
        .unwrap();
    let (status, body) = post(&server, "derived", "application/json", "[{\"user_id\": 1}]").await;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("42809")));
}

/// A body of tiny records cannot multiply into per-record state: past
/// `max_request_records` it is refused (413, 54000) before the records are
/// decoded, in both body shapes, and the server's memory stays flat.
#[tokio::test]
async fn requests_of_too_many_records_are_refused_before_decoding() {
    let server = Server::start_with_config("[limits]\nmax_request_records = 10\n");
    server.client().await.batch_execute(CLICKS).await.unwrap();
    let line = r#"{"event_time": "2026-01-01T00:00:00", "user_id": 1}"#;
    let lines = |n: usize| vec![line; n].join("\n");
    let (status, body) = post(&server, "clicks", "application/x-ndjson", lines(10)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&server, "clicks", "application/x-ndjson", lines(11)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error_code"], "54000");
    let array = |n: usize| format!("[{}]", vec![line; n].join(","));
    let (status, body) = post(&server, "clicks", "application/json", array(11)).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = post(&server, "clicks", "application/json", array(10)).await;
    assert_eq!(status, 200, "{body}");

    // 16 MB of `{}`: about 5.6 million records, refused after ten.
    let before = server.peak_rss_bytes();
    let mut tiny = String::with_capacity(16 << 20);
    tiny.push('[');
    while tiny.len() < (16 << 20) - 8 {
        tiny.push_str("{},");
    }
    tiny.push_str("{}]");
    let (status, _) = post(&server, "clicks", "application/json", tiny).await;
    assert_eq!(status, 413);
    let grown = server.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 128 << 20, "peak RSS grew by {grown} bytes");
    let client = server.client().await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM clicks").await, 20);
}

/// Past `http_ingest_concurrency` requests in flight, another is refused at
/// once with 429 and Retry-After (Kinesis: its throttling error), and
/// accepted again once a slot frees.
#[tokio::test]
async fn ingest_requests_past_the_concurrency_bound_get_429() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with_config("[limits]\nhttp_ingest_concurrency = 1\n");
    server.client().await.batch_execute(CLICKS).await.unwrap();
    let record = r#"{"event_time": "2026-01-01T00:00:00", "user_id": 7}"#;
    // A request whose body arrives slowly holds the only slot.
    let mut slow = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/streams/clicks/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        record.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&record.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/streams/clicks/records",
            server.http_addr
        ))
        .header("content-type", "application/x-ndjson")
        .body(record)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "53300");
    let kinesis = reqwest::Client::new()
        .post(format!("http://{}/", server.http_addr))
        .header("X-Amz-Target", "Kinesis_20131202.ListStreams")
        .header("Content-Type", "application/x-amz-json-1.1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(kinesis.status().as_u16(), 400);
    let body: Value = kinesis.json().await.unwrap();
    assert_eq!(body["__type"], "ProvisionedThroughputExceededException");

    slow.write_all(&record.as_bytes()[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut answer)
        .await
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _) = post(&server, "clicks", "application/x-ndjson", record).await;
    assert_eq!(status, 200);
    let client = server.client().await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM clicks").await, 2);
}
