//! A Kinesis-compatible JSON API (`X-Amz-Target: Kinesis_20131202.*`) so
//! AWS SDK producers and consumers can point at sluice with an endpoint URL,
//! and the Firehose calls that put records (`firehose`).
//!
//! A stream created here has the schema `(partition_key TEXT, data BYTEA,
//! arrival_time TIMESTAMP)` and stores each record's bytes as sent. Into a
//! stream declared in SQL, a record's `Data` must be a JSON object whose
//! fields fill the columns (routed by the stream's own partition key), and
//! GetRecords returns each row as a JSON object. Sequence numbers are the
//! per-shard log sequence numbers; shard iterators are opaque tokens. Both
//! JSON 1.1 and CBOR 1.1 (the Java SDK's default) are spoken.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

use super::cbor;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::runtime::Stream;
use crate::types::{ColumnDef, SqlType};

const TARGET_PREFIX: &str = "Kinesis_20131202.";
const MAX_PUT_RECORDS: usize = 500;
const MAX_GET_RECORDS: u64 = 10_000;
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A Kinesis error: `__type` and message, HTTP 400 unless said otherwise.
struct KinesisError {
    kind: &'static str,
    message: String,
    status: StatusCode,
}

impl KinesisError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        KinesisError {
            kind,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }
}

impl From<Error> for KinesisError {
    fn from(e: Error) -> Self {
        let kind = match e.kind() {
            ErrorKind::UndefinedTable => "ResourceNotFoundException",
            ErrorKind::DuplicateTable | ErrorKind::DependentObjects => "ResourceInUseException",
            ErrorKind::InsufficientPrivilege => "AccessDeniedException",
            ErrorKind::DiskFull | ErrorKind::OutOfMemory | ErrorKind::ShuttingDown => {
                "ServiceUnavailableException"
            }
            k if k.is_server_side() => "InternalFailure",
            _ => "InvalidArgumentException",
        };
        // AWS answers 400 for every client error, whatever its type.
        let status = Some(super::status(e.kind()))
            .filter(|s| s.is_server_error())
            .unwrap_or(StatusCode::BAD_REQUEST);
        KinesisError {
            kind,
            message: e.to_string(),
            status,
        }
    }
}

impl KinesisError {
    fn reply(self, cbor: bool) -> Response {
        reply(
            cbor,
            self.status,
            &json!({ "__type": self.kind, "message": self.message }),
        )
    }
}

/// An answer in the protocol the request used (JSON 1.1 or CBOR 1.1).
fn reply(cbor: bool, status: StatusCode, body: &Value) -> Response {
    if cbor {
        (
            status,
            [("content-type", cbor::CONTENT_TYPE)],
            cbor::encode(body),
        )
            .into_response()
    } else {
        (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response()
    }
}

/// An AWS error answer (`__type`, message) for a request refused before
/// it reached an action, in the protocol the request used.
pub(super) fn refusal(
    headers: &HeaderMap,
    status: StatusCode,
    kind: &str,
    message: &str,
) -> Response {
    let mut response = reply(
        is_cbor(headers),
        status,
        &json!({ "__type": kind, "message": message }),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(kind) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(cbor::CONTENT_TYPE))
}

type KResult = Result<Value, KinesisError>;

/// `POST /` with an `X-Amz-Target` header.
pub async fn handle(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let cbor = is_cbor(&headers);
    let firehose = target.strip_prefix(firehose::TARGET_PREFIX);
    let Some(action) = target.strip_prefix(TARGET_PREFIX).or(firehose) else {
        return KinesisError::new(
            "UnknownOperationException",
            format!("unknown target {target:?}"),
        )
        .reply(cbor);
    };
    let decoded = if cbor {
        cbor::decode(&body)
    } else {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    let request: Value = match decoded {
        Ok(v) => v,
        Err(e) => return KinesisError::new("SerializationException", e).reply(cbor),
    };
    let result = match action {
        _ if firehose.is_some() => firehose::handle(&engine, action, &request).await,
        "CreateStream" => create_stream(&engine, &request).await,
        "DeleteStream" => delete_stream(&engine, &request).await,
        "ListStreams" => Ok(json!({
            "StreamNames": engine.registry.list().iter().map(|s| s.def.name.clone()).collect::<Vec<_>>(),
            "HasMoreStreams": false,
        })),
        "DescribeStream" => {
            stream(&engine, &request).map(|s| json!({ "StreamDescription": describe(&s, true) }))
        }
        "DescribeStreamSummary" => stream(&engine, &request).map(|s| {
            let mut summary = describe(&s, false);
            summary["OpenShardCount"] = json!(s.log.shard_count());
            summary["ConsumerCount"] = json!(0);
            json!({ "StreamDescriptionSummary": summary })
        }),
        "ListShards" => stream(&engine, &request).map(|s| json!({ "Shards": shards(&s) })),
        "PutRecord" => put_records(&engine, &request, true).await,
        "PutRecords" => put_records(&engine, &request, false).await,
        "GetShardIterator" => shard_iterator(&engine, &request).await,
        "GetRecords" => get_records(&engine, &request).await,
        other => Err(KinesisError::new(
            "UnknownOperationException",
            format!("operation {other} is not supported"),
        )),
    };
    match result {
        Ok(body) => reply(cbor, StatusCode::OK, &body),
        Err(e) => e.reply(cbor),
    }
}

fn field<'a>(request: &'a Value, name: &str) -> Result<&'a Value, KinesisError> {
    request
        .get(name)
        .ok_or_else(|| KinesisError::new("InvalidArgumentException", format!("{name} is required")))
}

fn text<'a>(request: &'a Value, name: &str) -> Result<&'a str, KinesisError> {
    field(request, name)?.as_str().ok_or_else(|| {
        KinesisError::new(
            "InvalidArgumentException",
            format!("{name} must be a string"),
        )
    })
}

fn stream(engine: &Engine, request: &Value) -> Result<Arc<Stream>, KinesisError> {
    let name = text(request, "StreamName")?;
    engine.registry.get(name).ok_or_else(|| {
        KinesisError::new(
            "ResourceNotFoundException",
            format!("Stream {name} under account 000000000000 not found."),
        )
    })
}

fn kinesis_columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef {
            name: "partition_key".into(),
            sql_type: SqlType::Text,
            nullable: false,
            default: None,
        },
        ColumnDef {
            name: "data".into(),
            sql_type: SqlType::Bytea,
            nullable: false,
            default: None,
        },
        ColumnDef {
            name: "arrival_time".into(),
            sql_type: SqlType::Timestamp,
            nullable: false,
            default: None,
        },
    ]
}

/// Whether a stream has the schema of one created through this API.
fn is_kinesis_shaped(stream: &Stream) -> bool {
    stream.def.columns == kinesis_columns()
}

mod firehose;
mod records;
mod streams;

use records::{get_records, put_records, shard_iterator};
use streams::{create_stream, delete_stream, describe, shards};
