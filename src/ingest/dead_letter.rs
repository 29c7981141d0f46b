//! Writing to `sluice.errors`, the one dead-letter stream of every stage.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};

use crate::engine::{now_ms, Stream};
use crate::error::{Error, Result};
use crate::types::{ColumnDef, SqlType};

/// The columns of `sluice.errors`, the dead-letter stream of every stage.
pub fn errors_columns() -> Vec<ColumnDef> {
    let col = |name: &str, sql_type: SqlType, nullable: bool| ColumnDef {
        name: name.into(),
        sql_type,
        nullable,
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
