//! The one conversion every ingest path shares: rows of field text (SQL
//! literals, COPY fields, JSON values) to a RecordBatch of a stream's
//! schema. Each column is cast once, like Postgres coerces untyped input;
//! only when a cast fails are values tried one by one to find the bad rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryBuilder, BooleanArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast_with_options, filter, CastOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

use crate::error::{Error, Result};
use crate::runtime::Stream;

/// What to do with a row that does not convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail the whole statement with the first bad row's error.
    Abort,
    /// Leave the row out and report it.
    Skip,
}

/// A row that did not convert, by its index in the input.
#[derive(Debug)]
pub struct RowError {
    pub row: usize,
    pub error: Error,
}

/// Converts `rows` (field text per entry of `targets`, which names stream
/// columns; missing columns are NULL) to a batch of the stream's schema.
/// With [`OnError::Abort`] the first bad row is the error; with
/// [`OnError::Skip`] bad rows are left out and returned. Within a row the
/// first failing column (in stream order) is reported.
pub fn build_batch(
    stream: &Stream,
    targets: &[usize],
    rows: &[Vec<Option<String>>],
    on_error: OnError,
) -> std::result::Result<(RecordBatch, Vec<RowError>), RowError> {
    let text: Vec<StringArray> = (0..targets.len())
        .map(|position| {
            StringArray::from_iter(
                rows.iter()
                    .map(|r| r.get(position).and_then(|v| v.as_deref())),
            )
        })
        .collect();
    build_batch_columns(stream, targets, &text, rows.len(), on_error)
}

/// Converts field text to a column type: PostgreSQL's bytea input
/// (`\x` hex, or the escape format) for bytea, Arrow's cast otherwise.
/// With `safe` options a bad value becomes NULL instead of an error.
fn cast_text(
    text: &StringArray,
    data_type: &DataType,
    options: &CastOptions,
) -> std::result::Result<ArrayRef, ArrowError> {
    if *data_type != DataType::Binary {
        return cast_with_options(text, data_type, options);
    }
    let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
    for value in text.iter() {
        match value.map(bytea_from_text) {
            None => out.append_null(),
            Some(Some(bytes)) => out.append_value(bytes),
            Some(None) if options.safe => out.append_null(),
            Some(None) => {
                return Err(ArrowError::CastError(
                    "invalid input syntax for type bytea".into(),
                ))
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// PostgreSQL's bytea text input: `\x` then hex digit pairs (spaces
/// between pairs allowed), else the escape format (`\\` and `\ooo`
/// octal escapes, other bytes as they are).
pub fn bytea_from_text(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
        return digits
            .chunks(2)
            .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            out.push(bytes[at]);
            at += 1;
        } else if bytes.get(at + 1) == Some(&b'\\') {
            out.push(b'\\');
            at += 2;
        } else {
            let octal = bytes.get(at + 1..at + 4)?;
            if !octal.iter().all(|d| (b'0'..=b'7').contains(d)) || octal[0] > b'3' {
                return None;
            }
            out.push(octal.iter().fold(0u8, |v, d| v * 8 + (d - b'0')));
            at += 4;
        }
    }
    Some(out)
}

/// [`build_batch`] for input already in columns: `text[i]` holds the field
/// text of stream column `targets[i]` for all `n` rows.
pub fn build_batch_columns(
    stream: &Stream,
    targets: &[usize],
    text_columns: &[StringArray],
    n: usize,
    on_error: OnError,
) -> std::result::Result<(RecordBatch, Vec<RowError>), RowError> {
    let def = &stream.def;
    let schema = &stream.schema;
    let mut bad: Vec<Option<Error>> = (0..n).map(|_| None).collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(def.columns.len());
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    for (index, column) in def.columns.iter().enumerate() {
        let data_type = schema.field(index).data_type();
        let array = match targets.iter().position(|t| *t == index) {
            Some(position) => {
                let text = &text_columns[position];
                match cast_text(text, data_type, &strict) {
                    Ok(array) => array,
                    Err(_) => {
                        for (row, slot) in bad.iter_mut().enumerate() {
                            if text.is_valid(row)
                                && cast_text(&text.slice(row, 1), data_type, &strict).is_err()
                            {
                                let error = conversion_error(text.value(row), column, &def.name);
                                slot.get_or_insert(error);
                            }
                        }
                        // Bad values become NULL here; their rows are dropped below.
                        cast_text(text, data_type, &CastOptions::default()).map_err(|e| {
                            RowError {
                                row: 0,
                                error: e.into(),
                            }
                        })?
                    }
                }
            }
            // A column the statement does not name: its DEFAULT, else NULL.
            None => match stream.defaults.get(index).and_then(Option::as_ref) {
                Some(value) => value.to_array_of_size(n).map_err(|e| RowError {
                    row: 0,
                    error: e.into(),
                })?,
                None => new_null_array(data_type, n),
            },
        };
        if !column.nullable && array.null_count() > 0 {
            for (row, slot) in bad.iter_mut().enumerate() {
                if array.is_null(row) && slot.is_none() {
                    *slot = Some(Error::not_null(&column.name, &def.name));
                }
            }
        }
        columns.push(array);
    }
    let mut errors: Vec<RowError> = bad
        .iter_mut()
        .enumerate()
        .filter_map(|(row, e)| e.take().map(|error| RowError { row, error }))
        .collect();
    if on_error == OnError::Abort && !errors.is_empty() {
        // The first bad row, as Postgres reports it (checked column by
        // column, so the lowest row is not always found first).
        return Err(errors.swap_remove(0));
    }
    if !errors.is_empty() {
        let keep =
            BooleanArray::from_iter((0..n).map(|row| Some(!errors.iter().any(|e| e.row == row))));
        columns = columns
            .iter()
            .map(|c| filter(c, &keep))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| RowError {
                row: 0,
                error: e.into(),
            })?;
    }
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| RowError {
        row: 0,
        error: e.into(),
    })?;
    Ok((batch, errors))
}

