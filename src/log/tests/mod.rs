//! Unit tests of the stream log (a `#[cfg(test)]` module of `log`):
//! appends, reopen, torn tails, group commit, followers, retention, progress.

use super::*;
use crate::log::writer::{FRAME_MAX_BYTES, FRAME_MAX_ROWS};
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn batch(from: i64, n: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(from..from + n)),
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| format!("v{i}")),
            )),
        ],
    )
    .unwrap()
}

fn options(shards: u32, key: Option<usize>) -> LogOptions {
    LogOptions {
        shards,
        partition_key: key,
        segment_size_bytes: 4096,
        append_queue_depth: 64,
        retention: None,
    }
}

/// `(shard, seq) -> k` of every row in the log.
fn positions(log: &StreamLog) -> std::collections::HashMap<(u32, u64), i64> {
    let mut out = std::collections::HashMap::new();
    for shard in 0..log.shard_count() {
        for (file, frame) in log.frames_from(shard, 0, u64::MAX).unwrap() {
            let read = ReadSchema::plain(Arc::new(schema().project(&[0]).unwrap()));
            let b = read_frame(&file, &frame, &log.versions(), &read, 0).unwrap();
            let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            for (i, k) in col.values().iter().enumerate() {
                out.insert((shard, frame.first_seq + i as u64), *k);
            }
        }
    }
    out
}

fn read_all(log: &StreamLog) -> Vec<i64> {
    let mut out: Vec<i64> = positions(log).into_values().collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn appends_survive_reopen_and_roll_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(2, Some(0))).unwrap();
        for i in 0..50 {
            let ack = log.append(batch(i * 10, 10)).await.unwrap();
            assert_eq!(ack.records(), 10);
        }
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(2, Some(0))).unwrap();
    assert_eq!(read_all(&log), (0..500).collect::<Vec<_>>());
    let stats = log.shard_stats();
    assert_eq!(stats.iter().map(|s| s.records).sum::<u64>(), 500);
    assert!(
        stats.iter().any(|s| s.segments > 1),
        "4 KiB segments must roll: {stats:?}"
    );
}

// Commits run on the appending tasks: statements can only queue behind a
// commit when other threads run tasks meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                log.append(batch(t * 1000 + i, 1)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(read_all(&log).len(), 320);
    let frames = log.frames_from(0, 0, u64::MAX).unwrap().len();
    assert!(
        frames < 320,
        "expected merged frames, got {frames} for 320 appends"
    );
}

#[tokio::test]
async fn segments_are_preallocated_and_sealed_ones_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard-0");
    let lengths = || {
        let mut files: Vec<(std::path::PathBuf, u64)> = std::fs::read_dir(&shard_dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.path(), e.metadata().unwrap().len()))
            .collect();
        files.sort();
        files
    };
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
        log.append(batch(0, 5)).await.unwrap();
        let stats = log.shard_stats()[0];
        let files = lengths();
        assert_eq!(files.len(), 1);
        assert!(files[0].1 > stats.bytes, "the active file has room ahead");
        // A small append's room is written zeros, not a hole: the next
        // appends overwrite allocated blocks (no inode write at fdatasync).
        let allocated = std::os::unix::fs::MetadataExt::blocks(&files[0].0.metadata().unwrap());
        assert!(
            allocated * 512 >= files[0].1,
            "{} bytes allocated for a {}-byte file",
            allocated * 512,
            files[0].1
        );
        for i in 1..40 {
            log.append(batch(i * 10, 10)).await.unwrap();
        }
        log.close();
    }
    let files = lengths();
    assert!(files.len() > 2, "4 KiB segments rolled: {files:?}");
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    // Sealed files hold exactly their frames; only the active one has room.
    let (active_path, active_len) = files.last().cloned().unwrap();
    let active_base =
        segment::parse_segment_file_name(&active_path.file_name().unwrap().to_string_lossy())
            .unwrap();
    let frames = log.frames_from(0, 0, u64::MAX).unwrap();
    let frame_bytes = |sealed: bool| -> u64 {
        frames
            .iter()
            .filter(|(_, f)| (f.first_seq < active_base) == sealed)
            .map(|(_, f)| f.frame_len())
            .sum()
    };
    let sealed_len: u64 = files[..files.len() - 1].iter().map(|f| f.1).sum();
    assert_eq!(sealed_len, frame_bytes(true));
    assert!(active_len > frame_bytes(false));
    assert_eq!(
        frame_bytes(true) + frame_bytes(false),
        log.shard_stats()[0].bytes
    );
    let mut want: Vec<i64> = (0..5).collect();
    want.extend(10..400);
    assert_eq!(read_all(&log), want, "the zero tail was read as room");
    log.append(batch(1000, 1)).await.unwrap();
    log.close();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    assert_eq!(read_all(&log).last(), Some(&1000));
}

