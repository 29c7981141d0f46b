//! The catalog store: persistence across reopen, ids, sinks' commits.

use super::*;
use crate::types::{ColumnDef, SqlType};

fn def(name: &str) -> StreamDef {
    let column = ColumnDef {
        name: "a".into(),
        sql_type: SqlType::BigInt,
        nullable: false,
        default: None,
    };
    StreamDef {
        shards: 2,
        partition_key: Some("a".into()),
        ..StreamDef::new(name, vec![column])
    }
}

#[test]
fn streams_persist_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.redb");
    let first = {
        let cat = Catalog::open(&path).unwrap();
        let s = cat.create_stream(def("a")).unwrap();
        assert_eq!(cat.create_stream(def("a")).unwrap_err().sqlstate(), "42P07");
        s
    };
    let cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.streams().unwrap(), vec![first.clone()]);
    cat.drop_stream("a").unwrap();
    assert_eq!(cat.drop_stream("a").unwrap_err().sqlstate(), "42P01");
    let again = cat.create_stream(def("a")).unwrap();
    assert!(again.id > first.id);
}

fn sink(name: &str) -> SinkDef {
    SinkDef {
        name: name.into(),
        id: 0,
        source: "a".into(),
        location: "lake".into(),
        compression: "zstd".into(),
        time_partition: TimePartition::Hour,
        event_time: Some("t".into()),
        partition_by: Vec::new(),
        rollover_interval_ms: 1000,
        rollover_size_bytes: 1 << 20,
        start_offsets: vec![0, 0],
        created_at_ms: 0,
        sort_by: Vec::new(),
        bloom_filter_columns: Vec::new(),
        compaction: None,
        partition_style: PartitionStyle::Typed,
        format: SinkFormat::Parquet,
        file_retention_ms: None,
        endpoint: None,
        postgres: None,
    }
}

fn file(path: &str, shard: u32) -> SinkFile {
    SinkFile {
        path: path.into(),
        shard,
        first_offset: 0,
        last_offset: 9,
        rows: 10,
        bytes: 100,
        partition_values: vec![Some("2026-11-25".into()), Some("10".into())],
        committed_at_ms: 0,
        stats: None,
    }
}

#[test]
fn sink_files_and_progress_commit_together_and_go_with_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
    cat.create_stream(def("a")).unwrap();
    assert_eq!(cat.create_sink(sink("a")).unwrap_err().sqlstate(), "42P07");
    let s = cat.create_sink(sink("s")).unwrap();
    let other = cat.create_sink(sink("t")).unwrap();
    let progress = SinkProgress {
        next: 10,
        through: [("dt=2026-11-25/hour=11".to_string(), 20)].into(),
    };
    cat.commit_sink(s.id, &[file("x/1", 0), file("x/2", 0)], 0, &progress, false)
        .unwrap();
    cat.commit_sink(
        other.id,
        &[file("y/1", 1)],
        1,
        &SinkProgress::default(),
        false,
    )
    .unwrap();
    assert_eq!(cat.sink_files(s.id).unwrap().len(), 2);
    assert_eq!(
        cat.sink_progress(s.id, 2).unwrap(),
        vec![Some(progress.clone()), None]
    );
    assert!(progress.delivered("dt=2026-11-25/hour=11", 15));
    assert!(!progress.delivered("dt=2026-11-25/hour=12", 15));

    // Compaction's swap is all or nothing.
    let merged = file("x/merged", 0);
    assert!(cat
        .replace_sink_files(s.id, &["x/1".into(), "x/gone".into()], &merged, false)
        .is_err());
    assert_eq!(cat.sink_files(s.id).unwrap().len(), 2);
    cat.replace_sink_files(s.id, &["x/1".into(), "x/2".into()], &merged, false)
        .unwrap();
    let paths: Vec<String> = cat
        .sink_files(s.id)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, vec!["x/merged".to_string()]);

    cat.drop_sink("s").unwrap();
    assert!(cat.sink_files(s.id).unwrap().is_empty());
    assert_eq!(cat.sink_progress(s.id, 2).unwrap(), vec![None, None]);
    assert_eq!(
        cat.sink_files(other.id).unwrap().len(),
        1,
        "other sinks keep theirs"
    );
    assert_eq!(cat.sinks().unwrap().len(), 1);
}

/// A sink stored before partition styles existed keeps the zero-padded
/// hours its directories and progress keys use.
#[test]
fn sinks_stored_without_a_partition_style_keep_padded_hours() {
    let mut stored = serde_json::to_value(sink("old")).unwrap();
    stored.as_object_mut().unwrap().remove("partition_style");
    let old: SinkDef = serde_json::from_value(stored).unwrap();
    assert_eq!(old.partition_style, PartitionStyle::Padded);
    assert_eq!(sink("new").partition_style, PartitionStyle::Typed);
}

/// A Delta sink's commits queue their changes in the same transaction, in
/// order and without gaps; a failed swap queues nothing; published changes
/// are forgotten, and a dropped sink's outbox goes with it.
#[test]
fn delta_changes_queue_with_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
    cat.create_stream(def("a")).unwrap();
    let s = cat.create_sink(sink("s")).unwrap();
    let other = cat.create_sink(sink("t")).unwrap();
    let progress = SinkProgress::default();
    cat.commit_sink(s.id, &[file("x/1", 0)], 0, &progress, true)
        .unwrap();
    cat.commit_sink(s.id, &[], 0, &progress, true).unwrap();
    cat.commit_sink(s.id, &[file("x/2", 1)], 1, &progress, true)
        .unwrap();
    cat.commit_sink(other.id, &[file("y/1", 0)], 0, &progress, true)
        .unwrap();
    let merged = file("x/m", 0);
    assert!(cat
        .replace_sink_files(s.id, &["x/1".into(), "x/gone".into()], &merged, true)
        .is_err());
    cat.replace_sink_files(s.id, &["x/1".into(), "x/2".into()], &merged, true)
        .unwrap();

    let queued = cat.delta_outbox(s.id, 100).unwrap();
    let seqs: Vec<u64> = queued.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3], "an offset-only commit queues nothing");
    assert_eq!(queued[0].added[0].path, "x/1");
    assert!(queued[0].data_change);
    assert_eq!(queued[2].added[0].path, "x/m");
    assert_eq!(queued[2].removed.len(), 2);
    assert!(!queued[2].data_change);
    assert_eq!(cat.delta_last_seq(s.id).unwrap(), 3);
    assert_eq!(cat.delta_outbox(s.id, 1).unwrap().len(), 1);

    cat.delta_published(s.id, 2).unwrap();
    let left: Vec<u64> = cat
        .delta_outbox(s.id, 100)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(left, vec![3]);
    assert_eq!(cat.delta_outbox(other.id, 100).unwrap().len(), 1);

    cat.drop_sink("s").unwrap();
    assert!(cat.delta_outbox(s.id, 100).unwrap().is_empty());
    assert_eq!(cat.delta_last_seq(s.id).unwrap(), 0);
    assert_eq!(cat.delta_outbox(other.id, 100).unwrap().len(), 1);
}
