//! The one conversion every ingest path shares: rows of field text (SQL
//! literals, COPY fields, JSON values) to a RecordBatch of a stream's
//! schema. Each column is cast once, like Postgres coerces untyped input;
//! only when a cast fails are values tried one by one to find the bad rows.

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast_with_options, filter, CastOptions};

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
                match cast_with_options(text, data_type, &strict) {
                    Ok(array) => array,
                    Err(_) => {
                        for (row, slot) in bad.iter_mut().enumerate() {
                            if text.is_valid(row)
                                && cast_with_options(&text.slice(row, 1), data_type, &strict)
                                    .is_err()
                            {
                                let error = conversion_error(text.value(row), column, &def.name);
                                slot.get_or_insert(error);
                            }
                        }
                        // Bad values become NULL here; their rows are dropped below.
                        cast_with_options(text, data_type, &CastOptions::default()).map_err(
                            |e| RowError {
                                row: 0,
                                error: e.into(),
                            },
                        )?
                    }
                }
            }
            None => new_null_array(data_type, n),
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
