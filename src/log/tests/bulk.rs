//! Bulk appends: whole after reopen, cut from every shard when torn in
//! one, and concurrent with plain appends.

use super::*;

/// Cuts `bytes` off the end of the newest segment file in `shard_dir` (a
/// bulk's segment has no preallocated tail: the cut tears its end marker).
fn cut_newest_segment(shard_dir: &Path, bytes: u64) {
    let segment = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - bytes)
        .unwrap();
}

async fn bulk(log: &StreamLog, from: i64, n: i64, chunk: i64) {
    let mut spill = log.bulk_spill().unwrap();
    for start in (from..from + n).step_by(chunk as usize) {
        log.spill(&mut spill, batch(start, chunk.min(from + n - start)))
            .unwrap();
    }
    let ack = log.append_bulk(spill.finish().unwrap()).await.unwrap();
    assert_eq!(ack.records(), n as u64);
}

#[tokio::test]
async fn bulk_appends_are_whole_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
        log.append(batch(-10, 10)).await.unwrap();
        bulk(&log, 0, 1000, 100).await;
        log.append(batch(5000, 5)).await.unwrap();
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
    let mut want: Vec<i64> = (-10..1000).collect();
    want.extend(5000..5005);
    assert_eq!(read_all(&log), want);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("bulk-")),
        "spill files are removed"
    );
}

#[tokio::test]
async fn a_bulk_torn_in_one_shard_is_cut_from_all() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
        log.append(batch(-10, 10)).await.unwrap();
        bulk(&log, 0, 600, 50).await;
        log.close();
    }
    // A crash while the bulk's frames were being written: one shard lost
    // the tail of its end marker.
    cut_newest_segment(&dir.path().join("shard-1"), 10);
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
        assert_eq!(
            read_all(&log),
            (-10..0).collect::<Vec<_>>(),
            "nothing of the bulk remains"
        );
        log.append(batch(7000, 3)).await.unwrap();
        bulk(&log, 8000, 30, 7).await;
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
    let mut want: Vec<i64> = (-10..0).collect();
    want.extend(7000..7003);
    want.extend(8000..8030);
    assert_eq!(
        read_all(&log),
        want,
        "appends after the cut are whole and stay"
    );
}

#[tokio::test]
async fn a_complete_bulk_followed_by_appends_in_some_shards_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
        bulk(&log, 0, 300, 100).await;
        // One key: later rows land in one shard only, after the bulk.
        log.append(batch(7, 1)).await.unwrap();
        log.append(batch(7, 1)).await.unwrap();
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
    let mut want: Vec<i64> = (0..300).collect();
    want.extend([7, 7]);
    want.sort_unstable();
    assert_eq!(read_all(&log), want);
}

#[tokio::test]
async fn appends_go_on_while_a_bulk_is_written_and_it_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
        let mut spill = log.bulk_spill().unwrap();
        for start in (0..1000).step_by(100) {
            log.spill(&mut spill, batch(start, 100)).unwrap();
            // Other statements commit meanwhile; the bulk stays invisible.
            log.append(batch(10_000 + start, 1)).await.unwrap();
            assert!(read_all(&log).iter().all(|k| *k >= 10_000));
        }
        let ack = log.append_bulk(spill.finish().unwrap()).await.unwrap();
        assert_eq!(ack.records(), 1000);
        let mut want: Vec<i64> = (0..1000).collect();
        want.extend((0..1000).step_by(100).map(|s| 10_000 + s));
        want.sort_unstable();
        assert_eq!(read_all(&log), want);
        log.append(batch(20_000, 5)).await.unwrap();
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
    let rows = read_all(&log);
    assert_eq!(rows.len(), 1000 + 10 + 5);
    assert!((0..1000)
        .chain(20_000..20_005)
        .all(|k| rows.binary_search(&k).is_ok()));
}

#[tokio::test]
async fn a_bulk_after_a_cut_replaces_the_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
        log.append(batch(-5, 5)).await.unwrap();
        bulk(&log, 0, 100, 10).await;
        log.close();
    }
    // Tear the bulk's end marker: the cut leaves its segment empty.
    cut_newest_segment(&dir.path().join("shard-0"), 10);
    {
        let log =
            StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
        assert_eq!(read_all(&log), (-5..0).collect::<Vec<_>>());
        bulk(&log, 500, 20, 20).await;
        log.append(batch(900, 2)).await.unwrap();
        log.close();
    }
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    let mut want: Vec<i64> = (-5..0).collect();
    want.extend(500..520);
    want.extend(900..902);
    assert_eq!(read_all(&log), want);
}