#[tokio::test]
async fn torn_tail_is_truncated_on_open_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let seg_path;
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
        log.append(batch(0, 5)).await.unwrap();
        log.append(batch(5, 5)).await.unwrap();
        let (_, last) = log.frames_from(0, 0, u64::MAX).unwrap().pop().unwrap();
        seg_path = dir
            .path()
            .join("shard-0")
            .join(segment::segment_file_name(0));
        log.close();
        // Simulate a crash mid-write of the second frame.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg_path)
            .unwrap();
        f.set_len(last.offset + 20).unwrap();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    assert_eq!(read_all(&log), (0..5).collect::<Vec<_>>());
    let ack = log.append(batch(100, 2)).await.unwrap();
    assert_eq!(ack.ranges, vec![(0, 5, 2)]);
    log.close();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    assert_eq!(read_all(&log), vec![0, 1, 2, 3, 4, 100, 101]);
}

#[tokio::test]
async fn followers_are_notified_of_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    let mut rx = log.subscribe(0).unwrap();
    assert_eq!(*rx.borrow_and_update(), 0);
    let writer = log.clone();
    tokio::spawn(async move { writer.append(batch(0, 3)).await.unwrap() });
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*rx.borrow(), 3);
    let frames = log.frames_from(0, 1, 10).unwrap();
    let read = ReadSchema::plain(schema());
    let b = read_frame(&frames[0].0, &frames[0].1, &log.versions(), &read, 1).unwrap();
    assert_eq!(
        b.num_rows(),
        2,
        "reading from the middle of a frame slices it"
    );
}

#[tokio::test]
async fn retention_deletes_old_segments_but_respects_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(1, None);
    opts.retention = Some(Duration::from_secs(1));
    let log = StreamLog::open(dir.path(), Versions::single(schema()), opts).unwrap();
    for i in 0..40 {
        log.append(batch(i * 10, 10)).await.unwrap();
    }
    let before = log.shard_stats()[0];
    assert!(before.segments > 2);
    let later = now_ms() + 10_000;
    log.hold("sink_a", 0, 0);
    assert_eq!(
        log.enforce_retention(later).unwrap(),
        0,
        "a hold at 0 keeps everything"
    );
    log.hold("sink_a", 0, 200);
    let deleted = log.enforce_retention(later).unwrap();
    assert!(deleted > 0);
    let after = log.shard_stats()[0];
    assert!(after.first_seq <= 200 && after.first_seq > 0, "{after:?}");
    log.release("sink_a");
    log.enforce_retention(later).unwrap();
    assert_eq!(
        log.shard_stats()[0].segments,
        1,
        "only the active segment remains"
    );
    assert_eq!(log.shard_stats()[0].next_seq, 400);
}

#[tokio::test]
async fn progress_is_recorded_with_the_output_even_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(2, None)).unwrap();
        assert_eq!(log.last_progress(1, 0), None);
        log.append_progress(vec![(1, batch(0, 3)), (0, batch(3, 1))], (0, 10))
            .await
            .unwrap();
        log.append_progress(vec![(1, RecordBatch::new_empty(schema()))], (0, 25))
            .await
            .unwrap();
        log.append_progress(vec![(1, batch(50, 2))], (1, 7))
            .await
            .unwrap();
        log.append(batch(100, 1)).await.unwrap();
        assert_eq!(log.last_progress(1, 0), Some(25));
        assert_eq!(log.last_progress(1, 1), Some(7));
        assert_eq!(log.last_progress(0, 0), Some(10));
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(2, None)).unwrap();
    assert_eq!(
        log.last_progress(1, 0),
        Some(25),
        "progress survives reopen"
    );
    assert_eq!(log.last_progress(0, 1), None);
    assert_eq!(read_all(&log).len(), 7, "the empty frame adds no rows");
}

