//! The Firehose API (`X-Amz-Target: Firehose_20150804.*`, JSON 1.1):
//! `PutRecord`, `PutRecordBatch`, `ListDeliveryStreams`,
//! `DescribeDeliveryStream`. A delivery stream is a sluice stream; its
//! destinations are the sinks that deliver it. Firehose records carry no
//! partition key: into a stream created through the Kinesis API each
//! record gets a random one (spread over the shards); a declared stream
//! routes by its own partition key. KPL-aggregated records are stored as
//! their user records, as on the Kinesis calls.

use base64::engine::general_purpose::STANDARD as B64;
use uuid::Uuid;

use super::records::store;
use super::*;
use crate::ingest::{RecordResult, Writer};

pub const TARGET_PREFIX: &str = "Firehose_20150804.";
/// Records in one PutRecordBatch (Firehose's limit).
const MAX_BATCH_RECORDS: usize = 500;
/// Data bytes in one PutRecordBatch (Firehose's limit).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Data bytes of one record (Firehose's limit: 1,000 KiB).
const MAX_FIREHOSE_RECORD_BYTES: usize = 1000 * 1024;
const MAX_LIST_LIMIT: u64 = 10_000;

pub(super) async fn handle(engine: &Engine, action: &str, request: &Value) -> KResult {
    match action {
        "PutRecord" => put(engine, request, true).await,
        "PutRecordBatch" => put(engine, request, false).await,
        "ListDeliveryStreams" => list(engine, request),
        "DescribeDeliveryStream" => describe_delivery(engine, request),
        other => Err(KinesisError::new(
            "InvalidArgumentException",
            format!("Firehose operation {other} is not supported"),
        )),
    }
}

fn delivery_stream(engine: &Engine, request: &Value) -> Result<Arc<Stream>, KinesisError> {
    let name = text(request, "DeliveryStreamName")?;
    engine.registry.get(name).ok_or_else(|| {
        KinesisError::new(
            "ResourceNotFoundException",
            format!("Firehose {name} under account 000000000000 not found."),
        )
    })
}

fn record_data(record: &Value) -> Result<Vec<u8>, KinesisError> {
    let data = B64.decode(text(record, "Data")?).map_err(|e| {
        KinesisError::new(
            "InvalidArgumentException",
            format!("Data is not base64: {e}"),
        )
    })?;
    if data.len() > MAX_FIREHOSE_RECORD_BYTES {
        return Err(KinesisError::new(
            "InvalidArgumentException",
            format!(
                "a record's Data must be at most {MAX_FIREHOSE_RECORD_BYTES} bytes, got {}",
                data.len()
            ),
        ));
    }
    Ok(data)
}

