//! The COPY sub-protocol: `COPY … FROM STDIN` feeds CopyData chunks to an
//! [`CopyIn`] decoder and stores the rows as one unit on CopyDone;
//! `COPY … TO STDOUT` streams query results as text or CSV lines, or in
//! PostgreSQL's binary format.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyEncoder, CopyResponse, Response};
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;

use super::connection::{Activity, Busy};
use super::to_pg_error;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ingest::{CopyIn, Writer};
use crate::query::guard::plan_read_only;
use crate::sql::{CopyFormat, CopyOptions, CopySource, CopyStatement};

/// CopyData chunks queued for the decoder thread; bounds the memory of
/// a COPY that arrives faster than it is decoded (backpressure on the
/// socket beyond it).
const QUEUED_CHUNKS: usize = 16;
/// CopyData messages smaller than this are joined into one chunk of about
/// this size before they go to the decoder. psql's `\copy` sends one
/// message per line: a 320 MB COPY was a million hand-offs to the decoder
/// thread (each a channel send and often a futex wake-up), ~23 000
/// context switches a second.
const CHUNK_BYTES: usize = 64 * 1024;

/// The COPY FROM STDIN of one connection: chunks go to a decoder on a
/// blocking thread, so receiving (pgwire framing) and decoding (records,
/// fields, Arrow conversion) run on two cores.
pub struct CopyState {
    /// A COPY is one statement from its start to CopyDone or CopyFail.
    _busy: Busy,
    writer: Writer,
    chunks: tokio::sync::mpsc::Sender<bytes::Bytes>,
    /// Small CopyData messages not yet sent, in order.
    pending: bytes::BytesMut,
    /// The decoder and the first error it met (the rest of the data is
    /// discarded until CopyDone).
    decoder: tokio::task::JoinHandle<(Box<CopyIn>, Option<Error>)>,
}

impl CopyState {
    fn start(busy: Busy, writer: Writer, mut decoder: Box<CopyIn>) -> CopyState {
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(QUEUED_CHUNKS);
        let decoder = tokio::task::spawn_blocking(move || {
            let mut failed = None;
            while let Some(chunk) = rx.blocking_recv() {
                if failed.is_none() {
                    failed = decoder.feed(&chunk).err();
                }
            }
            (decoder, failed)
        });
        CopyState {
            _busy: busy,
            writer,
            chunks,
            pending: bytes::BytesMut::new(),
            decoder,
        }
    }

    /// Passes `data` on to the decoder, joining small messages.
    async fn push(&mut self, data: bytes::Bytes) {
        if data.len() >= CHUNK_BYTES {
            self.send_pending().await;
            self.send(data).await;
            return;
        }
        self.pending.extend_from_slice(&data);
        if self.pending.len() >= CHUNK_BYTES {
            self.send_pending().await;
        }
    }

    async fn send_pending(&mut self) {
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.send(chunk).await;
        }
    }

    async fn send(&self, chunk: bytes::Bytes) {
        // Fails only if the decoder is gone; CopyDone reports why.
        let _ = self.chunks.send(chunk).await;
    }

    /// Waits for the decoder to take every chunk sent, then stores the
    /// COPY as one unit.
    async fn finish(mut self) -> Result<u64> {
        self.send_pending().await;
        drop(self.chunks);
        let mut decoder = match self.decoder.await {
            Ok((decoder, None)) => decoder,
            Ok((_, Some(e))) => return Err(e),
            Err(e) => return Err(Error::Internal(format!("COPY decoder: {e}"))),
        };
        self.writer.finish_copy(&mut decoder).await
    }
}

/// The COPY FROM STDIN in progress on a connection, if any: CopyData,
/// CopyDone and CopyFail messages go to it.
#[derive(Default)]
pub(super) struct PendingCopy(tokio::sync::Mutex<Option<CopyState>>);

impl PendingCopy {
    /// Passes a CopyData message's bytes on (ignored without a COPY: the
    /// client gets its error at CopyDone).
    pub(super) async fn push(&self, data: bytes::Bytes) {
        if let Some(state) = self.0.lock().await.as_mut() {
            state.push(data).await;
        }
    }