/// Why `value` did not convert: out of range for a numeric column (22003)
/// or not a value of the type at all (22P02).
fn conversion_error(value: &str, column: &crate::types::ColumnDef, relation: &str) -> Error {
    use crate::types::SqlType;
    let numeric = matches!(
        column.sql_type,
        SqlType::SmallInt
            | SqlType::Integer
            | SqlType::BigInt
            | SqlType::Real
            | SqlType::Double
            | SqlType::Numeric { .. }
    );
    if numeric && value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
        return Error::NumericOutOfRange(format!(
            "value \"{value}\" is out of range for type {} (column \"{}\" of relation \"{relation}\")",
            column.sql_type.pg_name(),
            column.name
        ));
    }
    Error::InvalidText(format!(
        "invalid input syntax for type {}: \"{value}\" (column \"{}\" of relation \"{relation}\")",
        column.sql_type.pg_name(),
        column.name
    ))
}

/// Resolves a column list (names as written) to stream column indices;
/// `None` means all columns in order.
pub fn resolve_targets(stream: &Stream, names: Option<&[String]>) -> Result<Vec<usize>> {
    let Some(names) = names else {
        return Ok((0..stream.def.columns.len()).collect());
    };
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let index = stream
            .def
            .columns
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| {
                Error::UndefinedColumn(format!(
                    "column \"{name}\" of relation \"{}\" does not exist",
                    stream.def.name
                ))
            })?;
        if targets.contains(&index) {
            return Err(Error::Syntax(format!(
                "column \"{name}\" specified more than once"
            )));
        }
        targets.push(index);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::bytea_from_text;

    #[test]
    fn bytea_text_input_is_postgres_hex_or_escape() {
        assert_eq!(bytea_from_text("\\x00ff 0A"), Some(vec![0, 255, 10]));
        assert_eq!(bytea_from_text("a\\\\b\\001"), Some(b"a\\b\x01".to_vec()));
        assert_eq!(bytea_from_text("plain"), Some(b"plain".to_vec()));
        assert_eq!(bytea_from_text("\\x0"), None);
        assert_eq!(bytea_from_text("\\xzz"), None);
        assert_eq!(bytea_from_text("\\9"), None);
    }
}
