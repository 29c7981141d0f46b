//! `COPY … FROM STDIN`: data arrives in CopyData chunks of any size; this
//! splits it into records (CSV quotes may span lines; binary tuples by
//! their length prefixes), fields (text-format escapes, CSV quoting, NULL
//! markers) and converts every 8192 rows to an Arrow batch, on a second
//! thread ([`convert`]) while the next rows are split. Batches stay in
//! memory up to [`COPY_MEMORY_BYTES`] (or `max_statement_bytes` if lower)
//! and are then stored with the statement's other appends in one group
//! commit; beyond that they go to the log as a bulk append, written to
//! disk while the rest arrives and committed at the end in one step.
//! Either way a COPY is all-or-nothing in bounded memory; with
//! `ON_ERROR 'dead_letter'` bad rows go to `sluice.errors` instead.

mod convert;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use crate::runtime::dead_letters::DeadLetter;
use datafusion::arrow::array::StringBuilder;

use super::copy_fields::{
    binary_header, binary_tuple, csv_fields, text_fields, BinaryTuple, Fields,
};
use super::rows::OnError;
use crate::error::{Error, Result};
use crate::log::BulkFiles;
use crate::runtime::Stream;
use crate::sql::{CopyFormat, CopyOptions};
use crate::types::SqlType;
use convert::{Chunk, Converter, Stage};

const CHUNK_ROWS: usize = 8192;

/// Decoded rows a COPY holds in memory before it writes them to the log as
/// a bulk append: small COPYs share group commits with other statements;
/// large ones are written while they arrive, so the commit at CopyDone
/// has little left to do.
pub const COPY_MEMORY_BYTES: u64 = 8 * 1024 * 1024;

/// The rows of a finished COPY.
pub(super) enum CopyRows {
    /// Decoded batches, stored as one append (routed batch by batch).
    InMemory(Vec<RecordBatch>),
    Spilled(BulkFiles),
}

/// A COPY in progress.
pub struct CopyIn {
    stream: Arc<Stream>,
    targets: Vec<usize>,
    force_null: Vec<bool>,
    options: CopyOptions,
    /// The longest record (`max_statement_bytes`).
    max_bytes: u64,
    /// Bytes of a record not yet complete.
    carry: Vec<u8>,
    /// How far into `carry` the record scan got, and its quote state there.
    scan_pos: usize,
    scan_in_quotes: bool,
    /// Newlines inside quotes of the record being scanned (for line numbers).
    scan_newlines: u64,
    /// Lines consumed so far (1-based line of the next record).
    line: u64,
    header_pending: bool,
    finished_marker: bool,
    /// Field text of buffered rows, one builder per target column.
    columns: Vec<StringBuilder>,
    /// Reused for each record's fields.
    fields: Fields,
    /// Per buffered row: its first line and raw text (kept for dead letters).
    row_info: Vec<(u64, Option<String>)>,
    /// The second stage, before its thread starts (a COPY of one chunk
    /// converts it here at the end and starts no thread).
    converter: Option<Converter>,
    /// The second stage on its thread, from the first full chunk on.
    stage: Option<Stage>,
    pub(super) dead_letters: Vec<DeadLetter>,
}

impl CopyIn {
    pub(super) fn new(
        stream: Arc<Stream>,
        targets: Vec<usize>,
        options: CopyOptions,
        max_bytes: u64,
    ) -> Self {
        let targets_len = targets.len();
        let force_null = targets
            .iter()
            .map(|t| options.force_null.contains(&stream.def.columns[*t].name))
            .collect();
        let mode = if options.dead_letter {
            OnError::Skip
        } else {
            OnError::Abort
        };
        let converter = Converter::new(
            stream.clone(),
            targets.clone(),
            mode,
            max_bytes.min(COPY_MEMORY_BYTES),
        );
        CopyIn {
            header_pending: options.header || options.format == CopyFormat::Binary,
            stream,
            targets,
            force_null,
            options,
            max_bytes,
            carry: Vec::new(),
            scan_pos: 0,
            scan_in_quotes: false,
            scan_newlines: 0,
            line: 1,
            finished_marker: false,
            columns: (0..targets_len).map(|_| StringBuilder::new()).collect(),
            fields: Fields::default(),
            row_info: Vec::new(),
            converter: Some(converter),
            stage: None,
            dead_letters: Vec::new(),
        }
    }

    /// How many columns each record carries.
    pub fn width(&self) -> usize {
        self.targets.len()
    }

