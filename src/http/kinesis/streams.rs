//! The stream management calls: CreateStream, DeleteStream, DescribeStream(Summary), ListStreams, ListShards.

use super::*;

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::runtime::Stream;
use crate::sql::{CreateStream, DropStream};

pub(super) async fn create_stream(engine: &Engine, request: &Value) -> KResult {
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

pub(super) async fn delete_stream(engine: &Engine, request: &Value) -> KResult {
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

pub(super) fn shard_id(shard: u32) -> String {
    format!("shardId-{shard:012}")
}

pub(super) fn parse_shard_id(stream: &Stream, id: &str) -> Result<u32, KinesisError> {
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

pub(super) fn shards(stream: &Stream) -> Vec<Value> {
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

pub(super) fn describe(stream: &Stream, with_shards: bool) -> Value {
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