    /// CopyDone: stores every row as one unit; the rows stored.
    pub(super) async fn done(&self) -> Result<u64> {
        let Some(state) = self.0.lock().await.take() else {
            return Err(Error::Internal("CopyDone without COPY".into()));
        };
        state.finish().await
    }

    /// CopyFail: nothing of the COPY is stored.
    pub(super) async fn fail(&self, message: &str) -> Error {
        self.0.lock().await.take();
        Error::Canceled(format!("COPY from stdin failed: {message}"))
    }
}

/// Starts `COPY … FROM STDIN`: answers CopyInResponse; the data follows
/// into `pending`.
pub(super) async fn copy_from_stdin(
    engine: &Engine,
    activity: &Arc<Activity>,
    pending: &PendingCopy,
    copy: CopyStatement,
) -> Result<Response> {
    let CopySource::Table { name, columns } = &copy.source else {
        return Err(Error::Syntax("COPY (query) works only TO STDOUT".into()));
    };
    let writer = engine
        .writer(name)?
        .ok_or_else(|| Error::UndefinedTable(name.clone()))?;
    let format = copy_format(copy.options.format);
    let decoder = writer.copy_in(columns.as_deref(), copy.options)?;
    let columns = decoder.width();
    *pending.0.lock().await = Some(CopyState::start(
        activity.enter(),
        writer,
        Box::new(decoder),
    ));
    // The format advertised is the one decoded: clients (psycopg) encode
    // what CopyInResponse says.
    Ok(Response::CopyIn(CopyResponse::new(
        format,
        columns,
        futures::stream::empty(),
    )))
}

