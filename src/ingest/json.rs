//! JSON records (NDJSON lines or a JSON array of objects) to rows of a
//! stream, with a fate per record: stored at (shard, sequence), or failed
//! with a SQLSTATE and message (and written to `sluice.errors`).

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::rows::{build_batch, OnError};
use super::Writer;
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{DeadLetter, Stream};
use crate::types::SqlType;

/// How a request body holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonBody {
    /// One JSON object per line; a bad line fails alone.
    Lines,
    /// One JSON array (or one object); a body that does not parse is
    /// refused whole.
    Document,
}

/// The fate of one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum RecordResult {
    Stored {
        shard: u32,
        sequence: u64,
    },
    Failed {
        #[serde(skip)]
        kind: ErrorKind,
        error_code: String,
        error_message: String,
    },
}

#[derive(Debug, serde::Serialize)]
pub struct IngestReport {
    pub failed: usize,
    pub records: Vec<RecordResult>,
    /// Fields that named no column (ignored).
    pub unknown_fields: u64,
}

/// A record as received (for dead letters; borrowed from the request body
/// where it can be) and its parsed JSON.
pub type JsonRecord<'a> = (Cow<'a, str>, std::result::Result<Value, Error>);

impl Writer {
    /// Decodes, validates and stores JSON records; failed ones go to
    /// `sluice.errors`. `Err` only when the request as a whole is refused:
    /// a document that does not parse, or more than `max_records` records
    /// (counted before any is parsed, so a body of tiny records cannot
    /// multiply into per-record state).
    pub async fn json(
        &self,
        body: &[u8],
        kind: JsonBody,
        max_records: usize,
    ) -> Result<IngestReport> {
        let too_many = || {
            Error::ProgramLimit(format!(
                "the request holds more than {max_records} records (limits.max_request_records); split it"
            ))
        };
        let records: Vec<JsonRecord> = match kind {
            JsonBody::Lines => {
                // Newlines bound the lines from above; count exactly only
                // when the bound is over the limit.
                if memchr::memchr_iter(b'\n', body).count().saturating_add(1) > max_records
                    && count_lines(body) > max_records
                {
                    return Err(too_many());
                }
                body.split(|&b| b == b'\n')
                    .enumerate()
                    .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                    .map(|(i, line)| {
                        let raw = match String::from_utf8_lossy(line) {
                            Cow::Borrowed(text) => Cow::Borrowed(text.trim_end_matches('\r')),
                            Cow::Owned(text) => Cow::Owned(text.trim_end_matches('\r').to_string()),
                        };
                        let value = serde_json::from_slice::<Value>(line).map_err(|e| {
                            Error::InvalidText(format!("line {}: invalid JSON: {e}", i + 1))
                        });
                        (raw, value)
                    })
                    .collect()
            }
            JsonBody::Document => {
                let invalid = |e: serde_json::Error| {
                    Error::InvalidText(format!(
                        "invalid JSON at byte {}: {e}; nothing was stored",
                        byte_offset(body, e.line(), e.column())
                    ))
                };
                let items = document_items(body, max_records).map_err(|e| match e {
                    DocumentError::TooMany => too_many(),
                    DocumentError::Json(e) => invalid(e),
                })?;
                items
                    .into_iter()
                    .map(|raw| {
                        let text = raw.get();
                        (
                            Cow::Borrowed(text),
                            serde_json::from_str::<Value>(text).map_err(invalid),
                        )
                    })
                    .collect()
            }
        };
        self.records(records).await
    }

    /// Stores parsed JSON records (one object each), a fate per record.
    pub async fn records(&self, records: Vec<JsonRecord<'_>>) -> Result<IngestReport> {
        let stream = self.stream();
        if records.is_empty() {
            return Err(Error::InvalidText("the request holds no records".into()));
        }
        let mut results: Vec<Option<RecordResult>> = vec![None; records.len()];
        let mut letters = Vec::new();
        let mut rows = Vec::new();
        let mut row_records = Vec::new();
        let mut unknown_fields = 0u64;
        for (index, (raw, value)) in records.iter().enumerate() {
            let row = value
                .as_ref()
                .map_err(|e| Error::InvalidText(e.to_string()))
                .and_then(|v| object_row(stream, v, &mut unknown_fields));
            match row {
                Ok(row) => {
                    rows.push(row);
                    row_records.push(index);
                }
                Err(error) => fail(&mut results, &mut letters, stream, index, raw, error),
            }
        }
        let targets: Vec<usize> = (0..stream.def.columns.len()).collect();
        let (batch, bad) =
            build_batch(stream, &targets, &rows, OnError::Skip).map_err(|e| e.error)?;
        for bad in bad {
            let index = row_records[bad.row];
            fail(
                &mut results,
                &mut letters,
                stream,
                index,
                &records[index].0,
                bad.error,
            );
        }
        let stored: Vec<usize> = row_records
            .into_iter()
            .filter(|i| results[*i].is_none())
            .collect();
        let positions = self.store(batch, &letters).await?;
        for (index, (shard, sequence)) in stored.into_iter().zip(positions) {
            results[index] = Some(RecordResult::Stored { shard, sequence });
        }
        let records: Vec<RecordResult> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or(RecordResult::Failed {
                    kind: ErrorKind::Internal,
                    error_code: ErrorKind::Internal.sqlstate().into(),
                    error_message: "record lost track of".into(),
                })
            })
            .collect();
        Ok(IngestReport {
            failed: records
                .iter()
                .filter(|r| matches!(r, RecordResult::Failed { .. }))
                .count(),
            records,
            unknown_fields,
        })
    }
}

