//! `sluice.errors`, the one dead-letter stream of every stage: its name,
//! columns and catalog entry, writing dead letters, and counting them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    AsArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

use crate::catalog::StreamDef;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::types::{ColumnDef, SqlType};

use super::stream::{Stream, ERRORS_STREAM};
use super::ReadLimits;

/// Records decoded at once while counting dead letters.
const COUNT_READ_RECORDS: u64 = 65_536;

/// The catalog entry of `sluice.errors`, created on first start.
pub fn errors_stream_def() -> StreamDef {
    StreamDef {
        retention: Some("7 days".into()),
        event_time: Some("at".into()),
        ..StreamDef::new(ERRORS_STREAM, errors_columns())
    }
}

/// The columns of `sluice.errors`, the dead-letter stream of every stage.
pub fn errors_columns() -> Vec<ColumnDef> {
    let col = |name: &str, sql_type: SqlType, nullable: bool| ColumnDef {
        name: name.into(),
        sql_type,
        nullable,
        default: None,
    };
    vec![
        col("at", SqlType::TimestampTz, false),
        col("stream", SqlType::Text, true),
        col("pipeline", SqlType::Text, true),
        col("stage", SqlType::Text, false),
        col("error_code", SqlType::Text, false),
        col("error_message", SqlType::Text, false),
        col("raw", SqlType::Text, true),
        col("attempts", SqlType::Integer, false),
    ]
}

/// One failed record and why.
#[derive(Debug)]
pub struct DeadLetter {
    pub stream: Option<String>,
    pub pipeline: Option<String>,
    /// `ingest`, `transform` or `delivery`.
    pub stage: &'static str,
    pub error: Error,
    /// The record as received (a line, or the row as JSON).
    pub raw: Option<String>,
}

/// Appends dead letters to `sluice.errors` (durable when this returns).
pub async fn record(errors: &Stream, letters: &[DeadLetter]) -> Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    crate::fail::io("errors.append")?;
    let n = letters.len();
    let at = now_ms() * 1000;
    let batch = RecordBatch::try_new(
        errors.schema.clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC")),
            Arc::new(StringArray::from_iter(
                letters.iter().map(|l| l.stream.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                letters.iter().map(|l| l.pipeline.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                letters.iter().map(|l| l.stage),
            )),
            Arc::new(StringArray::from_iter_values(
                letters.iter().map(|l| l.error.sqlstate()),
            )),
            Arc::new(StringArray::from_iter_values(
                letters.iter().map(|l| l.error.to_string()),
            )),
            Arc::new(StringArray::from_iter(
                letters.iter().map(|l| l.raw.as_deref()),
            )),
            Arc::new(Int32Array::from(vec![1; n])),
        ],
    )?;
    errors.log.append(batch).await?;
    Ok(())
}

/// One row as a JSON object, for `sluice.errors.raw`.
pub fn row_json(row: &RecordBatch) -> Option<String> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(row).ok()?;
        writer.finish().ok()?;
    }
    String::from_utf8(out)
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Records in `sluice.errors` per stream (over what it retains), read
/// from its `stream` column.
pub fn counts_by_stream(errors: &Stream) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    let Some(column) = errors.def.columns.iter().position(|c| c.name == "stream") else {
        return counts;
    };
    let Ok(read) = errors.read_schema(Some(&[column])) else {
        return counts;
    };
    for shard in 0..errors.log.shard_count() {
        let mut from = 0;
        // A run at a time: the whole stream decoded at once could be large.
        while let Ok(Some(records)) = super::read_shard(
            &errors.log,
            shard,
            from,
            ReadLimits::records(COUNT_READ_RECORDS),
            &read,
        ) {
            for name in records.batch.column(0).as_string::<i32>().iter().flatten() {
                *counts.entry(name.to_string()).or_insert(0) += 1;
            }
            if records.end <= from {
                break;
            }
            from = records.end;
        }
    }
    counts
}
