//! `sluice.streams`: one row per open stream, plus one per log directory
//! start-up found unlisted in the catalog and moved to quarantine (state
//! `quarantined`), so data sluice would not delete stays visible.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};

use super::registry::Quarantined;
use super::Registry;
use crate::log::ShardStats;
use crate::runtime::Stream;

struct Row {
    name: String,
    shards: i32,
    partition_key: Option<String>,
    retention: Option<String>,
    event_time: Option<String>,
    records: i64,
    bytes: i64,
    first_sequence: Option<i64>,
    last_sequence: Option<i64>,
    segments: i64,
    schema_version: i32,
    errors: i64,
    created_at_ms: i64,
    state: &'static str,
    last_error: Option<String>,
}

fn stream_row(stream: &Stream, dead_letters: u64) -> Row {
    let stats: Vec<ShardStats> = stream.log.shard_stats();
    let stopped = stream.log.stopped();
    Row {
        name: stream.def.name.clone(),
        shards: stream.def.shards as i32,
        partition_key: stream.def.partition_key.clone(),
        retention: stream.def.retention.clone(),
        event_time: stream.def.event_time.clone(),
        records: stats.iter().map(|x| x.records as i64).sum(),
        bytes: stats.iter().map(|x| x.bytes as i64).sum(),
        first_sequence: stats
            .iter()
            .filter(|x| x.records > 0)
            .map(|x| x.first_seq as i64)
            .min(),
        last_sequence: stats
            .iter()
            .filter(|x| x.next_seq > 0)
            .map(|x| x.next_seq as i64 - 1)
            .max(),
        segments: stats.iter().map(|x| x.segments as i64).sum(),
        schema_version: stream.def.schema_version as i32,
        errors: dead_letters as i64,
        created_at_ms: stream.def.created_at_ms,
        state: if stopped.is_some() {
            "stopped"
        } else {
            "running"
        },
        last_error: stopped,
    }
}

fn quarantined_row(q: &Quarantined) -> Row {
    Row {
        name: q.dir.clone(),
        shards: q.shards as i32,
        partition_key: None,
        retention: None,
        event_time: None,
        records: 0,
        bytes: q.bytes as i64,
        first_sequence: None,
        last_sequence: None,
        segments: q.segments as i64,
        schema_version: 0,
        errors: 0,
        created_at_ms: q.moved_at_ms,
        state: "quarantined",
        last_error: Some(
            "a log directory the catalog does not list (a lost or replaced catalog.redb?); \
             moved aside at start-up with its contents intact, never deleted"
                .into(),
        ),
    }
}

pub(super) fn columns(registry: &Registry) -> Vec<ArrayRef> {
    let dead = registry.dead_letter_counts();
    let mut rows: Vec<Row> = registry
        .list()
        .iter()
        .map(|s| stream_row(s, dead.get(&s.def.name).copied().unwrap_or(0)))
        .collect();
    rows.extend(registry.quarantined().iter().map(quarantined_row));
    vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.name.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.shards))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.partition_key.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.retention.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.event_time.as_deref()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.records))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.bytes))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.first_sequence))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.last_sequence))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.segments),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.schema_version),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.errors))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.created_at_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.state))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.last_error.as_deref()),
        )),
    ]
}

/// `sluice.schemas`: every version of every stream, oldest first.
pub(super) fn schema_columns(
    registry: &Registry,
    catalog: &crate::catalog::Catalog,
) -> crate::error::Result<Vec<ArrayRef>> {
    let mut versions = Vec::new();
    for stream in registry.list() {
        versions.extend(catalog.schema_versions(&stream.def)?);
    }
    let describe = |v: &crate::catalog::SchemaVersion| {
        v.columns
            .iter()
            .map(|c| {
                let mut text = format!("{} {}", c.name, c.sql_type.pg_name());
                if !c.nullable {
                    text.push_str(" NOT NULL");
                }
                if let Some(d) = &c.default {
                    text.push_str(&format!(" DEFAULT '{}'", d.replace('\'', "''")));
                }
                text
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(vec![
        Arc::new(StringArray::from_iter_values(
            versions.iter().map(|v| v.stream.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(
            versions.iter().map(|v| v.version as i32),
        )),
        Arc::new(StringArray::from_iter_values(versions.iter().map(describe))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(versions.iter().map(|v| v.created_at_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            versions.iter().map(|v| v.statement.as_str()),
        )),
    ])
}
