//! Rows as PostgreSQL's binary COPY format: the target column types a
//! stream's columns may go to, and the encoding of Arrow arrays into
//! `COPY … FROM STDIN (FORMAT binary)` data (header, per row a field count
//! and length-prefixed fields in each type's `recv` form, trailer).
//!
//! Binary rather than text: the target does not parse numbers and
//! timestamps again, and bytea needs no escaping.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// A target column type sluice writes in binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar, name, citext: the text's bytes.
    Text,
    Json,
    Jsonb,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
}

impl PgType {
    /// The type of a target column by its `pg_type.typname`; `None` for
    /// types sluice does not write.
    pub fn from_typname(name: &str) -> Option<PgType> {
        Some(match name {
            "bool" => PgType::Bool,
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "numeric" => PgType::Numeric,
            "text" | "varchar" | "bpchar" | "name" | "citext" => PgType::Text,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "bytea" => PgType::Bytea,
            "date" => PgType::Date,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::TimestampTz,
            _ => return None,
        })
    }

    /// Whether a stream column of type `source` may be written into a
    /// target column of this type without losing anything: the same type,
    /// or a wider one (int4 → int8, float4 → float8, date → timestamp …).
    pub fn accepts(self, source: &DataType) -> bool {
        use DataType as D;
        match self {
            PgType::Bool => matches!(source, D::Boolean),
            PgType::Int2 => matches!(source, D::Int8 | D::Int16),
            PgType::Int4 => matches!(source, D::Int8 | D::Int16 | D::Int32),
            PgType::Int8 => matches!(source, D::Int8 | D::Int16 | D::Int32 | D::Int64),
            PgType::Float4 => matches!(source, D::Float16 | D::Float32),
            PgType::Float8 => matches!(
                source,
                D::Float16 | D::Float32 | D::Float64 | D::Int8 | D::Int16 | D::Int32
            ),
            PgType::Numeric => matches!(
                source,
                D::Decimal128(..) | D::Int8 | D::Int16 | D::Int32 | D::Int64
            ),
            PgType::Text | PgType::Json | PgType::Jsonb => {
                matches!(source, D::Utf8 | D::LargeUtf8 | D::Utf8View)
            }
            PgType::Bytea => matches!(source, D::Binary | D::LargeBinary | D::BinaryView),
            PgType::Date => matches!(source, D::Date32),
            PgType::Timestamp => {
                matches!(source, D::Date32 | D::Timestamp(_, None))
            }
            PgType::TimestampTz => matches!(source, D::Date32 | D::Timestamp(..)),
        }
    }

    /// The Arrow type a source column is cast to before encoding.
    fn arrow(self, source: &DataType) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric => match source {
                DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
                _ => DataType::Decimal128(38, 0),
            },
            PgType::Text | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// One target column and the source column it is written from.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub source: usize,
    pub target: PgType,
}

