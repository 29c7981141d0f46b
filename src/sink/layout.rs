//! A sink's Hive layout: which columns go into the files, which become
//! directories (`dt=YYYY-MM-DD/hour=H/k=v`; `hour=HH` for sinks created
//! before [`PartitionStyle::Typed`]), and how a batch of source
//! rows splits into partitions. Time partitions are UTC; partition values
//! are escaped as Hive does, and NULL or empty values go to
//! `__HIVE_DEFAULT_PARTITION__`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, lexsort_to_indices, take_record_batch, SortColumn};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::ScalarValue;

use crate::catalog::{PartitionStyle, SinkDef, TimePartition};
use crate::error::{Error, Result};

pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";
/// Longest escaped `k=v` directory name; longer values cannot be stored
/// on common file systems and go to `sluice.errors` instead.
pub const MAX_SEGMENT_BYTES: usize = 255;
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Which partition a row belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartKey {
    /// Hours (or days) since the epoch of the event time; `None` for NULL.
    pub bucket: Option<i64>,
    pub values: Vec<Option<String>>,
}

/// Row indices of a batch per partition, and rows that cannot be placed.
pub type Split = (BTreeMap<PartKey, Vec<u32>>, Vec<u32>);

#[derive(Debug)]
pub struct Layout {
    pub time: TimePartition,
    style: PartitionStyle,
    event_time: Option<usize>,
    by: Vec<usize>,
    /// Source columns written into the files, in order.
    file_columns: Vec<usize>,
    pub file_schema: SchemaRef,
    /// The file columns as queries read them (text as `Utf8View`).
    pub read_schema: SchemaRef,
    /// File-column indices that compacted files (and, with `sort_by`, every
    /// row group) are sorted by.
    pub sort_by: Vec<usize>,
    /// Partition columns, in path order: `dt`, `hour`, then `partition_by`.
    pub partition_fields: Vec<FieldRef>,
    /// What `SELECT * FROM sink` shows: file columns, then partition columns.
    pub table_schema: SchemaRef,
}

