//! A Kinesis-compatible JSON API (`X-Amz-Target: Kinesis_20131202.*`) so
//! AWS SDK producers and consumers can point at sluice with an endpoint URL.
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
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use serde_json::{json, Value};

use super::cbor;
use crate::clock::now_ms;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::ingest::{JsonRecord, RecordResult, Writer};
use crate::log::read_frame;
use crate::runtime::Stream;
use crate::sql::{CreateStream, DropStream};
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
    let cbor = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(cbor::CONTENT_TYPE));
    let Some(action) = target.strip_prefix(TARGET_PREFIX) else {
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
        "GetShardIterator" => shard_iterator(&engine, &request),
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
        },
        ColumnDef {
            name: "data".into(),
            sql_type: SqlType::Bytea,
            nullable: false,
        },
        ColumnDef {
            name: "arrival_time".into(),
            sql_type: SqlType::Timestamp,
            nullable: false,
        },
    ]
}

/// Whether a stream has the schema of one created through this API.
fn is_kinesis_shaped(stream: &Stream) -> bool {
    stream.def.columns == kinesis_columns()
}

async fn create_stream(engine: &Engine, request: &Value) -> KResult {
    let name = text(request, "StreamName")?.to_string();
    let shards = request
        .get("ShardCount")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if !(1..=crate::sql::MAX_SHARDS as u64).contains(&shards) {
        return Err(KinesisError::new(
            "InvalidArgumentException",
            format!("ShardCount must be from 1 to {}", crate::sql::MAX_SHARDS),
        ));
    }
    engine
        .create_stream(CreateStream {
            name,
            if_not_exists: false,
            columns: kinesis_columns(),
            shards: shards as u32,
            partition_key: Some("partition_key".into()),
            retention: Some(("24h".into(), std::time::Duration::from_secs(24 * 3600))),
            event_time: Some("arrival_time".into()),
            reject_unknown_fields: false,
        })
        .await?;
    Ok(json!({}))
}

async fn delete_stream(engine: &Engine, request: &Value) -> KResult {
    let name = text(request, "StreamName")?.to_string();
    let cascade = request
        .get("EnforceConsumerDeletion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    engine
        .drop_stream(DropStream {
            names: vec![name],
            if_exists: false,
            cascade,
        })
        .await?;
    Ok(json!({}))
}

fn shard_id(shard: u32) -> String {
    format!("shardId-{shard:012}")
}

fn parse_shard_id(stream: &Stream, id: &str) -> Result<u32, KinesisError> {
    id.strip_prefix("shardId-")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n < stream.log.shard_count())
        .ok_or_else(|| {
            KinesisError::new(
                "ResourceNotFoundException",
                format!("Shard {id} in stream {} not found.", stream.def.name),
            )
        })
}

fn shards(stream: &Stream) -> Vec<Value> {
    let n = stream.log.shard_count() as u128;
    let width = u128::MAX / n;
    stream
        .log
        .shard_stats()
        .iter()
        .enumerate()
        .map(|(i, stats)| {
            let start = width * i as u128;
            let end = if i as u128 == n - 1 { u128::MAX } else { start + width - 1 };
            json!({
                "ShardId": shard_id(i as u32),
                "HashKeyRange": { "StartingHashKey": start.to_string(), "EndingHashKey": end.to_string() },
                "SequenceNumberRange": { "StartingSequenceNumber": stats.first_seq.to_string() },
            })
        })
        .collect()
}

fn describe(stream: &Stream, with_shards: bool) -> Value {
    let retention_hours = stream
        .def
        .retention
        .as_deref()
        .and_then(|r| humantime::parse_duration(r).ok())
        .map_or(24 * 365, |d| (d.as_secs() / 3600).max(1));
    let mut d = json!({
        "StreamName": stream.def.name,
        "StreamARN": format!("arn:aws:kinesis:us-east-1:000000000000:stream/{}", stream.def.name),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": { "StreamMode": "PROVISIONED" },
        "RetentionPeriodHours": retention_hours,
        "StreamCreationTimestamp": stream.def.created_at_ms as f64 / 1000.0,
        "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
        "EncryptionType": "NONE",
    });
    if with_shards {
        d["Shards"] = json!(shards(stream));
        d["HasMoreShards"] = json!(false);
    }
    d
}

