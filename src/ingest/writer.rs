//! The one write path. Every way records reach a stream — literal
//! `INSERT … VALUES`, COPY, HTTP records, Kinesis puts, `INSERT … SELECT` —
//! goes through a [`Writer`], which owns the may-it-be-written check, the
//! statement size bound, NOT NULL and casts, dead letters and the append.
//! The decoders (`rows`, `copy`, `json`) turn input into batches; only
//! the writer hands them to the log.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BinaryArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::{dead_letters, DeadLetter, Stream, Streams};
use crate::sql::{CopyOptions, InsertValues};

use super::copy::{CopyIn, CopyRows};
use super::json::RecordResult;
use super::rows::{build_batch, resolve_targets, OnError};

/// What a size error calls the write and what it advises instead.
struct WriteKind {
    name: &'static str,
    advice: &'static str,
}

const INSERT: WriteKind = WriteKind {
    name: "INSERT",
    advice: "split it or use COPY",
};
const PUT_RECORDS: WriteKind = WriteKind {
    name: "PutRecords",
    advice: "split it",
};
const REQUEST: WriteKind = WriteKind {
    name: "request",
    advice: "split it",
};

/// Writes one statement's or request's records into a stream.
#[derive(Debug, Clone)]
pub struct Writer {
    stream: Arc<Stream>,
    /// `sluice.errors`, for the paths that dead-letter bad records.
    errors: Option<Arc<Stream>>,
    max_statement_bytes: u64,
}

impl Writer {
    /// The writer of the stream called `name`: 42P01 when there is none,
    /// 42809 when users may not write it.
    pub fn open(streams: &Streams, name: &str, max_statement_bytes: u64) -> Result<Writer> {
        Writer::new(
            streams.require(name)?,
            streams.errors(),
            max_statement_bytes,
        )
    }

    /// The writer of `stream` (42809 when users may not write it).
    pub fn new(
        stream: Arc<Stream>,
        errors: Option<Arc<Stream>>,
        max_statement_bytes: u64,
    ) -> Result<Writer> {
        stream.check_insertable()?;
        Ok(Writer {
            stream,
            errors,
            max_statement_bytes,
        })
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// 54000 when a statement of `bytes` is over `max_statement_bytes`.
    fn check_size(&self, bytes: u64, kind: &WriteKind) -> Result<()> {
        if bytes > self.max_statement_bytes {
            return Err(Error::ProgramLimit(format!(
                "{} into \"{}\" of {bytes} bytes exceeds max_statement_bytes ({}); {}",
                kind.name, self.stream.def.name, self.max_statement_bytes, kind.advice
            )));
        }
        Ok(())
    }

    /// Checks a literal INSERT against the stream (columns, row widths,
    /// size) without converting a value: what Parse reports.
    pub fn check_values(&self, insert: &InsertValues) -> Result<Vec<usize>> {
        let targets = resolve_targets(&self.stream, insert.columns.as_deref())?;
        for row in &insert.rows {
            if row.len() > targets.len() {
                return Err(Error::Syntax(
                    "INSERT has more expressions than target columns".into(),
                ));
            }
            if row.len() < targets.len() && insert.columns.is_some() {
                return Err(Error::Syntax(
                    "INSERT has more target columns than expressions".into(),
                ));
            }
        }
        // The literal text bounds the batch: refuse before building it.
        self.check_size(insert.literal_bytes(), &INSERT)?;
        Ok(targets)
    }

    /// Stores a literal INSERT as one unit; the error names the first bad
    /// value, its column and the relation.
    pub async fn insert_values(&self, insert: &InsertValues) -> Result<u64> {
        let targets = self.check_values(insert)?;
        let (batch, _) = build_batch(&self.stream, &targets, &insert.rows, OnError::Abort)
            .map_err(|e| e.error)?;
        self.check_size(batch.get_array_memory_size() as u64, &INSERT)?;
        Ok(self.stream.log.append(batch).await?.records())
    }

    /// Stores the rows of `INSERT … SELECT` as one unit, refusing NULLs in
    /// NOT NULL columns and statements over the size bound as they arrive.
    pub async fn insert_stream(&self, mut data: SendableRecordBatchStream) -> Result<u64> {
        let mut batches = Vec::new();
        let mut bytes = 0u64;
        while let Some(batch) = data.next().await {
            let batch = self.conform(batch?)?;
            bytes += batch.get_array_memory_size() as u64;
            self.check_size(bytes, &INSERT)?;
            batches.push(batch);
        }
        let all = concat_batches(&self.stream.schema, &batches)?;
        Ok(self.stream.log.append(all).await?.records())
    }

    /// Rebuilds a batch on the stream's schema (casting where the query's
    /// types differ), refusing NULLs in NOT NULL columns with the Postgres
    /// message.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let target = &self.stream.schema;
        let mut columns = Vec::with_capacity(target.fields().len());
        for (field, column) in target.fields().iter().zip(batch.columns()) {
            if !field.is_nullable() && column.logical_null_count() > 0 {
                return Err(Error::not_null(field.name(), &self.stream.def.name));
            }
            columns.push(if column.data_type() == field.data_type() {
                column.clone()
            } else {
                cast(column, field.data_type())?
            });
        }
        Ok(RecordBatch::try_new(target.clone(), columns)?)
    }