impl Layout {
    pub fn new(def: &SinkDef, source: &Schema) -> Result<Layout> {
        let index = |name: &str, what: &str| -> Result<usize> {
            source.index_of(name).map_err(|_| {
                Error::UndefinedColumn(format!(
                    "{what} \"{name}\" is not a column of stream \"{}\"",
                    def.source
                ))
            })
        };
        let event_time = match (&def.event_time, def.time_partition) {
            (_, TimePartition::None) => None,
            (Some(name), _) => Some(index(name, "event_time")?),
            (None, _) => {
                return Err(Error::InvalidParameter(
                    "time partitions need an event-time column: set event_time = 'column'".into(),
                ))
            }
        };
        if let Some(i) = event_time {
            if !matches!(source.field(i).data_type(), DataType::Timestamp(_, _)) {
                return Err(Error::DatatypeMismatch(format!(
                    "event_time column \"{}\" must be a timestamp",
                    source.field(i).name()
                )));
            }
        }
        let mut by = Vec::new();
        for name in &def.partition_by {
            let i = index(name, "partition_by column")?;
            if by.contains(&i) || Some(i) == event_time {
                return Err(Error::InvalidParameter(format!(
                    "partition_by column \"{name}\" is listed twice or is the event-time column"
                )));
            }
            by.push(i);
        }
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        if def.time_partition != TimePartition::None {
            for reserved in ["dt", "hour"] {
                if source.index_of(reserved).is_ok() {
                    return Err(Error::InvalidParameter(format!(
                        "column \"{reserved}\" of stream \"{}\" clashes with the time partition column; rename it in a derived stream or set time_partition = 'none'",
                        def.source
                    )));
                }
            }
            let dt_type = match def.partition_style {
                PartitionStyle::Padded => DataType::Utf8,
                PartitionStyle::Typed => DataType::Date32,
            };
            partition_fields.push(Arc::new(Field::new("dt", dt_type, true)));
            if def.time_partition == TimePartition::Hour {
                partition_fields.push(Arc::new(Field::new("hour", DataType::Int32, true)));
            }
        }
        for i in &by {
            let f = source.field(*i);
            partition_fields.push(Arc::new(Field::new(f.name(), f.data_type().clone(), true)));
        }
        let file_columns: Vec<usize> = (0..source.fields().len())
            .filter(|i| !by.contains(i))
            .collect();
        if file_columns.is_empty() {
            return Err(Error::InvalidParameter(
                "every column is a partition column; files need at least one".into(),
            ));
        }
        let file_schema = Arc::new(source.project(&file_columns)?);
        let mut sort_by = Vec::new();
        for (what, names) in [
            ("sort_by", &def.sort_by),
            ("bloom_filter_columns", &def.bloom_filter_columns),
        ] {
            for name in names {
                let Ok(i) = file_schema.index_of(name) else {
                    return Err(Error::UndefinedColumn(format!(
                        "{what} column \"{name}\" is not a column of the files of sink \"{}\" (partition columns are not)",
                        def.name
                    )));
                };
                if what == "sort_by" {
                    sort_by.push(i);
                }
            }
        }
        // Without sort_by, compacted files are sorted by the event time.
        if sort_by.is_empty() {
            if let Some(i) = event_time {
                sort_by.extend(file_schema.index_of(source.field(i).name()).ok());
            }
        }
        // Reading decodes text into string views (no copy per value).
        let read_schema = Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 => {
                        Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                    }
                    _ => f.clone(),
                })
                .collect::<Vec<FieldRef>>(),
        ));
        let table_fields: Vec<FieldRef> = read_schema
            .fields()
            .iter()
            .cloned()
            .chain(partition_fields.iter().cloned())
            .collect();
        Ok(Layout {
            time: def.time_partition,
            style: def.partition_style,
            event_time,
            by,
            file_columns,
            file_schema,
            read_schema,
            sort_by,
            partition_fields,
            table_schema: Arc::new(Schema::new(table_fields)),
        })
    }

    /// Rows of `batch` per partition (ascending row order within each),
    /// and rows that cannot be placed (a partition value too long for a
    /// directory name).
    pub fn split(&self, batch: &RecordBatch) -> Result<Split> {
        let rows = batch.num_rows();
        let buckets: Vec<Option<i64>> = match self.event_time {
            None => vec![None; rows],
            Some(i) => {
                let col = cast(
                    batch.column(i),
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )?;
                let ts = col.as_primitive::<TimestampMicrosecondType>();
                let per = match self.time {
                    TimePartition::Day => MICROS_PER_HOUR * 24,
                    _ => MICROS_PER_HOUR,
                };
                (0..rows)
                    .map(|r| (!ts.is_null(r)).then(|| ts.value(r).div_euclid(per)))
                    .collect()
            }
        };
        let by_text = self
            .by
            .iter()
            .map(|i| cast(batch.column(*i), &DataType::Utf8))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut parts: BTreeMap<PartKey, Vec<u32>> = BTreeMap::new();
        let mut unplaceable = Vec::new();
        for (row, bucket) in buckets.iter().enumerate() {
            let values: Vec<Option<String>> = by_text
                .iter()
                .map(|col| {
                    let col = col.as_string::<i32>();
                    (!col.is_null(row) && !col.value(row).is_empty())
                        .then(|| col.value(row).to_string())
                })
                .collect();
            let too_long = values.iter().zip(&self.by).any(|(v, _)| {
                v.as_deref()
                    .is_some_and(|v| escape(v).len() + 64 > MAX_SEGMENT_BYTES)
            });
            if too_long {
                unplaceable.push(row as u32);
                continue;
            }
            parts
                .entry(PartKey {
                    bucket: *bucket,
                    values,
                })
                .or_default()
                .push(row as u32);
        }
        Ok((parts, unplaceable))
    }

    /// `batch` (of file columns) ordered by `sort_by`.
    pub fn sort(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.sort_by.is_empty() || batch.num_rows() < 2 {
            return Ok(batch.clone());
        }
        let columns: Vec<SortColumn> = self
            .sort_by
            .iter()
            .map(|i| SortColumn {
                values: batch.column(*i).clone(),
                options: None,
            })
            .collect();
        let indices = lexsort_to_indices(&columns, None)?;
        Ok(take_record_batch(batch, &indices)?)
    }

    /// The file columns of `batch`.
    pub fn file_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        Ok(batch.project(&self.file_columns)?)
    }

    /// Partition values as text, in `partition_fields` order.
    pub fn values(&self, key: &PartKey) -> Vec<Option<String>> {
        let mut out = Vec::new();
        if self.time != TimePartition::None {
            let (dt, hour) = match (key.bucket, self.time) {
                (None, _) => (None, None),
                (Some(h), TimePartition::Hour) => (
                    Some(date_text(h.div_euclid(24))),
                    Some(match self.style {
                        PartitionStyle::Padded => format!("{:02}", h.rem_euclid(24)),
                        PartitionStyle::Typed => h.rem_euclid(24).to_string(),
                    }),
                ),
                (Some(d), _) => (Some(date_text(d)), None),
            };
            out.push(dt);
            if self.time == TimePartition::Hour {
                out.push(hour);
            }
        }
        out.extend(key.values.iter().cloned());
        out
    }

    /// `dt=…/hour=…/k=v` for a partition (empty without partitions).
    pub fn dir(&self, values: &[Option<String>]) -> String {
        self.partition_fields
            .iter()
            .zip(values)
            .map(|(f, v)| {
                format!(
                    "{}={}",
                    escape(f.name()),
                    v.as_deref().map_or(DEFAULT_PARTITION.to_string(), escape)
                )
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Typed partition values for a scan; text that does not parse as
    /// its column's type is NULL.
    pub fn scalars(&self, values: &[Option<String>]) -> Vec<ScalarValue> {
        self.partition_fields
            .iter()
            .zip(values)
            .map(|(f, v)| {
                let null = ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null);
                match v {
                    None => null,
                    Some(text) => {
                        ScalarValue::try_from_string(text.clone(), f.data_type()).unwrap_or(null)
                    }
                }
            })
            .collect()
    }
}

/// Hive's path escaping: `%XX` for separators, quotes, wildcards and
/// control characters.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let special = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\x7f'
                | '{'
                | '['
                | ']'
                | '^'
        ) || (c as u32) < 0x20;
        if special {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian).
pub fn date_text(days: i64) -> String {
    let (year, month, day) = crate::types::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 of `YYYY-MM-DD` (the inverse of [`date_text`]).
pub fn days_from_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escaping() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(20_417), "2025-11-25");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(date_text(11_016), "2000-02-29");
        for days in [-1, 0, 59, 11_016, 20_417, 2_000_000] {
            assert_eq!(days_from_date(&date_text(days)), Some(days));
        }
        assert_eq!(escape("a/b=c%"), "a%2Fb%3Dc%25");
        assert_eq!(escape("plain text-1"), "plain text-1");
    }
}
