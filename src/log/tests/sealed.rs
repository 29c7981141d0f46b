//! Sealed segments keep summaries; their frames are read back from the
//! files when a reader gets there. What readers see must not change.

use super::*;

/// A 1-shard log of 4 KiB segments with `n` single-row appends, every
/// tenth recording progress for source shard `i % 3`.
async fn many_segments(dir: &Path, n: i64) -> Arc<StreamLog> {
    let log = StreamLog::open(dir, Versions::single(schema()), options(1, None)).unwrap();
    for i in 0..n {
        if i % 10 == 0 {
            let progress = ((i % 3) as u32, i as u64);
            log.append_progress(vec![(0, batch(i, 1))], progress)
                .await
                .unwrap();
        } else {
            log.append(batch(i, 1)).await.unwrap();
        }
    }
    log
}

fn frames(log: &StreamLog, from: u64, max: u64) -> Vec<FrameRef> {
    let frames = log.frames_from(0, from, max).unwrap();
    frames.into_iter().map(|(_, f)| f).collect()
}

#[tokio::test]
async fn readers_get_every_frame_of_sealed_segments_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = many_segments(dir.path(), 300).await;
    let stats = log.shard_stats()[0];
    assert!(stats.segments > 20, "{} segments", stats.segments);
    let written = frames(&log, 0, u64::MAX);
    assert_eq!(read_all(&log), (0..300).collect::<Vec<_>>());
    log.close();
    drop(log);

    // After a reopen only the last few sealed indexes are in memory.
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    assert_eq!(frames(&log, 0, u64::MAX), written);
    assert_eq!(read_all(&log), (0..300).collect::<Vec<_>>());
    // Any start, any bound: the same frames as a walk of everything.
    for (from, max) in [(0, 1), (1, 3), (57, 5), (150, 40), (299, 1), (300, 1)] {
        let expected: Vec<FrameRef> = written
            .iter()
            .skip_while(|f| f.end_seq() <= from)
            .take(max as usize)
            .copied()
            .collect();
        assert_eq!(
            frames(&log, from, max),
            expected,
            "from {from}, {max} records"
        );
    }
    // Bounded: far less than an index of every frame in memory.
    let all_indexed = written.len() * 12;
    let index_bytes = log.shard_stats()[0].index_bytes as usize;
    assert!(
        index_bytes * 3 < all_indexed,
        "{index_bytes} index bytes for {} frames",
        written.len()
    );
}

#[tokio::test]
async fn lookups_that_reach_sealed_segments_find_what_a_walk_finds() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 300).await.close();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    let written = frames(&log, 0, u64::MAX);
    // Progress: from the summaries, newest per source.
    for source in 0..3 {
        let newest = (0..300i64)
            .rev()
            .find(|i| i % 10 == 0 && i % 3 == source as i64);
        assert_eq!(log.last_progress(0, source), newest.map(|i| i as u64));
    }
    assert_eq!(log.last_progress(0, 3), None);
    // By time: the first frame in order at or after a time, even when it is
    // in a sealed segment no longer in memory.
    for f in [
        written[0],
        written[5],
        written[150],
        *written.last().unwrap(),
    ] {
        let t = f.append_time_ms;
        let expected = written
            .iter()
            .find(|g| g.append_time_ms >= t && g.record_count > 0)
            .map(|g| g.first_seq);
        assert_eq!(log.seq_at_time(0, t).unwrap(), expected);
    }
    let later = written.last().unwrap().append_time_ms + 60_000;
    assert_eq!(log.seq_at_time(0, later).unwrap(), Some(300));
}

#[tokio::test]
async fn a_sealed_segment_damaged_after_start_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    many_segments(dir.path(), 300).await.close();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(1, None)).unwrap();
    // The oldest segment's index is not in memory; break its second frame.
    let mut paths: Vec<_> = std::fs::read_dir(dir.path().join("shard-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let oldest = &paths[0];
    let (_, first) = log.frames_from(0, 0, 1).unwrap().remove(0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(oldest)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"XXXX", first.frame_len()).unwrap();
    // The reader above read its first frame already; a later reader reads
    // the file again only if the index left the cache: push it out.
    for from in [100, 150, 200, 250, 280] {
        log.frames_from(0, from, 1).unwrap();
    }
    let err = log.frames_from(0, 0, u64::MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "XX001", "{err}");
}