    /// A COPY FROM STDIN into the stream (`columns` as the statement names
    /// them); feed it, then [`Writer::finish_copy`].
    pub fn copy_in(&self, columns: Option<&[String]>, options: CopyOptions) -> Result<CopyIn> {
        let targets = resolve_targets(&self.stream, columns)?;
        Ok(CopyIn::new(
            self.stream.clone(),
            targets,
            options,
            self.max_statement_bytes,
        ))
    }

    /// Stores a fed COPY as one append, after its dead letters (see
    /// [`Writer::store`] for why in that order).
    pub async fn finish_copy(&self, copy: &mut CopyIn) -> Result<u64> {
        let rows = copy.finish()?;
        self.dead_letters(&copy.dead_letters).await?;
        let ack = match rows {
            CopyRows::InMemory(batches) => self.stream.log.append_batches(batches).await?,
            CopyRows::Spilled(files) => {
                let stored = self.stream.log.append_bulk(files).await;
                tokio::task::spawn_blocking(crate::runtime::release_free_heap);
                stored?
            }
        };
        Ok(ack.records())
    }

    /// Stores opaque records as sent (a Kinesis-shaped stream: partition
    /// key, data, arrival time), each with its position.
    pub async fn blobs(&self, records: &[(String, Vec<u8>)]) -> Result<Vec<RecordResult>> {
        let bytes: usize = records.iter().map(|(k, d)| k.len() + d.len()).sum();
        self.check_size(bytes as u64, &PUT_RECORDS)?;
        let now_us = now_ms() * 1000;
        let batch = RecordBatch::try_new(
            self.stream.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(BinaryArray::from_iter_values(
                    records.iter().map(|r| r.1.as_slice()),
                )),
                Arc::new(TimestampMicrosecondArray::from(vec![now_us; records.len()])),
            ],
        )?;
        Ok(self
            .stream
            .log
            .append_positions(batch)
            .await?
            .into_iter()
            .map(|(shard, sequence)| RecordResult::Stored { shard, sequence })
            .collect())
    }

    /// Stores a request's good rows (already of the stream's schema and
    /// validated) and the dead letters of its bad ones, answering each
    /// row's position. The two live in different logs, so they cannot
    /// commit as one; the dead letters go first, so a failure never leaves
    /// a client with an error for rows that were stored (its retry would
    /// store them twice). The one window left, letters stored and then the
    /// rows' append failing, can at worst record a bad record twice in
    /// `sluice.errors` when the client retries; never a good row twice.
    pub(super) async fn store(
        &self,
        batch: RecordBatch,
        letters: &[DeadLetter],
    ) -> Result<Vec<(u32, u64)>> {
        self.check_size(batch.get_array_memory_size() as u64, &REQUEST)?;
        self.dead_letters(letters).await?;
        self.stream.log.append_positions(batch).await
    }

    /// Writes dead letters to `sluice.errors` (durable when this returns).
    pub(super) async fn dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        match &self.errors {
            Some(errors) => dead_letters::record(errors, letters).await,
            None => Ok(()),
        }
    }
}
