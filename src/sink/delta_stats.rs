//! Delta file statistics (`numRecords`, `minValues`, `maxValues`,
//! `nullCount`) from a written Parquet file's footer, so Delta readers
//! (sluice's external tables, Spark, Trino, delta-rs) skip files by value
//! without opening them.
//!
//! A bound is only written where it is a true bound: a text minimum longer
//! than 32 characters is cut (a prefix is still ≤ every value), a text
//! maximum that long is left out, timestamps are rounded outwards to the
//! millisecond Delta's format keeps, and a column whose footer lacks
//! statistics for a row group holding values gets no bounds at all.

use std::cmp::Ordering;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::file::metadata::ParquetMetaData;
use serde_json::{Map, Value};

/// Characters of text kept in a minimum (as Delta writers do).
const MAX_TEXT_CHARS: usize = 32;

/// The `stats` JSON of an add action for a file with `schema` (its
/// columns, without partition columns) and this footer.
pub fn file_stats(schema: &Schema, meta: &ParquetMetaData) -> String {
    let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
    let mut mins = Map::new();
    let mut maxes = Map::new();
    let mut nulls = Map::new();
    let parquet_schema = meta.file_metadata().schema_descr();
    for field in schema.fields() {
        let name = field.name();
        let Ok(converter) = StatisticsConverter::try_new(name, schema, parquet_schema) else {
            continue;
        };
        let groups = meta.row_groups().iter();
        let Ok(null_counts) = converter.row_group_null_counts(groups.clone()) else {
            continue;
        };
        if null_counts.null_count() == 0 {
            nulls.insert(
                name.clone(),
                Value::from(null_counts.values().iter().sum::<u64>()),
            );
        }
        let (Ok(lo), Ok(hi)) = (
            converter.row_group_mins(groups.clone()),
            converter.row_group_maxes(groups),
        ) else {
            continue;
        };
        // A group with values but no bound makes the file's bound unknown.
        let complete = meta.row_groups().iter().enumerate().all(|(i, g)| {
            let all_null = !null_counts.is_null(i) && null_counts.value(i) as i64 == g.num_rows();
            all_null || (!lo.is_null(i) && !hi.is_null(i))
        });
        if !complete {
            continue;
        }
        if let Some(v) = extreme(&lo, Ordering::Less).and_then(|v| json(&v, Bound::Min)) {
            mins.insert(name.clone(), v);
        }
        if let Some(v) = extreme(&hi, Ordering::Greater).and_then(|v| json(&v, Bound::Max)) {
            maxes.insert(name.clone(), v);
        }
    }
    let mut stats = Map::new();
    stats.insert("numRecords".into(), Value::from(rows));
    stats.insert("minValues".into(), Value::Object(mins));
    stats.insert("maxValues".into(), Value::Object(maxes));
    stats.insert("nullCount".into(), Value::Object(nulls));
    Value::Object(stats).to_string()
}

#[derive(Clone, Copy, PartialEq)]
enum Bound {
    Min,
    Max,
}

/// The smallest (`Less`) or largest (`Greater`) non-null value.
fn extreme(values: &ArrayRef, want: Ordering) -> Option<ScalarValue> {
    let mut best: Option<ScalarValue> = None;
    for i in 0..values.len() {
        if values.is_null(i) {
            continue;
        }
        let value = ScalarValue::try_from_array(values, i).ok()?;
        best = match best {
            Some(b) if value.partial_cmp(&b) != Some(want) => Some(b),
            _ => Some(value),
        };
    }
    best
}

/// A bound as Delta writes it, or `None` where no exact-enough form exists.
fn json(value: &ScalarValue, bound: Bound) -> Option<Value> {
    use ScalarValue as S;
    Some(match value {
        S::Int8(Some(v)) => Value::from(*v),
        S::Int16(Some(v)) => Value::from(*v),
        S::Int32(Some(v)) => Value::from(*v),
        S::Int64(Some(v)) => Value::from(*v),
        S::UInt8(Some(v)) => Value::from(*v),
        S::UInt16(Some(v)) => Value::from(*v),
        S::UInt32(Some(v)) => Value::from(*v),
        S::UInt64(Some(v)) => Value::from(*v),
        S::Float32(Some(v)) if v.is_finite() => Value::from(*v),
        S::Float64(Some(v)) if v.is_finite() => Value::from(*v),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => {
            if s.chars().count() <= MAX_TEXT_CHARS {
                Value::from(s.as_str())
            } else if bound == Bound::Min {
                Value::from(s.chars().take(MAX_TEXT_CHARS).collect::<String>())
            } else {
                return None;
            }
        }
        S::Date32(Some(days)) => Value::from(super::layout::date_text(i64::from(*days))),
        S::TimestampMicrosecond(Some(us), zone) => {
            let ms = match bound {
                Bound::Min => us.div_euclid(1000),
                Bound::Max => us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0),
            };
            let time = chrono::DateTime::from_timestamp_millis(ms)?;
            let text = time.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
            Value::from(if zone.is_some() { text + "Z" } else { text })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    use super::*;

    #[test]
    fn bounds_are_true_bounds() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let long = "x".repeat(40);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(5), None, Some(-3)])),
                Arc::new(StringArray::from(vec![
                    Some("b"),
                    Some(long.as_str()),
                    None,
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_500, 2_000_001, 7]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        let meta = writer.finish().unwrap();
        let stats: Value = serde_json::from_str(&file_stats(&schema, &meta)).unwrap();
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["n"], -3);
        assert_eq!(stats["maxValues"]["n"], 5);
        assert_eq!(stats["nullCount"]["n"], 1);
        assert_eq!(stats["minValues"]["s"], "b");
        assert!(
            stats["maxValues"].get("s").is_none(),
            "a cut maximum is no bound"
        );
        assert_eq!(stats["nullCount"]["s"], 1);
        assert_eq!(stats["minValues"]["t"], "1970-01-01T00:00:00.000Z");
        assert_eq!(
            stats["maxValues"]["t"], "1970-01-01T00:00:02.001Z",
            "rounded up"
        );
    }
}
