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
            (7, "/a".into(), 200, "2026-11-25T13:00:01".into()),
            (8, "/b".into(), 500, "2026-11-25T13:00:00".into()),
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
