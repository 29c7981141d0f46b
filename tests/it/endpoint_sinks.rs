//! HTTP endpoint sinks against receivers started by the test, which fail,
//! time out, answer with the wrong request id, refuse large bodies (413)
//! and never succeed, on purpose: Firehose's HTTP endpoint protocol 1.0 to
//! the letter, retries with the same request id, splitting on 413, and
//! dead letters once `retry_duration` is spent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use crate::harness::{scalar, Server};

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Longer than the sink's request timeout.
    Stall,
    /// 200 with another request id.
    WrongId,
    Ok,
}

#[derive(Default)]
struct Receiver {
    /// Answers for the next requests; then `Ok`, or `fallback`.
    script: VecDeque<Answer>,
    fallback: Option<Answer>,
    /// NDJSON: bodies with more lines than this get 413.
    max_lines: Option<usize>,
    /// Every request: headers, and its records as JSON.
    seen: Vec<(HeaderMap, Vec<Value>)>,
    /// Records of requests answered with success.
    accepted: Vec<Value>,
}

fn records_of(headers: &HeaderMap, body: &[u8]) -> (Option<String>, Vec<Value>) {
    let gz = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let body = if gz {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).unwrap();
        out
    } else {
        body.to_vec()
    };
    if headers.get("x-amz-firehose-protocol-version").is_some() {
        let envelope: Value = serde_json::from_slice(&body).unwrap();
        assert!(envelope["timestamp"].as_i64().unwrap() > 0);
        let records = envelope["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["data"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&data).unwrap()
            })
            .collect();
        (envelope["requestId"].as_str().map(str::to_string), records)
    } else {
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "NDJSON ends with a newline");
        (
            None,
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        )
    }
}

async fn receive(state: Arc<Mutex<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let (request_id, records) = records_of(&headers, &body);
    let answer = {
        let mut r = state.lock().unwrap();
        r.seen.push((headers.clone(), records.clone()));
        let too_large = r.max_lines.is_some_and(|max| records.len() > max);
        let answer = if too_large {
            Answer::Status(413)
        } else {
            r.script.pop_front().or(r.fallback).unwrap_or(Answer::Ok)
        };
        if matches!(answer, Answer::Ok) {
            r.accepted.extend(records);
        }
        answer
    };
    let echo =
        |id: Option<String>| serde_json::json!({ "requestId": id, "timestamp": 1 }).to_string();
    match answer {
        Answer::Status(code) => (StatusCode::from_u16(code).unwrap(), "no").into_response(),
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, echo(request_id)).into_response()
        }
        Answer::WrongId => (StatusCode::OK, echo(Some("someone-else".into()))).into_response(),
        Answer::Ok => (StatusCode::OK, echo(request_id)).into_response(),
    }
}

/// A receiver on 127.0.0.1:0 in this process; its URL and state.
async fn start_receiver(receiver: Receiver) -> (String, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(receiver));
    let handler_state = state.clone();
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            receive(handler_state.clone(), headers, body)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