/// Appends rows `[offset, offset + len)` of `columns` (the batch's arrays)
/// to `out` in binary COPY form; `out` starts with the header when empty.
pub fn encode_rows(
    columns: &[ArrayRef],
    plan: &[ColumnPlan],
    offset: usize,
    len: usize,
    out: &mut BytesMut,
) -> Result<()> {
    if out.is_empty() {
        out.put_slice(b"PGCOPY\n\xff\r\n\0");
        out.put_i32(0); // flags: no OIDs
        out.put_i32(0); // header extension length
    }
    let arrays = plan
        .iter()
        .map(|c| {
            let array = columns[c.source].slice(offset, len);
            let wanted = c.target.arrow(array.data_type());
            if array.data_type() == &wanted {
                Ok(array)
            } else {
                cast(&array, &wanted).map_err(Error::from)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let typed = arrays
        .iter()
        .zip(plan)
        .map(|(array, c)| Typed::of(array.as_ref(), c.target))
        .collect::<Result<Vec<_>>>()?;
    let field_count = i16::try_from(plan.len())
        .map_err(|_| Error::ProgramLimit("more than 32767 columns".into()))?;
    for row in 0..len {
        out.put_i16(field_count);
        for column in &typed {
            column.encode(row, out)?;
        }
    }
    Ok(())
}

/// The trailer that ends binary COPY data.
pub fn finish(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// Writes a field's length and then its bytes, filling the length in after.
fn with_length(out: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) -> Result<()> {
    let at = out.len();
    out.put_i32(0);
    write(out);
    let len = i32::try_from(out.len() - at - 4)
        .map_err(|_| Error::ProgramLimit("a value larger than 2 GB".into()))?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A column downcast once per chunk to what its target type encodes from.
enum Typed<'a> {
    Bool(&'a BooleanArray),
    Int2(&'a Int16Array),
    Int4(&'a Int32Array),
    Int8(&'a Int64Array),
    Float4(&'a Float32Array),
    Float8(&'a Float64Array),
    Numeric(&'a Decimal128Array),
    /// text-like; `jsonb` carries a version byte before its text.
    Text(&'a StringArray, bool),
    Bytea(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
}

impl<'a> Typed<'a> {
    fn of(array: &'a dyn Array, target: PgType) -> Result<Typed<'a>> {
        fn down<T: 'static>(array: &dyn Array, target: PgType) -> Result<&T> {
            array.as_any().downcast_ref::<T>().ok_or_else(|| {
                Error::Internal(format!("a column cast for {target:?} has the wrong type"))
            })
        }
        Ok(match target {
            PgType::Bool => Typed::Bool(down(array, target)?),
            PgType::Int2 => Typed::Int2(down(array, target)?),
            PgType::Int4 => Typed::Int4(down(array, target)?),
            PgType::Int8 => Typed::Int8(down(array, target)?),
            PgType::Float4 => Typed::Float4(down(array, target)?),
            PgType::Float8 => Typed::Float8(down(array, target)?),
            PgType::Numeric => Typed::Numeric(down(array, target)?),
            PgType::Text | PgType::Json => Typed::Text(down(array, target)?, false),
            PgType::Jsonb => Typed::Text(down(array, target)?, true),
            PgType::Bytea => Typed::Bytea(down(array, target)?),
            PgType::Date => Typed::Date(down(array, target)?),
            PgType::Timestamp | PgType::TimestampTz => Typed::Timestamp(down(array, target)?),
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Typed::Bool(a) => a.is_null(row),
            Typed::Int2(a) => a.is_null(row),
            Typed::Int4(a) => a.is_null(row),
            Typed::Int8(a) => a.is_null(row),
            Typed::Float4(a) => a.is_null(row),
            Typed::Float8(a) => a.is_null(row),
            Typed::Numeric(a) => a.is_null(row),
            Typed::Text(a, _) => a.is_null(row),
            Typed::Bytea(a) => a.is_null(row),
            Typed::Date(a) => a.is_null(row),
            Typed::Timestamp(a) => a.is_null(row),
        }
    }

    /// One field: its length (-1 for NULL), then its `recv` bytes.
    fn encode(&self, row: usize, out: &mut BytesMut) -> Result<()> {
        if self.is_null(row) {
            out.put_i32(-1);
            return Ok(());
        }
        match self {
            Typed::Bool(a) => {
                out.put_i32(1);
                out.put_u8(a.value(row) as u8);
            }
            Typed::Int2(a) => {
                out.put_i32(2);
                out.put_i16(a.value(row));
            }
            Typed::Int4(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row));
            }
            Typed::Int8(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row));
            }
            Typed::Float4(a) => {
                out.put_i32(4);
                out.put_f32(a.value(row));
            }
            Typed::Float8(a) => {
                out.put_i32(8);
                out.put_f64(a.value(row));
            }
            Typed::Numeric(a) => {
                let scale = a.scale();
                with_length(out, |out| encode_numeric(a.value(row), scale, out))?;
            }
            Typed::Text(a, jsonb) => {
                let text = a.value(row).as_bytes();
                put_len(out, text.len() + usize::from(*jsonb))?;
                if *jsonb {
                    out.put_u8(1); // jsonb's binary form: version 1, then the text
                }
                out.put_slice(text);
            }
            Typed::Bytea(a) => {
                let bytes = a.value(row);
                put_len(out, bytes.len())?;
                out.put_slice(bytes);
            }
            Typed::Date(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row) - PG_EPOCH_DAYS);
            }
            Typed::Timestamp(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row) - PG_EPOCH_MICROS);
            }
        }
        Ok(())
    }
}

fn put_len(out: &mut BytesMut, len: usize) -> Result<()> {
    let len =
        i32::try_from(len).map_err(|_| Error::ProgramLimit("a value larger than 2 GB".into()))?;
    out.put_i32(len);
    Ok(())
}

/// `numeric`'s binary form: digit count, weight of the first base-10000
/// digit, sign, display scale, then the digits.
fn encode_numeric(value: i128, scale: i8, out: &mut BytesMut) {
    // A negative scale (Arrow allows it) is the same number with zeros.
    let (mut value, scale) = if scale < 0 {
        (
            value.saturating_mul(10i128.saturating_pow(u32::from(scale.unsigned_abs()))),
            0u32,
        )
    } else {
        (value, scale as u32)
    };
    let negative = value < 0;
    if negative {
        value = value.saturating_neg();
    }
    let digits = value.unsigned_abs().to_string();
    let scale_len = scale as usize;
    let padded = if digits.len() <= scale_len {
        format!("{}{digits}", "0".repeat(scale_len + 1 - digits.len()))
    } else {
        digits
    };
    let (int_part, frac_part) = padded.split_at(padded.len() - scale_len);
    let group = |s: &str| {
        s.bytes()
            .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
    };
    let mut groups: Vec<i16> = Vec::new();
    let lead = int_part.len() % 4;
    if lead > 0 {
        groups.push(group(&int_part[..lead]));
    }
    for chunk in int_part.as_bytes()[lead..].chunks(4) {
        groups.push(group(std::str::from_utf8(chunk).unwrap_or("0")));
    }
    let mut weight = groups.len() as i16 - 1;
    for chunk in frac_part.as_bytes().chunks(4) {
        let mut text = String::from_utf8_lossy(chunk).into_owned();
        while text.len() < 4 {
            text.push('0');
        }
        groups.push(group(&text));
    }
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(scale as i16);
    for g in groups {
        out.put_i16(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(value: i128, scale: i8) -> Vec<i16> {
        let mut out = BytesMut::new();
        encode_numeric(value, scale, &mut out);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_are_base_10000_digits_around_the_point() {
        // 12345.678 = 1|2345.6780: weight 1, scale 3.
        assert_eq!(numeric(12_345_678, 3), vec![3, 1, 0, 3, 1, 2345, 6780]);
        // -0.05 = 0.0500: weight -1, negative.
        assert_eq!(numeric(-5, 2), vec![1, -1, 0x4000, 2, 500]);
        // zero keeps its display scale.
        assert_eq!(numeric(0, 2), vec![0, 0, 0, 2]);
        // 10000 = 1|0000: trailing zero digit dropped, weight 1.
        assert_eq!(numeric(10_000, 0), vec![1, 1, 0, 0, 1]);
        // a negative scale is multiplied out: 12 × 10² = 1200.
        assert_eq!(numeric(12, -2), vec![1, 0, 0, 0, 1200]);
    }

    #[test]
    fn only_lossless_targets_accept_a_column() {
        assert!(PgType::Int8.accepts(&DataType::Int32));
        assert!(!PgType::Int4.accepts(&DataType::Int64));
        assert!(!PgType::Text.accepts(&DataType::Int32));
        assert!(PgType::TimestampTz.accepts(&DataType::Timestamp(TimeUnit::Microsecond, None)));
        assert!(!PgType::Timestamp.accepts(&DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into())
        )));
    }
}
