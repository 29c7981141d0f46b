//! The record calls: PutRecord(s), GetShardIterator, GetRecords.

use super::streams::{parse_shard_id, shard_id};
use super::*;

use base64::engine::general_purpose::STANDARD as B64;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::engine::Engine;
use crate::error::Error;
use crate::ingest::{kpl, JsonRecord, RecordResult, Writer};
use crate::runtime::ReadLimits;

pub(super) async fn put_records(engine: &Engine, request: &Value, single: bool) -> KResult {
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
    let results = store(&stream, &writer, decoded, &engine.config.limits).await?;
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

/// Stores put records, KPL-aggregated ones as their user records; one
/// result per put record. A stream created through this API keeps each
/// record's bytes; into a declared stream each must be a JSON object.
pub(in crate::http) async fn store(
    stream: &Stream,
    writer: &Writer,
    puts: Vec<(String, Vec<u8>)>,
    limits: &crate::config::Limits,
) -> Result<Vec<RecordResult>, KinesisError> {
    let count = puts.len();
    let (users, origin) = kpl::expand(
        puts,
        limits.max_request_records,
        limits.max_request_bytes as usize,
    )?;
    let results: Vec<RecordResult> = if is_kinesis_shaped(stream) {
        writer.blobs(&users).await?
    } else {
        let records: Vec<JsonRecord> = users
            .into_iter()
            .map(|(_, data)| {
                let raw = std::borrow::Cow::Owned(String::from_utf8_lossy(&data).into_owned());
                let value = serde_json::from_slice::<Value>(&data)
                    .map_err(|e| Error::InvalidText(format!("Data is not a JSON object: {e}")));
                (raw, value)
            })
            .collect();
        writer.records(records).await?.records
    };
    Ok(kpl::fold(results, &origin, count))
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Iterator {
    /// Stream id: an iterator of a dropped and re-created stream is invalid.
    id: u64,
    stream: String,
    shard: u32,
    seq: u64,
}

pub(super) fn encode_iterator(it: &Iterator) -> String {
    B64.encode(serde_json::to_vec(it).unwrap_or_default())
}

pub(super) async fn shard_iterator(engine: &Engine, request: &Value) -> KResult {
    let stream = stream(engine, request)?;
    let shard = parse_shard_id(&stream, text(request, "ShardId")?)?;
    let stats = stream
        .log
        .shard_stats()
        .get(shard as usize)
        .copied()
        .ok_or_else(|| KinesisError::new("ResourceNotFoundException", "shard not found"))?;
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
        "AFTER_SEQUENCE_NUMBER" => sequence("StartingSequenceNumber")?
            .checked_add(1)
            .ok_or_else(|| {
                KinesisError::new(
                    "InvalidArgumentException",
                    "StartingSequenceNumber is past the largest sequence number",
                )
            })?,
        "AT_TIMESTAMP" => {
            let ts = field(request, "Timestamp")?
                .as_f64()
                .ok_or_else(|| KinesisError::new("InvalidArgumentException", "Timestamp must be epoch seconds"))?;
            let log = stream.log.clone();
            let time_ms = (ts * 1000.0) as i64;
            // May read sealed segments' headers.
            tokio::task::spawn_blocking(move || log.seq_at_time(shard, time_ms))
                .await
                .map_err(|e| KinesisError::from(Error::Internal(e.to_string())))??
                .unwrap_or(stats.next_seq)
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

pub(super) async fn get_records(engine: &Engine, request: &Value) -> KResult {
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
    // The token is the client's: its shard is checked before it indexes.
    let Some(end) = stream.log.end_offsets().get(it.shard as usize).copied() else {
        return Err(KinesisError::new(
            "InvalidArgumentException",
            "ShardIterator is not valid",
        ));
    };
    let limit = request
        .get("Limit")
        .and_then(Value::as_u64)
        .unwrap_or(MAX_GET_RECORDS)
        .clamp(1, MAX_GET_RECORDS);
    let records = stream
        .read(it.shard, it.seq, ReadLimits::records(limit), None)
        .await
        .map_err(KinesisError::from)?;
    let kinesis_shaped = is_kinesis_shaped(&stream);
    let key_column = stream
        .def
        .partition_key
        .as_ref()
        .and_then(|k| stream.def.columns.iter().position(|c| &c.name == k));
    let mut out = Vec::new();
    let mut next = it.seq;
    if let Some(read) = records {
        // Whole frames are read: at most `limit` of their records go out.
        let rows = read.batch.num_rows().min(limit as usize);
        for row in 0..rows {
            let seq = read.first + row as u64;
            out.push(record_json(
                &read.batch,
                row,
                seq,
                kinesis_shaped,
                key_column,
            )?);
            next = seq + 1;
        }
    }
    Ok(json!({
        "Records": out,
        "NextShardIterator": encode_iterator(&Iterator { seq: next, ..it }),
        "MillisBehindLatest": if next >= end { 0 } else { 1000 },
    }))
}

pub(super) fn record_json(
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
