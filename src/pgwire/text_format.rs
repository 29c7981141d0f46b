//! PostgreSQL's text output for values the encoder writes differently:
//! timestamps carry fractional seconds only when there are some, without
//! trailing zeros (`2026-01-01 00:00:00`, `… 00:00:00.5`), and a zero
//! minute offset prints as `+00` (the encoder always writes `.000000` and
//! `+00:00`); floats print exponents with a sign and infinities as words
//! (`1e+20`, `Infinity`; the encoder writes `1e20`, `inf`). Applied to
//! text-format columns of query results, row by row; results without
//! such columns pass untouched.

use bytes::{BufMut, BytesMut};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

/// How a column's text is rewritten.
#[derive(Clone, Copy, PartialEq)]
enum Rewrite {
    None,
    Temporal,
    Float,
}

/// Which columns need rewriting; `None` if none do.
fn rewritten_columns(fields: &[FieldInfo]) -> Option<Vec<Rewrite>> {
    let columns: Vec<Rewrite> = fields
        .iter()
        .map(|f| match *f.datatype() {
            _ if f.format() != FieldFormat::Text => Rewrite::None,
            Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => Rewrite::Temporal,
            Type::FLOAT4 | Type::FLOAT8 => Rewrite::Float,
            _ => Rewrite::None,
        })
        .collect();
    columns
        .iter()
        .any(|c| *c != Rewrite::None)
        .then_some(columns)
}

/// The response with its temporal text values in PostgreSQL's form.
pub fn postgres_text(mut query: QueryResponse) -> QueryResponse {
    use futures::StreamExt;
    let Some(columns) = rewritten_columns(&query.row_schema()) else {
        return query;
    };
    let rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
    *query.data_rows() = Box::pin(rows.map(move |row| row.map(|r| rewrite_row(r, &columns))));
    query
}

fn rewrite_row(row: DataRow, columns: &[Rewrite]) -> DataRow {
    let data = &row.data;
    let mut out = BytesMut::with_capacity(data.len());
    let mut at = 0;
    for &rewrite in columns {
        let Some(len) = data
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            // Not the shape the schema promised: leave the row as it is.
            return row;
        };
        at += 4;
        if len < 0 {
            out.put_i32(len);
            continue;
        }
        let Some(value) = data.get(at..at + len as usize) else {
            return row;
        };
        at += len as usize;
        let rewritten = match rewrite {
            Rewrite::None => None,
            Rewrite::Temporal => Some(trim_temporal(value)),
            Rewrite::Float => float_text(value),
        };
        match rewritten {
            Some(value) => {
                out.put_i32(value.len() as i32);
                out.put_slice(&value);
            }
            None => {
                out.put_i32(len);
                out.put_slice(value);
            }
        }
    }
    DataRow::new(out, row.field_count)
}

/// `… HH:MM:SS.ffffff[+hh:mm]` with the fraction's trailing zeros (and a
/// bare dot) dropped and a `:00` minute offset shortened.
fn trim_temporal(value: &[u8]) -> Vec<u8> {
    let Some(dot) = value.iter().rposition(|b| *b == b'.') else {
        return value.to_vec();
    };
    let digits_end = value[dot + 1..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(value.len(), |p| dot + 1 + p);
    let mut keep = digits_end;
    while keep > dot + 1 && value[keep - 1] == b'0' {
        keep -= 1;
    }
    if keep == dot + 1 {
        keep = dot;
    }
    let mut out = value[..keep].to_vec();
    let mut offset = &value[digits_end..];
    if offset.len() == 6 && offset.ends_with(b":00") && matches!(offset[0], b'+' | b'-') {
        offset = &offset[..3];
    }
    out.extend_from_slice(offset);
    out
}

/// `inf` → `Infinity`, `1e20` → `1e+20`, `1e-7` → `1e-07` (a signed
/// exponent of at least two digits); `None` when already right.
fn float_text(value: &[u8]) -> Option<Vec<u8>> {
    match value {
        b"inf" => return Some(b"Infinity".to_vec()),
        b"-inf" => return Some(b"-Infinity".to_vec()),
        _ => {}
    }
    let e = value.iter().position(|b| *b == b'e')?;
    let (sign, digits) = match value.get(e + 1) {
        Some(b'-') => (b'-', &value[e + 2..]),
        Some(b'+') => (b'+', &value[e + 2..]),
        _ => (b'+', &value[e + 1..]),
    };
    let mut out = value[..=e].to_vec();
    out.push(sign);
    if digits.len() < 2 {
        out.push(b'0');
    }
    out.extend_from_slice(digits);
    (out != value).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::{float_text, trim_temporal};

    #[test]
    fn floats_print_as_postgres_does() {
        let text = |v: &str| float_text(v.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(text("1e20").as_deref(), Some("1e+20"));
        assert_eq!(text("1e-7").as_deref(), Some("1e-07"));
        assert_eq!(text("1.5e+300"), None);
        assert_eq!(text("inf").as_deref(), Some("Infinity"));
        assert_eq!(text("-inf").as_deref(), Some("-Infinity"));
        assert_eq!(text("0.1"), None);
        assert_eq!(text("NaN"), None);
    }

    #[test]
    fn fractions_and_offsets_print_as_postgres_does() {
        for (encoded, postgres) in [
            ("2026-01-01 00:00:00.000000", "2026-01-01 00:00:00"),
            ("2026-01-01 00:00:00.500000", "2026-01-01 00:00:00.5"),
            ("2026-01-01 00:00:00.123456", "2026-01-01 00:00:00.123456"),
            ("2026-01-01 00:00:00.000000+00:00", "2026-01-01 00:00:00+00"),
            (
                "2026-01-01 00:00:00.250000+05:30",
                "2026-01-01 00:00:00.25+05:30",
            ),
            ("13:00:01.000000", "13:00:01"),
            ("2026-01-01 00:00:00", "2026-01-01 00:00:00"),
        ] {
            assert_eq!(
                String::from_utf8(trim_temporal(encoded.as_bytes())).unwrap(),
                postgres
            );
        }
    }
}