    /// Consumes one CopyData chunk.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.feed_records(data).map_err(|e| self.earlier_error(e))
    }

    /// The error the COPY fails with when this stage met `error`: an
    /// error of a chunk already handed to the second stage is of an
    /// earlier row, and the first bad row is the one reported.
    fn earlier_error(&mut self, error: Error) -> Error {
        match self.stage.take().map(|mut stage| stage.join()) {
            Some(Err(earlier)) => earlier,
            _ => error,
        }
    }

    fn feed_records(&mut self, data: &[u8]) -> Result<()> {
        if self.finished_marker {
            return Ok(());
        }
        if self.options.format == CopyFormat::Binary {
            return self.feed_binary(data);
        }
        self.carry.extend_from_slice(data);
        let mut start = 0;
        // Resume the scan where the previous chunk left it, so a record
        // spread over many chunks is scanned once, not once per chunk.
        let mut in_quotes = self.scan_in_quotes;
        let mut embedded_newlines = self.scan_newlines;
        let mut i = self.scan_pos;
        let bytes = std::mem::take(&mut self.carry);
        // Jump from one byte that matters to the next (newline, quote,
        // escape); most of a record is skipped by memchr, not looked at.
        let csv = self.options.format == CopyFormat::Csv;
        let (quote, escape) = (self.options.quote, self.options.escape);
        let (x, y) = if csv { (quote, escape) } else { (b'\\', b'\\') };
        while let Some(found) = memchr::memchr3(b'\n', x, y, &bytes[i.min(bytes.len())..]) {
            i += found;
            let b = bytes[i];
            if csv {
                if in_quotes && b == escape && escape != quote {
                    i += 2;
                    continue;
                }
                if b == quote {
                    in_quotes = !in_quotes;
                }
            } else if b == b'\\' {
                i += 2;
                continue;
            }
            if b == b'\n' {
                if in_quotes {
                    embedded_newlines += 1;
                } else {
                    let record = &bytes[start..i];
                    self.record(record)?;
                    self.line += 1 + embedded_newlines;
                    embedded_newlines = 0;
                    start = i + 1;
                    if self.finished_marker {
                        return Ok(());
                    }
                }
            }
            i += 1;
        }
        // Nothing that matters after `i`: resume at the end (or past it,
        // when an escape's second byte is still to come).
        let i = i.max(bytes.len());
        self.scan_newlines = embedded_newlines;
        self.scan_pos = i - start;
        self.scan_in_quotes = in_quotes;
        self.carry = if start == 0 {
            bytes
        } else {
            bytes[start..].to_vec()
        };
        if self.carry.len() as u64 > self.max_bytes {
            return Err(Error::ProgramLimit(format!(
                "a COPY record longer than {} bytes",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// Binary format: length-prefixed tuples after a fixed header.
    fn feed_binary(&mut self, data: &[u8]) -> Result<()> {
        self.carry.extend_from_slice(data);
        let mut at = 0;
        if self.header_pending {
            match binary_header(&self.carry).map_err(|e| self.at_line(self.line, e))? {
                None => return Ok(()),
                Some(n) => {
                    at = n;
                    self.header_pending = false;
                }
            }
        }
        let types: Vec<SqlType> = self
            .targets
            .iter()
            .map(|t| self.stream.def.columns[*t].sql_type)
            .collect();
        loop {
            let mut fields = std::mem::take(&mut self.fields);
            fields.clear();
            match binary_tuple(&self.carry[at..], &types, &mut fields) {
                Ok(BinaryTuple::Incomplete) => {
                    self.fields = fields;
                    break;
                }
                Ok(BinaryTuple::Trailer) => {
                    self.fields = fields;
                    self.finished_marker = true;
                    break;
                }
                Ok(BinaryTuple::Row(n)) => {
                    let raw = if self.options.dead_letter {
                        self.carry[at..at + n].to_vec()
                    } else {
                        Vec::new()
                    };
                    at += n;
                    self.accept(fields, Ok(()), &raw)?;
                    self.line += 1;
                }
                // A malformed tuple leaves no way to find the next one.
                Err(e) => {
                    self.fields = fields;
                    return Err(self.at_line(self.line, e));
                }
            }
        }
        self.carry.drain(..at);
        if self.carry.len() as u64 > self.max_bytes {
            return Err(Error::ProgramLimit(format!(
                "a COPY row longer than {} bytes",
                self.max_bytes
            )));
        }
        Ok(())
    }

    fn record(&mut self, record: &[u8]) -> Result<()> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        if record == b"\\." {
            self.finished_marker = true;
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(());
        }
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        let parsed = match self.options.format {
            CopyFormat::Text => {
                text_fields(
                    record,
                    self.options.delimiter,
                    self.options.null.as_bytes(),
                    &mut fields,
                );
                Ok(())
            }
            CopyFormat::Csv => csv_fields(
                record,
                (
                    self.options.delimiter,
                    self.options.quote,
                    self.options.escape,
                ),
                self.options.null.as_bytes(),
                &self.force_null,
                &mut fields,
            ),
            CopyFormat::Binary => Err(Error::Internal("binary COPY data read as lines".into())),
        };
        self.accept(fields, parsed, record)
    }

    /// Takes one parsed record: checks it and appends its fields to the
    /// column builders (or dead-letters it).
    fn accept(&mut self, fields: Fields, parsed: Result<()>, record: &[u8]) -> Result<()> {
        let checked = parsed
            .and_then(|()| self.check_count(fields.spans.len()))
            .and_then(|()| {
                std::str::from_utf8(&fields.bytes).map_err(|e| {
                    Error::CharacterNotInRepertoire(format!(
                        "invalid byte sequence for encoding \"UTF8\": {e}"
                    ))
                })
            });
        let result = match checked {
            Ok(text) => {
                for (builder, span) in self.columns.iter_mut().zip(&fields.spans) {
                    builder.append_option(span.map(|(a, b)| &text[a..b]));
                }
                self.row_info.push((
                    self.line,
                    self.options
                        .dead_letter
                        .then(|| String::from_utf8_lossy(record).into_owned()),
                ));
                if self.row_info.len() >= CHUNK_ROWS {
                    self.flush()
                } else {
                    Ok(())
                }
            }
            Err(e) => self.bad_record(record, e),
        };
        self.fields = fields;
        result
    }

    fn check_count(&self, got: usize) -> Result<()> {
        let want = self.targets.len();
        if got > want {
            return Err(Error::BadCopyFormat(
                "extra data after last expected column".into(),
            ));
        }
        if got < want {
            let missing = &self.stream.def.columns[self.targets[got]].name;
            return Err(Error::BadCopyFormat(format!(
                "missing data for column \"{missing}\""
            )));
        }
        Ok(())
    }

    fn bad_record(&mut self, record: &[u8], error: Error) -> Result<()> {
        let error = self.at_line(self.line, error);
        if !self.options.dead_letter {
            return Err(error);
        }
        self.dead_letters.push(DeadLetter {
            stream: Some(self.stream.def.name.clone()),
            pipeline: None,
            stage: "ingest",
            error,
            raw: Some(String::from_utf8_lossy(record).into_owned()),
        });
        Ok(())
    }

    /// Adds Postgres's context line: `COPY t, line N`.
    fn at_line(&self, line: u64, error: Error) -> Error {
        convert::at_line(&self.stream, line, error)
    }

    /// The buffered rows as a chunk for the second stage.
    fn chunk(&mut self) -> Chunk {
        Chunk {
            text: self.columns.iter_mut().map(|b| b.finish()).collect(),
            info: std::mem::take(&mut self.row_info),
        }
    }

    /// Hands a full chunk to the second stage (starting its thread the
    /// first time); fails with the stage's error once it has one.
    fn flush(&mut self) -> Result<()> {
        if self.row_info.is_empty() {
            return Ok(());
        }
        if self.stage.is_none() {
            let converter = self
                .converter
                .take()
                .ok_or_else(|| Error::Internal("COPY converter missing".into()))?;
            self.stage = Some(Stage::start(converter)?);
        }
        let chunk = self.chunk();
        let stage = self
            .stage
            .as_mut()
            .ok_or_else(|| Error::Internal("COPY conversion not started".into()))?;
        if stage.failed() {
            // The stage is done with: its error is the COPY's.
            let mut stage = self.stage.take();
            return match stage.as_mut().map(Stage::join) {
                Some(Err(error)) => Err(error),
                _ => Err(Error::Internal(
                    "COPY conversion failed without an error".into(),
                )),
            };
        }
        stage.send(chunk)
    }

    /// Ends the input: the last record (without a newline) is taken too.
    /// Returns every good row, in memory or spilled.
    pub(super) fn finish(&mut self) -> Result<CopyRows> {
        self.finish_records().map_err(|e| self.earlier_error(e))?;
        let chunk = self.chunk();
        let converter = match self.stage.as_mut() {
            Some(stage) => {
                if !chunk.info.is_empty() {
                    stage.send(chunk)?;
                }
                stage.join()?
            }
            None => {
                let mut converter = self
                    .converter
                    .take()
                    .ok_or_else(|| Error::Internal("COPY converter missing".into()))?;
                if !chunk.info.is_empty() {
                    converter.convert(chunk)?;
                }
                converter
            }
        };
        let (rows, letters) = converter.finish()?;
        self.dead_letters.extend(letters);
        Ok(rows)
    }

    /// The checks at the end of the data, and the last record.
    fn finish_records(&mut self) -> Result<()> {
        if self.options.format == CopyFormat::Binary && !self.finished_marker {
            return Err(self.at_line(
                self.line,
                Error::BadCopyFormat("binary COPY data ended without its trailer".into()),
            ));
        }
        if !self.finished_marker && !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            if self.options.format == CopyFormat::Csv
                && rest.iter().filter(|&&b| b == self.options.quote).count() % 2 == 1
            {
                return Err(self.at_line(
                    self.line,
                    Error::BadCopyFormat("unterminated CSV quoted field".into()),
                ));
            }
            self.record(&rest)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