#[tokio::test]
async fn concurrent_pipeline_appends_keep_their_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    let mut tasks = Vec::new();
    for source in 0..4u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for end in 1..=20u64 {
                log.append_progress(vec![(0, batch(end as i64, 1))], (source, end * 10))
                    .await
                    .unwrap();
                if source == 0 {
                    log.append(batch(-1, 1)).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for source in 0..4 {
        assert_eq!(log.last_progress(0, source), Some(200));
    }
    assert_eq!(read_all(&log).len(), 100);
}

#[tokio::test]
async fn large_appends_are_framed_in_bounded_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(1, None);
    opts.segment_size_bytes = 64 << 20;
    let log = StreamLog::open(dir.path(), Versions::single(schema()), opts).unwrap();
    // One part larger than a frame, then many small parts in one append.
    let ack = log.append(batch(0, 200_000)).await.unwrap();
    assert_eq!(ack.records(), 200_000);
    let small: Vec<RecordBatch> = (0..100).map(|i| batch(200_000 + i * 1000, 1000)).collect();
    assert_eq!(log.append_batches(small).await.unwrap().records(), 100_000);
    let frames = log.frames_from(0, 0, u64::MAX).unwrap();
    let rows: Vec<u64> = frames
        .iter()
        .map(|(_, f)| f.end_seq() - f.first_seq)
        .collect();
    assert!(rows.iter().all(|r| *r <= FRAME_MAX_ROWS as u64), "{rows:?}");
    // 200k = 3 full frames + 3392 rows; 100 × 1000 fill frames to the bound.
    assert_eq!(rows.len(), 4 + 2, "{rows:?}");
    assert_eq!(read_all(&log), (0..300_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn wide_rows_make_frames_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(2, None);
    opts.segment_size_bytes = 256 << 20;
    let log = StreamLog::open(dir.path(), Versions::single(schema()), opts).unwrap();
    // 20 000 rows of ~8 KB: 160 MB in one statement, far over one frame.
    let wide = "x".repeat(8 * 1024);
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..20_000)),
            Arc::new(StringArray::from_iter_values(
                (0..20_000).map(|_| wide.as_str()),
            )),
        ],
    )
    .unwrap();
    assert_eq!(log.append(batch.clone()).await.unwrap().records(), 20_000);
    // A pipeline's output batch of the same size is split as well, its
    // progress on the last frame.
    let ack = log
        .append_progress(vec![(1, batch)], (0, 42))
        .await
        .unwrap();
    assert_eq!(ack.records(), 20_000);
    assert_eq!(log.last_progress(1, 0), Some(42));
    for shard in 0..2 {
        let frames = log.frames_from(shard, 0, u64::MAX).unwrap();
        assert!(frames.len() >= 5, "{} frames", frames.len());
        for (_, frame) in frames {
            assert!(frame.payload_len as usize <= FRAME_MAX_BYTES + (1 << 20));
        }
    }
    assert_eq!(read_all(&log).len(), 40_000);
}

mod atomic;
mod bulk;
mod index;
mod routing;
mod sealed;
mod versions;

// A statement cancelled while it waits is still committed by whoever leads
// next (it was queued): the queue never stalls on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_appends_do_not_stall_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    for round in 0..20 {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    log.append(batch(round * 10_000 + t * 100 + i, 1))
                        .await
                        .unwrap();
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_micros(300)).await;
        for t in tasks.iter().step_by(2) {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let alive = log.append(batch(1_000_000 + round, 1));
        tokio::time::timeout(std::time::Duration::from_secs(10), alive)
            .await
            .expect("an append after cancelled ones completes")
            .unwrap();
    }
    // Every row is there at most once, and every statement that was not
    // cancelled is there.
    let rows = read_all(&log);
    let mut ids = rows.clone();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "a row was written twice");
    for round in 0..20 {
        assert!(rows.binary_search(&(1_000_000 + round)).is_ok());
        for t in (1..8).step_by(2) {
            for i in 0..10 {
                assert!(rows.binary_search(&(round * 10_000 + t * 100 + i)).is_ok());
            }
        }
    }
}
