//! The column types a stream can declare, their Postgres names and their
//! Arrow encoding. One table, so the catalog, the parser and the wire
//! encoding agree.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, ExactNumberInfo, TimezoneInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlType {
    Boolean,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Text,
    Bytea,
    Date,
    /// TIMESTAMP WITHOUT TIME ZONE, microseconds (as Postgres and Parquet).
    Timestamp,
    /// TIMESTAMP WITH TIME ZONE, microseconds, stored in UTC.
    TimestampTz,
    Numeric {
        precision: u8,
        scale: i8,
    },
}

impl SqlType {
    pub fn to_arrow(self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Integer => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Text => DataType::Utf8,
            SqlType::Bytea => DataType::Binary,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            SqlType::Numeric { precision, scale } => DataType::Decimal128(precision, scale),
        }
    }

    /// The Postgres spelling, as `\d` and error messages show it.
    pub fn pg_name(self) -> String {
        match self {
            SqlType::Boolean => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Integer => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Text => "text".into(),
            SqlType::Bytea => "bytea".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::TimestampTz => "timestamp with time zone".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
        }
    }

    /// The sluice type of an Arrow type produced by a query (derived streams).
    pub fn from_arrow(dt: &DataType) -> Option<SqlType> {
        Some(match dt {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::SmallInt,
            DataType::Int32 | DataType::UInt16 => SqlType::Integer,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::BigInt,
            DataType::Float16 | DataType::Float32 => SqlType::Real,
            DataType::Float64 => SqlType::Double,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Timestamp(_, None) => SqlType::Timestamp,
            DataType::Timestamp(_, Some(_)) => SqlType::TimestampTz,
            DataType::Decimal128(p, s) => SqlType::Numeric {
                precision: *p,
                scale: *s,
            },
            _ => return None,
        })
    }

    /// Maps a parsed SQL type; unsupported types are refused with 0A000.
    pub fn from_sql(dt: &SqlDataType) -> Result<SqlType> {
        use SqlDataType as D;
        Ok(match dt {
            D::Boolean | D::Bool => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Integer,
            D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::Double(_) | D::DoublePrecision | D::Float8 | D::Float(_) => SqlType::Double,
            D::Text
            | D::String(_)
            | D::Varchar(_)
            | D::CharVarying(_)
            | D::CharacterVarying(_)
            | D::Char(_)
            | D::Character(_)
            | D::JSON
            | D::JSONB => SqlType::Text,
            D::Bytea => SqlType::Bytea,
            D::Date => SqlType::Date,
            D::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                SqlType::Timestamp
            }
            D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::TimestampTz,
            D::Numeric(info) | D::Decimal(info) | D::Dec(info) => {
                let (precision, scale) = match info {
                    ExactNumberInfo::None => (38, 9),
                    ExactNumberInfo::Precision(p) => (*p, 0),
                    ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
                };
                if precision == 0 || precision > 38 || scale < 0 || scale as u64 > precision {
                    return Err(Error::InvalidParameter(format!(
                        "NUMERIC precision {precision} and scale {scale} must satisfy 1 <= precision <= 38, 0 <= scale <= precision"
                    )));
                }
                SqlType::Numeric {
                    precision: precision as u8,
                    scale: scale as i8,
                }
            }
            other => {
                return Err(Error::FeatureNotSupported(format!(
                    "type {other} is not supported in streams; use one of boolean, smallint, integer, bigint, real, double precision, numeric, text, bytea, date, timestamp, timestamptz"
                )))
            }
        })
    }
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
    /// A constant DEFAULT (`ALTER STREAM … ADD COLUMN … DEFAULT`), as a
    /// literal in the column's text form: what a record that does not name
    /// the column holds, records written before the column included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, sql_type: SqlType, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            sql_type,
            nullable,
            default: None,
        }
    }

    /// The column's DEFAULT as a value of its Arrow type.
    pub fn default_value(&self) -> Result<Option<ScalarValue>> {
        let Some(text) = &self.default else {
            return Ok(None);
        };
        let value = ScalarValue::Utf8(Some(text.clone())).cast_to(&self.sql_type.to_arrow())?;
        Ok(Some(value))
    }
}