/// Runs `COPY … TO STDOUT`: the query's rows as CopyData, in text, CSV or
/// PostgreSQL's binary format.
pub(super) async fn copy_to_stdout(ctx: &SessionContext, copy: CopyStatement) -> Result<Response> {
    let query = match &copy.source {
        CopySource::Query(q) => q.clone(),
        CopySource::Table { name, columns } => format!(
            "SELECT {} FROM \"{name}\"",
            columns.as_ref().map_or("*".to_string(), |c| c
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "))
        ),
    };
    let plan = plan_read_only(&ctx.state(), &query).await?;
    let df = ctx.execute_logical_plan(plan).await?;
    let columns = df.schema().fields().len();
    if copy.options.format == CopyFormat::Binary {
        let schema = df.schema().as_arrow().clone();
        let batches = df.execute_stream().await?;
        // Built as text and marked binary: the trailer is sent here (with
        // the header when there are no rows, as PostgreSQL does), not
        // appended by pgwire.
        let mut response = CopyResponse::new(0, columns, binary_copy_out(schema, batches)?);
        response.format = 1;
        return Ok(Response::CopyOut(response));
    }
    let header = copy.options.header.then(|| {
        df.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    });
    let batches = df.execute_stream().await?;
    Ok(Response::CopyOut(CopyResponse::new(
        0,
        columns,
        text_copy_out(header, batches, Arc::new(copy.options)),
    )))
}

/// Text or CSV lines of `batches`, after a header line if asked.
fn text_copy_out(
    header: Option<Vec<String>>,
    batches: SendableRecordBatchStream,
    options: Arc<CopyOptions>,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> + Send {
    let header_line = header.map(|names| {
        let cells: Vec<Option<String>> = names.into_iter().map(Some).collect();
        Ok(CopyData::new(encode_line(&cells, &options).into()))
    });
    let rows = batches.flat_map(move |batch| {
        let lines: Vec<PgWireResult<CopyData>> = match batch {
            Ok(batch) => match encode_batch(&batch, &options) {
                Ok(lines) => lines
                    .into_iter()
                    .map(|l| Ok(CopyData::new(l.into())))
                    .collect(),
                Err(e) => vec![Err(to_pg_error(e))],
            },
            Err(e) => vec![Err(to_pg_error(Error::from_datafusion(e)))],
        };
        futures::stream::iter(lines)
    });
    futures::stream::iter(header_line).chain(rows)
}

fn copy_format(format: CopyFormat) -> i8 {
    i8::from(format == CopyFormat::Binary)
}

/// PostgreSQL's binary COPY: the signature header, then one tuple per
/// row, each value in its type's binary send format (arrow-pg's, as
/// binary query results use), then the trailer.
fn binary_copy_out(
    schema: Schema,
    batches: SendableRecordBatchStream,
) -> Result<impl futures::Stream<Item = PgWireResult<CopyData>> + Send> {
    /// Signature, flags, header extension length (PostgreSQL's COPY docs).
    const HEADER: &[u8] = b"PGCOPY\n\xFF\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let fields = arrow_schema_to_pg_fields(&schema, &Format::UnifiedBinary, None)
        .map_err(|e| Error::FeatureNotSupported(format!("binary COPY of this result: {e}")))?;
    let mut encoder = CopyEncoder::new_binary(Arc::new(fields.clone()));
    // The encoder puts the header in front of the first tuple, as
    // PostgreSQL does (psycopg expects them in one message); a result
    // without rows gets header and trailer in one message.
    let rows_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = rows_sent.clone();
    let rows = batches.flat_map(move |batch| {
        let mut out = Vec::new();
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                out.push(Err(to_pg_error(Error::from_datafusion(e))));
                return futures::stream::iter(out);
            }
        };
        out.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            let encoded = batch
                .columns()
                .iter()
                .enumerate()
                .try_for_each(|(i, column)| {
                    encode_value(&mut encoder, column, row, schema.field(i), &fields[i])
                });
            if let Err(e) = encoded {
                out.push(Err(e));
                break;
            }
            out.push(Ok(encoder.take_copy()));
            sent.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        futures::stream::iter(out)
    });
    let end = futures::stream::once(async move {
        let trailer = CopyEncoder::finish_copy_binary();
        if rows_sent.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(trailer);
        }
        let mut data = bytes::BytesMut::from(HEADER);
        data.extend_from_slice(&trailer.data);
        Ok(CopyData::new(data.freeze()))
    });
    Ok(rows.chain(end))
}

/// One line per row; every column formatted as Postgres text output.
fn encode_batch(batch: &RecordBatch, options: &CopyOptions) -> Result<Vec<String>> {
    let format = FormatOptions::new()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &format))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut lines = Vec::with_capacity(batch.num_rows());
    let mut cells: Vec<Option<String>> = Vec::with_capacity(batch.num_columns());
    for row in 0..batch.num_rows() {
        cells.clear();
        for (column, formatter) in batch.columns().iter().zip(&formatters) {
            cells.push((!column.is_null(row)).then(|| formatter.value(row).to_string()));
        }
        lines.push(encode_line(&cells, options));
    }
    Ok(lines)
}

fn encode_line(cells: &[Option<String>], options: &CopyOptions) -> String {
    let delimiter = options.delimiter as char;
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push(delimiter);
        }
        match (cell, options.format) {
            (None, _) => line.push_str(&options.null),
            (Some(v), CopyFormat::Text | CopyFormat::Binary) => {
                for c in v.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        '\t' => line.push_str("\\t"),
                        c if c == delimiter => {
                            line.push('\\');
                            line.push(c);
                        }
                        c => line.push(c),
                    }
                }
            }
            (Some(v), CopyFormat::Csv) => {
                let quote = options.quote as char;
                let needs_quotes = v.is_empty()
                    || v.contains([delimiter, quote, '\n', '\r'])
                    || *v == options.null;
                if needs_quotes {
                    line.push(quote);
                    for c in v.chars() {
                        if c == quote {
                            line.push(options.escape as char);
                        }
                        line.push(c);
                    }
                    line.push(quote);
                } else {
                    line.push_str(v);
                }
            }
        }
    }
    line.push('\n');
    line
}