async fn put_records(engine: &Engine, request: &Value, single: bool) -> KResult {
    let stream = stream(engine, request)?;
    let writer = Writer::new(
        stream.clone(),
        engine.registry.errors(),
        engine.config.limits.max_statement_bytes,
    )?;
    let entries: Vec<&Value> = if single {
        vec![request]
    } else {
        let records = field(request, "Records")?.as_array().ok_or_else(|| {
            KinesisError::new("InvalidArgumentException", "Records must be a list")
        })?;
        if records.is_empty() || records.len() > MAX_PUT_RECORDS {
            return Err(KinesisError::new(
                "InvalidArgumentException",
                format!(
                    "Records must hold 1 to {MAX_PUT_RECORDS} records, got {}",
                    records.len()
                ),
            ));
        }
        records.iter().collect()
    };
    let mut decoded = Vec::with_capacity(entries.len());
    for entry in &entries {
        let key = text(entry, "PartitionKey")?.to_string();
        let data = B64.decode(text(entry, "Data")?).map_err(|e| {
            KinesisError::new(
                "InvalidArgumentException",
                format!("Data is not base64: {e}"),
            )
        })?;
        if data.len() > MAX_RECORD_BYTES {
            return Err(KinesisError::new(
                "InvalidArgumentException",
                format!("a record's Data must be at most {MAX_RECORD_BYTES} bytes"),
            ));
        }
        decoded.push((key, data));
    }
    let results: Vec<RecordResult> = if is_kinesis_shaped(&stream) {
        writer.blobs(&decoded).await?
    } else {
        let records: Vec<JsonRecord> = decoded
            .into_iter()
            .map(|(_, data)| {
                let raw = String::from_utf8_lossy(&data).into_owned();
                let value = serde_json::from_slice::<Value>(&data)
                    .map_err(|e| Error::InvalidText(format!("Data is not a JSON object: {e}")));
                (raw, value)
            })
            .collect();
        writer.records(records).await?.records
    };
    let answer = |r: &RecordResult| match r {
        RecordResult::Stored { shard, sequence } => json!({
            "ShardId": shard_id(*shard),
            "SequenceNumber": sequence.to_string(),
        }),
        RecordResult::Failed {
            kind,
            error_code,
            error_message,
        } => json!({
            "ErrorCode": if kind.is_server_side() { "InternalFailure" } else { "InvalidArgumentException" },
            "ErrorMessage": format!("{error_code}: {error_message}"),
        }),
    };
    if single {
        return match &results[0] {
            RecordResult::Stored { .. } => {
                let mut a = answer(&results[0]);
                a["EncryptionType"] = json!("NONE");
                Ok(a)
            }
            RecordResult::Failed { error_message, .. } => Err(KinesisError::new(
                "InvalidArgumentException",
                error_message.clone(),
            )),
        };
    }
    Ok(json!({
        "FailedRecordCount": results.iter().filter(|r| matches!(r, RecordResult::Failed { .. })).count(),
        "Records": results.iter().map(answer).collect::<Vec<_>>(),
        "EncryptionType": "NONE",
    }))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Iterator {
    /// Stream id: an iterator of a dropped and re-created stream is invalid.
    id: u64,
    stream: String,
    shard: u32,
    seq: u64,
}

fn encode_iterator(it: &Iterator) -> String {
    B64.encode(serde_json::to_vec(it).unwrap_or_default())
}

fn shard_iterator(engine: &Engine, request: &Value) -> KResult {
    let stream = stream(engine, request)?;
    let shard = parse_shard_id(&stream, text(request, "ShardId")?)?;
    let stats = stream.log.shard_stats()[shard as usize];
    let sequence = |name: &str| -> Result<u64, KinesisError> {
        text(request, name)?.parse::<u64>().map_err(|_| {
            KinesisError::new(
                "InvalidArgumentException",
                format!("{name} must be a sequence number"),
            )
        })
    };
    let seq = match text(request, "ShardIteratorType")? {
        "TRIM_HORIZON" => stats.first_seq,
        "LATEST" => stats.next_seq,
        "AT_SEQUENCE_NUMBER" => sequence("StartingSequenceNumber")?,
        "AFTER_SEQUENCE_NUMBER" => sequence("StartingSequenceNumber")? + 1,
        "AT_TIMESTAMP" => {
            let ts = field(request, "Timestamp")?
                .as_f64()
                .ok_or_else(|| KinesisError::new("InvalidArgumentException", "Timestamp must be epoch seconds"))?;
            stream.log.seq_at_time(shard, (ts * 1000.0) as i64).unwrap_or(stats.next_seq)
        }
        other => {
            return Err(KinesisError::new(
                "InvalidArgumentException",
                format!("ShardIteratorType {other} is not one of TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP"),
            ))
        }
    };
    Ok(
        json!({ "ShardIterator": encode_iterator(&Iterator { id: stream.def.id, stream: stream.def.name.clone(), shard, seq }) }),
    )
}

async fn get_records(engine: &Engine, request: &Value) -> KResult {
    let token = text(request, "ShardIterator")?;
    let it: Iterator = B64
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            KinesisError::new("InvalidArgumentException", "ShardIterator is not valid")
        })?;
    let stream = engine
        .registry
        .get(&it.stream)
        .filter(|s| s.def.id == it.id)
        .ok_or_else(|| {
            KinesisError::new(
                "ExpiredIteratorException",
                "the iterator's stream no longer exists",
            )
        })?;
    let limit = request
        .get("Limit")
        .and_then(Value::as_u64)
        .unwrap_or(MAX_GET_RECORDS)
        .clamp(1, MAX_GET_RECORDS);
    let frames = stream.log.frames_from(it.shard, it.seq, limit);
    let from = it.seq;
    let batches = tokio::task::spawn_blocking(move || {
        frames
            .iter()
            .map(|(file, frame)| {
                read_frame(file, frame, None, from).map(|b| (frame.first_seq.max(from), b))
            })
            .collect::<Result<Vec<_>, Error>>()
    })
    .await
    .map_err(|e| KinesisError::from(Error::Internal(e.to_string())))??;
    let kinesis_shaped = is_kinesis_shaped(&stream);
    let key_column = stream
        .def
        .partition_key
        .as_ref()
        .and_then(|k| stream.def.columns.iter().position(|c| &c.name == k));
    let mut records = Vec::new();
    let mut next = it.seq;
    for (first, batch) in batches {
        for row in 0..batch.num_rows() {
            if records.len() as u64 >= limit {
                break;
            }
            let seq = first + row as u64;
            records.push(record_json(&batch, row, seq, kinesis_shaped, key_column)?);
            next = seq + 1;
        }
    }
    let end = stream.log.end_offsets()[it.shard as usize];
    Ok(json!({
        "Records": records,
        "NextShardIterator": encode_iterator(&Iterator { seq: next, ..it }),
        "MillisBehindLatest": if next >= end { 0 } else { 1000 },
    }))
}