async fn put(engine: &Engine, request: &Value, single: bool) -> KResult {
    let stream = delivery_stream(engine, request)?;
    let records: Vec<&Value> = if single {
        vec![field(request, "Record")?]
    } else {
        let records = field(request, "Records")?.as_array().ok_or_else(|| {
            KinesisError::new("InvalidArgumentException", "Records must be a list")
        })?;
        if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
            return Err(KinesisError::new(
                "InvalidArgumentException",
                format!(
                    "Records must hold 1 to {MAX_BATCH_RECORDS} records, got {}",
                    records.len()
                ),
            ));
        }
        records.iter().collect()
    };
    let mut puts = Vec::with_capacity(records.len());
    let mut batch_bytes = 0usize;
    for record in records {
        let data = record_data(record)?;
        batch_bytes = batch_bytes.saturating_add(data.len());
        if batch_bytes > MAX_BATCH_BYTES {
            return Err(KinesisError::new(
                "InvalidArgumentException",
                format!("the records of one PutRecordBatch must be at most {MAX_BATCH_BYTES} bytes together"),
            ));
        }
        puts.push((Uuid::new_v4().simple().to_string(), data));
    }
    let writer = Writer::new(
        stream.clone(),
        engine.registry.errors(),
        engine.config.limits.max_statement_bytes,
    )?;
    let results = store(&stream, &writer, puts, &engine.config.limits).await?;
    if single {
        return match results.first() {
            Some(RecordResult::Stored { shard, sequence }) => Ok(json!({
                "RecordId": record_id(*shard, *sequence),
                "Encrypted": false,
            })),
            Some(RecordResult::Failed { error_message, .. }) => Err(KinesisError::new(
                "InvalidArgumentException",
                error_message.clone(),
            )),
            None => Err(KinesisError::new(
                "ServiceUnavailableException",
                "no result",
            )),
        };
    }
    let responses: Vec<Value> = results
        .iter()
        .map(|r| match r {
            RecordResult::Stored { shard, sequence } => {
                json!({ "RecordId": record_id(*shard, *sequence) })
            }
            RecordResult::Failed {
                kind,
                error_code,
                error_message,
            } => json!({
                "ErrorCode": if kind.is_server_side() { "ServiceUnavailableException" } else { "InvalidArgumentException" },
                "ErrorMessage": format!("{error_code}: {error_message}"),
            }),
        })
        .collect();
    Ok(json!({
        "FailedPutCount": results.iter().filter(|r| matches!(r, RecordResult::Failed { .. })).count(),
        "Encrypted": false,
        "RequestResponses": responses,
    }))
}

/// A record's id: where it was stored, which is unique in the stream.
fn record_id(shard: u32, sequence: u64) -> String {
    format!("{shard:010}{sequence:020}")
}

fn list(engine: &Engine, request: &Value) -> KResult {
    let limit = match request.get("Limit") {
        None => 10,
        Some(v) => v
            .as_u64()
            .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
            .ok_or_else(|| {
                KinesisError::new(
                    "InvalidArgumentException",
                    format!("Limit must be 1 to {MAX_LIST_LIMIT}"),
                )
            })?,
    };
    let after = request
        .get("ExclusiveStartDeliveryStreamName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut names: Vec<String> = engine
        .registry
        .list()
        .iter()
        .map(|s| s.def.name.clone())
        .filter(|n| n.as_str() > after)
        .collect();
    names.sort();
    let more = names.len() as u64 > limit;
    names.truncate(limit as usize);
    Ok(json!({ "DeliveryStreamNames": names, "HasMoreDeliveryStreams": more }))
}

fn describe_delivery(engine: &Engine, request: &Value) -> KResult {
    let stream = delivery_stream(engine, request)?;
    let name = &stream.def.name;
    let destinations: Vec<Value> = engine
        .registry
        .sinks_of(name)
        .iter()
        .map(|sink| {
            let def = &sink.core.def;
            let location = sink.core.location.url_string();
            let (bucket_arn, prefix) = match location
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
            {
                Some((bucket, prefix)) => {
                    (Some(format!("arn:aws:s3:::{bucket}")), prefix.to_string())
                }
                None => (None, location.clone()),
            };
            json!({
                "DestinationId": def.name,
                "ExtendedS3DestinationDescription": {
                    "BucketARN": bucket_arn,
                    "Prefix": prefix,
                    "BufferingHints": {
                        "SizeInMBs": def.rollover_size_bytes / (1024 * 1024),
                        "IntervalInSeconds": def.rollover_interval_ms / 1000,
                    },
                    "CompressionFormat": "UNCOMPRESSED",
                    "DataFormatConversionConfiguration": { "Enabled": true },
                },
            })
        })
        .collect();
    Ok(json!({
        "DeliveryStreamDescription": {
            "DeliveryStreamName": name,
            "DeliveryStreamARN": format!("arn:aws:firehose:us-east-1:000000000000:deliverystream/{name}"),
            "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": "DirectPut",
            "VersionId": "1",
            "CreateTimestamp": stream.def.created_at_ms as f64 / 1000.0,
            "Destinations": destinations,
            "HasMoreDestinations": false,
        }
    }))
}