fn fail(
    results: &mut [Option<RecordResult>],
    letters: &mut Vec<DeadLetter>,
    stream: &Stream,
    index: usize,
    raw: &str,
    error: Error,
) {
    results[index] = Some(RecordResult::Failed {
        kind: error.kind(),
        error_code: error.sqlstate().to_string(),
        error_message: error.to_string(),
    });
    letters.push(DeadLetter {
        stream: Some(stream.def.name.clone()),
        pipeline: None,
        stage: "ingest",
        error,
        raw: Some(raw.to_string()),
    });
}

/// A JSON object's fields as text per stream column, like COPY fields.
fn object_row(stream: &Stream, value: &Value, unknown: &mut u64) -> Result<Vec<Option<String>>> {
    let Value::Object(map) = value else {
        return Err(Error::DatatypeMismatch(format!(
            "a record must be a JSON object, got {}",
            kind_of(value)
        )));
    };
    let extra: Vec<&String> = map
        .keys()
        .filter(|k| !stream.def.columns.iter().any(|c| &c.name == *k))
        .collect();
    if stream.def.reject_unknown_fields && !extra.is_empty() {
        return Err(Error::UndefinedColumn(format!(
            "field(s) {extra:?} name no column of stream \"{}\" (unknown_fields = 'error')",
            stream.def.name
        )));
    }
    *unknown += extra.len() as u64;
    Ok(stream
        .def
        .columns
        .iter()
        .map(|c| match map.contains_key(&c.name) {
            true => field_text(map, &c.name, c.sql_type),
            // An absent field takes the column's DEFAULT (an explicit null
            // stays NULL).
            false => c.default.clone(),
        })
        .collect())
}

fn field_text(map: &Map<String, Value>, name: &str, sql_type: SqlType) -> Option<String> {
    match map.get(name)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if matches!(sql_type, SqlType::Timestamp | SqlType::TimestampTz) => {
            Some(epoch_to_iso(n.as_f64().unwrap_or_default()))
        }
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Epoch seconds (or milliseconds, when the number is too large to be
/// seconds) as an ISO-8601 UTC timestamp.
fn epoch_to_iso(epoch: f64) -> String {
    let micros = if epoch.abs() >= 1e11 {
        epoch * 1e3
    } else {
        epoch * 1e6
    } as i64;
    micros_to_iso(micros)
}

/// Microseconds since 1970-01-01 UTC as an ISO-8601 timestamp.
pub(super) fn micros_to_iso(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub_micros = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (y, m, d) = crate::types::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{sub_micros:06}",
        day_secs / 3600,
        (day_secs / 60) % 60,
        day_secs % 60
    )
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Lines holding something (what NDJSON counts as records).
fn count_lines(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .count()
}

enum DocumentError {
    TooMany,
    Json(serde_json::Error),
}

/// The records of a JSON document, each as its raw text inside `body`
/// (no tree is built for them here): an array's elements, or the one
/// value. Stops at `max` elements.
fn document_items(body: &[u8], max: usize) -> std::result::Result<Vec<&RawValue>, DocumentError> {
    use serde::de::{Deserializer, SeqAccess, Visitor};

    struct Elements<'c> {
        max: usize,
        exceeded: &'c std::cell::Cell<bool>,
    }
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = Vec<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }

        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if out.len() == self.max {
                    self.exceeded.set(true);
                    return Err(serde::de::Error::custom("too many records"));
                }
                out.push(item);
            }
            Ok(out)
        }
    }

    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = if is_array {
        let exceeded = std::cell::Cell::new(false);
        match de.deserialize_seq(Elements {
            max,
            exceeded: &exceeded,
        }) {
            Ok(items) => items,
            Err(_) if exceeded.get() => return Err(DocumentError::TooMany),
            Err(e) => return Err(DocumentError::Json(e)),
        }
    } else {
        vec![<&RawValue as serde::Deserialize>::deserialize(&mut de).map_err(DocumentError::Json)?]
    };
    de.end().map_err(DocumentError::Json)?;
    Ok(items)
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = body
        .split(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    line_start + column.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_become_utc_timestamps() {
        assert_eq!(epoch_to_iso(0.0), "1970-01-01T00:00:00.000000");
        assert_eq!(epoch_to_iso(1_795_611_600.5), "2026-11-25T13:00:00.500000");
        assert_eq!(
            epoch_to_iso(1_795_611_600_250.0),
            "2026-11-25T13:00:00.250000"
        );
        assert_eq!(epoch_to_iso(951_782_400.0), "2000-02-29T00:00:00.000000");
    }

    #[test]
    fn offsets_point_into_the_body() {
        let body = b"[{\"a\": 1},\n {\"a\": }]";
        let e = serde_json::from_slice::<Value>(body).unwrap_err();
        assert_eq!(body[byte_offset(body, e.line(), e.column())], b'}');
    }
}