fn numbers(records: &[Value]) -> Vec<i64> {
    let mut n: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_protocol_retries_with_one_request_id_until_a_true_success() {
    let (url, state) = start_receiver(Receiver {
        script: [Answer::Status(500), Answer::Stall, Answer::WrongId].into(),
        ..Receiver::default()
    })
    .await;
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE STREAM ev (n BIGINT NOT NULL, url TEXT) WITH (shards = 1); \
             CREATE SINK hook FROM ev WITH (location = '{url}', format = 'firehose', access_key = 'k123', \
               batch_rows = 100, batch_interval = '200 ms', request_timeout = '500 ms', \
               retry_duration = '60 s', compression = 'gzip')"
        ))
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO ev SELECT n, concat('/p', CAST(n AS TEXT)) FROM (SELECT unnest(range(0, 250)) AS n)")
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK hook").await.unwrap();

    {
        let r = state.lock().unwrap();
        assert_eq!(
            numbers(&r.accepted),
            (0..250).collect::<Vec<_>>(),
            "each record accepted once"
        );
        let ids: Vec<&str> = r
            .seen
            .iter()
            .map(|(h, _)| h["x-amz-firehose-request-id"].to_str().unwrap())
            .collect();
        assert!(
            r.seen.len() >= 6,
            "3 failures, then 3 batches: {}",
            r.seen.len()
        );
        assert!(
            ids[..4].iter().all(|id| *id == ids[0]),
            "a batch keeps its request id across retries: {ids:?}"
        );
        assert_ne!(ids[4], ids[0], "the next batch has its own");
        for (headers, records) in &r.seen {
            assert_eq!(headers["x-amz-firehose-protocol-version"], "1.0");
            assert_eq!(headers["x-amz-firehose-access-key"], "k123");
            assert!(headers["x-amz-firehose-source-arn"]
                .to_str()
                .unwrap()
                .ends_with(":deliverystream/hook"));
            assert_eq!(headers["content-type"], "application/json");
            assert!(records.len() <= 100, "batch_rows bounds a request");
        }
    }
    let row = client
        .query_one(
            "SELECT format, location, lag_records, last_error FROM sluice.sinks WHERE name = 'hook'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "firehose");
    assert_eq!(row.get::<_, &str>(1), url);
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, Option<&str>>(3), None, "healthy again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_splits_on_413_and_gives_up_into_sluice_errors() {
    let (split_url, split) = start_receiver(Receiver {
        max_lines: Some(10),
        ..Receiver::default()
    })
    .await;
    let (down_url, _down) = start_receiver(Receiver {
        fallback: Some(Answer::Status(503)),
        ..Receiver::default()
    })
    .await;
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE STREAM ev (n BIGINT NOT NULL) WITH (shards = 2); \
             CREATE SINK split FROM ev WITH (location = '{split_url}', format = 'ndjson', batch_rows = 50, batch_interval = '100 ms'); \
             CREATE SINK down FROM ev WITH (location = '{down_url}', format = 'ndjson', batch_interval = '100 ms', retry_duration = '1 s')"
        ))
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO ev SELECT unnest(range(0, 120))")
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK split").await.unwrap();
    assert_eq!(
        numbers(&split.lock().unwrap().accepted),
        (0..120).collect::<Vec<_>>()
    );
    assert!(
        split
            .lock()
            .unwrap()
            .seen
            .iter()
            .any(|(_, records)| records.len() > 10),
        "a batch was refused whole first"
    );

    // An endpoint that never succeeds: after retry_duration the records are
    // dead letters with their JSON, and the sink moves on.
    client.batch_execute("FLUSH SINK down").await.unwrap();
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice.errors WHERE stage = 'delivery' AND pipeline = 'down' \
             AND raw LIKE '{\"n\":%' AND error_message LIKE '%HTTP 503%'"
        )
        .await,
        120
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT lag_records FROM sluice.sinks WHERE name = 'down'"
        )
        .await,
        0
    );

    // Options that do not fit an endpoint are refused by name.
    let err = client
        .batch_execute(&format!(
            "CREATE SINK bad FROM ev WITH (location = '{split_url}')"
        ))
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "22023");
    let err = client
        .batch_execute("CREATE SINK bad FROM ev WITH (location = 'lake', format = 'ndjson')")
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "22023");
}

/// sluice dies after the receiver accepted a batch and before the offset
/// was committed: the restart sends that batch again with the same request
/// id (a receiver can deduplicate on it), then goes on; `validate = true`
/// refuses an endpoint nobody listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_crash_keeps_its_request_id() {
    let (url, state) = start_receiver(Receiver::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::spawn_with(
        &data,
        None,
        &[("SLUICE_FAIL_POINT", "sink.endpoint.after_delivery")],
    );
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE STREAM ev (n BIGINT NOT NULL) WITH (shards = 1); \
                 INSERT INTO ev SELECT unnest(range(0, 120))",
            )
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "CREATE SINK hook FROM ev WITH (location = '{url}', format = 'firehose', batch_rows = 50, batch_interval = '100 ms')"
            ))
            .await
            .unwrap();
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the fail point was not reached");
    let first_id = |seen: &[(HeaderMap, Vec<Value>)]| {
        seen[0].0["x-amz-firehose-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let before = first_id(&state.lock().unwrap().seen);
    assert_eq!(
        numbers(&state.lock().unwrap().accepted),
        (0..50).collect::<Vec<_>>()
    );

    let server = Server::start_in(&data);
    let client = server.client().await;
    client.batch_execute("FLUSH SINK hook").await.unwrap();
    let seen: Vec<(HeaderMap, Vec<Value>)> = state.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 1 + 3, "the crashed batch again, then two more");
    assert_eq!(
        seen[1].0["x-amz-firehose-request-id"].to_str().unwrap(),
        before,
        "the same records under the same request id"
    );
    assert_eq!(numbers(&seen[1].1), (0..50).collect::<Vec<_>>());
    let ids: std::collections::HashSet<_> = seen
        .iter()
        .map(|(h, _)| h["x-amz-firehose-request-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "other batches, other ids");

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client
        .batch_execute(&format!(
            "CREATE SINK gone FROM ev WITH (location = 'http://127.0.0.1:{closed_port}/', format = 'ndjson', validate = true)"
        ))
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "08001");
}