fn record_json(
    batch: &RecordBatch,
    row: usize,
    seq: u64,
    kinesis_shaped: bool,
    key_column: Option<usize>,
) -> Result<Value, KinesisError> {
    if kinesis_shaped {
        let key = batch.column(0).as_string::<i32>().value(row);
        let data = batch.column(1).as_binary::<i32>().value(row);
        let arrival = batch
            .column(2)
            .as_primitive::<TimestampMicrosecondType>()
            .value(row);
        return Ok(json!({
            "SequenceNumber": seq.to_string(),
            "ApproximateArrivalTimestamp": arrival as f64 / 1e6,
            "Data": B64.encode(data),
            "PartitionKey": key,
        }));
    }
    let one = batch.slice(row, 1);
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
        writer
            .write(&one)
            .map_err(|e| KinesisError::from(Error::from(e)))?;
        writer
            .finish()
            .map_err(|e| KinesisError::from(Error::from(e)))?;
    }
    let key = key_column
        .and_then(|k| {
            let text = datafusion::arrow::compute::cast(
                one.column(k),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .ok()?;
            let text = text.as_string::<i32>();
            (!text.is_null(0)).then(|| text.value(0).to_string())
        })
        .unwrap_or_default();
    Ok(json!({
        "SequenceNumber": seq.to_string(),
        "ApproximateArrivalTimestamp": now_ms() as f64 / 1000.0,
        "Data": B64.encode(out.trim_ascii_end()),
        "PartitionKey": key,
    }))
}