impl SqlType {
    pub fn is_integer(self) -> bool {
        matches!(self, SqlType::SmallInt | SqlType::Integer | SqlType::BigInt)
    }

    /// Whether every value of `self` is exactly a value of `wider` (the
    /// changes `ALTER COLUMN … TYPE` allows: old records are read as the
    /// new type without loss).
    pub fn widens_to(self, wider: SqlType) -> bool {
        use SqlType::*;
        match (self, wider) {
            (SmallInt, Integer | BigInt | Real | Double) | (Integer, BigInt | Double) => true,
            (Real, Double) => true,
            (SmallInt | Integer | BigInt, Numeric { precision, scale }) => {
                let digits = match self {
                    SmallInt => 5,
                    Integer => 10,
                    _ => 19,
                };
                i16::from(precision) - i16::from(scale) >= digits
            }
            (
                Numeric { precision, scale },
                Numeric {
                    precision: p2,
                    scale: s2,
                },
            ) => {
                s2 >= scale
                    && i16::from(p2) - i16::from(s2) >= i16::from(precision) - i16::from(scale)
            }
            _ => false,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The Arrow schema of a list of columns.
pub fn arrow_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.sql_type.to_arrow(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// One schema for files written across schema changes: every column of
/// any of them in order of first appearance, each with the widest type its
/// files use (the widenings `ALTER COLUMN … TYPE` allows), nullable where
/// some file lacks it; `None` when they are all alike. 42804 when a column's
/// types do not widen one into the other.
pub fn merge_schemas(schemas: &[SchemaRef]) -> Result<Option<Schema>> {
    let Some(first) = schemas.first() else {
        return Ok(None);
    };
    if schemas.iter().all(|s| s.fields() == first.fields()) {
        return Ok(None);
    }
    let mut fields: Vec<Field> = Vec::new();
    for schema in schemas {
        for field in schema.fields() {
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                None => fields.push(field.as_ref().clone()),
                Some(known) if known.data_type() == field.data_type() => {}
                Some(known) => {
                    let wider = wider_type(known.data_type(), field.data_type()).ok_or_else(|| {
                        Error::DatatypeMismatch(format!(
                            "column \"{}\" is {} in some files and {} in others, and neither holds the other; declare the columns",
                            field.name(),
                            known.data_type(),
                            field.data_type()
                        ))
                    })?;
                    *known = known.clone().with_data_type(wider);
                }
            }
        }
    }
    // A column some files lack is NULL in their rows.
    let fields = fields
        .into_iter()
        .map(|f| {
            let everywhere = schemas.iter().all(|s| s.field_with_name(f.name()).is_ok());
            let nullable = f.is_nullable() || !everywhere;
            f.with_nullable(nullable)
        })
        .collect::<Vec<_>>();
    Ok(Some(Schema::new(fields)))
}

/// The one of `a` and `b` that holds every value of the other.
fn wider_type(a: &DataType, b: &DataType) -> Option<DataType> {
    let (x, y) = (SqlType::from_arrow(a)?, SqlType::from_arrow(b)?);
    if x.widens_to(y) && &y.to_arrow() == b {
        Some(b.clone())
    } else if y.widens_to(x) && &x.to_arrow() == a {
        Some(a.clone())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_schemas_take_the_widest_type_and_missing_columns_nullable() {
        let v1 = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("status", DataType::Int32, true),
        ]));
        let v2 = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("status", DataType::Int64, true),
            Field::new("country", DataType::Utf8, false),
        ]));
        let merged = merge_schemas(&[v1.clone(), v2]).unwrap().unwrap();
        assert_eq!(merged.field(1).data_type(), &DataType::Int64);
        assert!(merged.field(2).is_nullable());
        assert!(!merged.field(0).is_nullable());
        assert!(merge_schemas(&[v1.clone(), v1.clone()]).unwrap().is_none());
        let text = Arc::new(Schema::new(vec![Field::new(
            "status",
            DataType::Utf8,
            true,
        )]));
        let err = merge_schemas(&[v1, text]).unwrap_err();
        assert_eq!(err.sqlstate(), "42804");
    }
}
