//! Routing rows to shards: by partition key, in turn without one, and
//! gathered per group commit; acks and positions say where rows landed.

use super::*;

#[tokio::test]
async fn same_key_goes_to_same_shard() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(4, Some(0))).unwrap();
    let a = log.append(batch(7, 1)).await.unwrap();
    let b = log.append(batch(7, 1)).await.unwrap();
    assert_eq!(a.ranges[0].0, b.ranges[0].0);
    assert_eq!(
        b.ranges[0].1,
        a.ranges[0].1 + 1,
        "sequence numbers continue per shard"
    );
}

#[tokio::test]
async fn positions_follow_rows_to_their_shards() {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::open(dir.path(), Versions::single(schema()), options(3, Some(0))).unwrap();
    let first = log.append_positions(batch(0, 30)).await.unwrap();
    let again = log.append_positions(batch(0, 30)).await.unwrap();
    for row in 0..30 {
        assert_eq!(first[row].0, again[row].0, "same key, same shard");
        assert!(again[row].1 > first[row].1);
    }
    let mut all: Vec<(u32, u64)> = first.iter().chain(&again).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 60, "every row has its own position");
    let rr = StreamLog::open(
        &dir.path().join("rr"),
        Versions::single(schema()),
        options(2, None),
    )
    .unwrap();
    let p = rr.append_positions(batch(0, 3)).await.unwrap();
    assert_eq!(p.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(p.iter().all(|x| x.0 == p[0].0));
}

#[test]
fn integer_keys_hash_the_text_the_cast_makes() {
    let values = [
        Some(i64::MIN),
        Some(-1),
        None,
        Some(0),
        Some(7),
        Some(123_456_789),
        Some(i64::MAX),
    ];
    let ints: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
    // What the key's text form was before integers got a direct path.
    let texts = cast(&ints, &DataType::Utf8).unwrap();
    for shards in [1, 3, 4, 16] {
        assert_eq!(
            key_shards(&ints, shards).unwrap(),
            key_shards(&texts, shards).unwrap(),
            "{shards} shards"
        );
    }
    let expected = crc32c::crc32c(b"-9223372036854775808") % 16;
    assert_eq!(key_shards(&ints, 16).unwrap()[0], expected);
    assert_eq!(key_shards(&ints, 16).unwrap()[2], 0, "NULL goes to shard 0");
}

#[test]
fn gathering_moves_only_rows_that_went_to_a_shard_in_turn() {
    use crate::log::commit::{gather_unkeyed, Request};
    let request = |shard: u32, any_shard: bool| Request {
        any_shard,
        ..Request::new(vec![(shard, batch(0, 1)), (shard, batch(1, 1))], 0)
    };
    let mut group = vec![
        request(1, false),
        request(2, true),
        request(3, false),
        request(0, true),
        request(3, true),
    ];
    gather_unkeyed(&mut group);
    let shards: Vec<Vec<u32>> = group
        .iter()
        .map(|r| r.parts.iter().map(|(s, _)| *s).collect())
        .collect();
    assert_eq!(shards, [[1, 1], [2, 2], [3, 3], [2, 2], [2, 2]]);
}

/// Concurrent appends to a keyless stream: a group gathers them on one
/// shard (one write and one fsync), every ack still says where its row
/// is, and the shards all get rows. With a key, rows stay on their key's
/// shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_gathers_keyless_rows_on_one_shard_and_acks_say_where() {
    for key in [None, Some(0)] {
        let dir = tempfile::tempdir().unwrap();
        let log = StreamLog::open(dir.path(), Versions::single(schema()), options(4, key)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..40 {
                    let k = t * 1000 + i;
                    acks.push((k, log.append(batch(k, 1)).await.unwrap()));
                }
                acks
            }));
        }
        let mut acks = Vec::new();
        for t in tasks {
            acks.extend(t.await.unwrap());
        }
        let stored = positions(&log);
        assert_eq!(stored.len(), 640, "{key:?}");
        for (k, ack) in &acks {
            assert_eq!(ack.ranges.len(), 1);
            let (shard, seq, rows) = ack.ranges[0];
            assert_eq!(rows, 1);
            assert_eq!(stored.get(&(shard, seq)), Some(k), "{key:?}: ack of {k}");
            if key.is_some() {
                let split = log.split_by_key(&batch(*k, 1)).unwrap().unwrap();
                assert_eq!(split[shard as usize], vec![0], "{k} is on its key's shard");
            }
        }
        let frames: usize = (0..4)
            .map(|s| log.frames_from(s, 0, u64::MAX).unwrap().len())
            .sum();
        assert!(frames < 640, "{key:?}: {frames} frames for 640 appends");
        for shard in 0..4 {
            assert!(
                log.shard_stats()[shard].records > 0,
                "{key:?}: shard {shard} is empty"
            );
        }
    }
}
