//! Schema versions in the log: frames record the version they were
//! written in, and every reader sees old frames in the version it asks for.

use super::*;
use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;

fn v1() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("gone", DataType::Utf8, true),
    ]))
}

/// `k` widened to bigint, `gone` dropped, `country` added.
fn v2() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("country", DataType::Utf8, true),
    ]))
}

fn rows_v1(from: i32, n: i32) -> RecordBatch {
    RecordBatch::try_new(
        v1(),
        vec![
            Arc::new(Int32Array::from_iter_values(from..from + n)),
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| format!("g{i}")),
            )),
        ],
    )
    .unwrap()
}

fn rows_v2(from: i64, n: i64) -> RecordBatch {
    RecordBatch::try_new(
        v2(),
        vec![
            Arc::new(Int64Array::from_iter_values(from..from + n)),
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| format!("c{i}")),
            )),
        ],
    )
    .unwrap()
}

fn options() -> LogOptions {
    LogOptions {
        shards: 1,
        partition_key: None,
        segment_size_bytes: 1 << 20,
        append_queue_depth: 64,
        retention: None,
    }
}

/// Every row of shard 0 as (k, country) in `read`.
fn read_rows(log: &StreamLog, read: &ReadSchema) -> Vec<(i64, Option<String>)> {
    let versions = log.versions();
    let mut out = Vec::new();
    for (file, frame) in log.frames_from(0, 0, u64::MAX).unwrap() {
        let b = read_frame(&file, &frame, &versions, read, 0).unwrap();
        assert_eq!(b.schema().fields(), read.schema().fields());
        let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let c = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            out.push((k.value(i), c.is_valid(i).then(|| c.value(i).to_string())));
        }
    }
    out
}

#[tokio::test]
async fn old_frames_are_read_in_the_new_version_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(v1()), options()).unwrap();
    log.append(rows_v1(0, 3)).await.unwrap();
    // Not a version of this log yet: refused, nothing written.
    assert!(log.append(rows_v2(10, 1)).await.is_err());
    log.evolve(2, v2());
    log.append(rows_v2(3, 2)).await.unwrap();
    // A writer still holding version 1 (a statement racing the ALTER).
    log.append(rows_v1(5, 1)).await.unwrap();
    let frames = log.frames_from(0, 0, u64::MAX).unwrap();
    let written: Vec<u32> = frames.iter().map(|(_, f)| f.schema_version).collect();
    assert_eq!(written, vec![1, 2, 1]);

    let plain = ReadSchema::plain(v2());
    let expected = vec![
        (0, None),
        (1, None),
        (2, None),
        (3, Some("c3".to_string())),
        (4, Some("c4".to_string())),
        (5, None),
    ];
    assert_eq!(read_rows(&log, &plain), expected);
    let defaulted = ReadSchema::new(v2(), vec![None, Some(ScalarValue::from("none"))]);
    let rows = read_rows(&log, &defaulted);
    assert_eq!(rows[0], (0, Some("none".to_string())));
    assert_eq!(rows[3], (3, Some("c3".to_string())));
    log.close();
    drop(log);

    let versions = Versions::new([(1, v1()), (2, v2())].into_iter().collect()).unwrap();
    let log = StreamLog::open(dir.path(), versions, options()).unwrap();
    let frames = log.frames_from(0, 0, u64::MAX).unwrap();
    let written: Vec<u32> = frames.iter().map(|(_, f)| f.schema_version).collect();
    assert_eq!(written, vec![1, 2, 1]);
    assert_eq!(read_rows(&log, &plain), expected);
    // A projection of the new version: only the added column.
    let only_country = ReadSchema::plain(Arc::new(v2().project(&[1]).unwrap()));
    let versions = log.versions();
    let (file, frame) = &frames[1];
    let b = read_frame(file, frame, &versions, &only_country, 0).unwrap();
    assert_eq!(b.num_columns(), 1);
    assert_eq!(b.num_rows(), 2);
}
