//! A statement is all or nothing after a crash, across shards and frames:
//! a group whose frames reached the disk in some shards and not in others
//! is cut from all of them on open.

use super::*;

/// Tears the newest frame of `shard` as a crash mid-write would (the
/// frame's first bytes are on disk, the rest never made it).
fn tear_last_frame(log: &StreamLog, dir: &Path, shard: u32) {
    let (_, last) = log.frames_from(shard, 0, u64::MAX).unwrap().pop().unwrap();
    let shard_dir = dir.join(format!("shard-{shard}"));
    let segment = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(last.offset + 20)
        .unwrap();
}

fn big_segments(shards: u32, key: Option<usize>) -> LogOptions {
    let mut opts = options(shards, key);
    opts.segment_size_bytes = 64 << 20;
    opts
}

#[tokio::test]
async fn a_statement_torn_in_one_shard_is_cut_from_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(
            dir.path(),
            Versions::single(schema()),
            big_segments(3, Some(0)),
        )
        .unwrap();
        log.append(batch(-10, 10)).await.unwrap();
        let ack = log.append(batch(0, 30)).await.unwrap();
        assert_eq!(ack.ranges.len(), 3, "the statement spans every shard");
        tear_last_frame(&log, dir.path(), 1);
        log.close();
    }
    let log = StreamLog::open(
        dir.path(),
        Versions::single(schema()),
        big_segments(3, Some(0)),
    )
    .unwrap();
    assert_eq!(
        read_all(&log),
        (-10..0).collect::<Vec<_>>(),
        "no row of the torn statement remains in any shard"
    );
    // The log goes on, and the next statements are whole.
    log.append(batch(100, 30)).await.unwrap();
    log.close();
    let log = StreamLog::open(
        dir.path(),
        Versions::single(schema()),
        big_segments(3, Some(0)),
    )
    .unwrap();
    let mut want: Vec<i64> = (-10..0).collect();
    want.extend(100..130);
    assert_eq!(read_all(&log), want);
}

#[tokio::test]
async fn a_statement_of_several_frames_torn_at_its_last_is_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(
            dir.path(),
            Versions::single(schema()),
            big_segments(1, None),
        )
        .unwrap();
        log.append(batch(-5, 5)).await.unwrap();
        let rows = 3 * FRAME_MAX_ROWS as i64 + 10;
        log.append(batch(0, rows)).await.unwrap();
        assert_eq!(log.frames_from(0, 0, u64::MAX).unwrap().len(), 5);
        tear_last_frame(&log, dir.path(), 0);
        log.close();
    }
    let log = StreamLog::open(
        dir.path(),
        Versions::single(schema()),
        big_segments(1, None),
    )
    .unwrap();
    assert_eq!(read_all(&log), (-5..0).collect::<Vec<_>>());
}

#[tokio::test]
async fn whole_groups_survive_reopen_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = StreamLog::open(
            dir.path(),
            Versions::single(schema()),
            big_segments(4, Some(0)),
        )
        .unwrap();
        let writes: Vec<_> = (0..20).map(|i| log.append(batch(i * 10, 10))).collect();
        futures::future::try_join_all(writes).await.unwrap();
        log.close();
    }
    let log = StreamLog::open(
        dir.path(),
        Versions::single(schema()),
        big_segments(4, Some(0)),
    )
    .unwrap();
    assert_eq!(read_all(&log), (0..200).collect::<Vec<_>>());
}
