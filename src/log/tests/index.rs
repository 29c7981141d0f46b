//! The packed frame index against the `FrameRef`s pushed into it.

use crate::log::frame::{Bulk, FRAME_HEADER_BYTES};
use crate::log::index::FrameIndex;
use crate::log::FrameRef;

/// Frames as a shard writes them: contiguous, with a few of each rare
/// field, a clock that steps back once and jumps far once, and a gap
/// (a bulk segment's frames need not start at 0).
fn frames(n: usize) -> Vec<FrameRef> {
    let mut out = Vec::new();
    let (mut offset, mut seq, mut time) = (4096u64, 100u64, 1_700_000_000_000i64);
    for i in 0..n {
        let record_count = (i % 7) as u32 + u32::from(i % 11 != 0);
        let payload_len = 200 + (i * 37 % 1500) as u32;
        time += match i {
            300 => -5_000,
            700 => 40 * 24 * 3_600_000,
            _ => (i % 3) as i64,
        };
        out.push(FrameRef {
            first_seq: seq,
            record_count,
            offset,
            payload_len,
            append_time_ms: time,
            progress: (i % 5 == 0).then_some(((i % 3) as u32, i as u64 * 10)),
            bulk: (i % 13 == 0).then_some(Bulk {
                id: i as u64 / 26 + 1,
                end_of_shards: (i % 26 == 0) as u32,
            }),
            schema_version: 1 + (i / 400) as u32,
        });
        offset += FRAME_HEADER_BYTES as u64 + payload_len as u64;
        seq += record_count as u64;
        if i == 500 {
            offset += 4096;
        }
    }
    out
}

#[test]
fn gives_back_every_frame_as_pushed() {
    let all = frames(1000);
    let index: FrameIndex = all.iter().copied().collect();
    assert_eq!(index.len(), all.len());
    assert_eq!(index.iter().collect::<Vec<_>>(), all);
    for i in [0, 1, 31, 32, 33, 299, 300, 501, 502, 700, 999] {
        assert_eq!(index.get(i), Some(all[i]), "frame {i}");
        assert_eq!(index.iter_from(i).collect::<Vec<_>>(), all[i..], "from {i}");
    }
    assert_eq!(index.get(1000), None);
    assert_eq!(index.iter_from(1000).count(), 0);
    assert_eq!(index.last(), all.last().copied());
}

#[test]
fn finds_frames_by_sequence_number() {
    let all = frames(1000);
    let index: FrameIndex = all.iter().copied().collect();
    let end = all.last().unwrap().end_seq();
    for seq in (0..end + 3).step_by(7).chain([99, 100, 101, end - 1, end]) {
        let expected = all.partition_point(|f| f.end_seq() <= seq);
        assert_eq!(index.frames_ending_by(seq), expected, "seq {seq}");
    }
}

#[test]
fn keeps_the_rare_fields_of_the_newest_frames() {
    let all = frames(1000);
    let index: FrameIndex = all.iter().copied().collect();
    for source in 0..4 {
        let expected = all
            .iter()
            .rev()
            .find_map(|f| f.progress.filter(|p| p.0 == source).map(|p| p.1));
        assert_eq!(index.last_progress(source), expected, "source {source}");
    }
    let marker = |b: &Bulk| b.end_of_shards > 0;
    let expected = all.iter().rev().find_map(|f| f.bulk.filter(marker));
    assert_eq!(index.last_bulk(marker), expected);
}

#[test]
fn a_summary_answers_what_a_sealed_segment_is_asked_without_its_frames() {
    let all = frames(1000);
    let index: FrameIndex = all.iter().copied().collect();
    let summary = index.summary(100);
    assert_eq!(summary.frame_count, 1000);
    assert_eq!(summary.end_seq, all[999].end_seq());
    assert_eq!(summary.last_append_ms, Some(all[999].append_time_ms));
    let with_records = all.iter().filter(|f| f.record_count > 0);
    assert_eq!(
        summary.max_record_append_ms,
        with_records.map(|f| f.append_time_ms).max()
    );
    for source in 0..4 {
        let newest = summary.progress.iter().find(|p| p.0 == source);
        assert_eq!(newest.map(|p| p.1), index.last_progress(source));
    }
    assert_eq!(summary.bulk_ids, Some((1, 999 / 26 + 1)));
    let empty = FrameIndex::default().summary(42);
    assert_eq!((empty.frame_count, empty.end_seq), (0, 42));
    assert_eq!(empty.last_append_ms, None);
    // The clock stepped back at frame 300: the first frame at a time is
    // the first in order, not the first with a later time.
    let t = all[299].append_time_ms;
    assert_eq!(
        index.first_at_time(t),
        all.iter()
            .find(|f| f.append_time_ms >= t && f.record_count > 0)
            .copied()
    );
}

#[test]
fn truncation_keeps_a_prefix_that_grows_again() {
    let all = frames(1000);
    let mut index: FrameIndex = all.iter().copied().collect();
    for n in [999, 640, 64, 33, 32, 1, 0] {
        index.truncate(n);
        assert_eq!(index.end_seq(), n.checked_sub(1).map(|i| all[i].end_seq()));
        assert_eq!(
            index.iter().collect::<Vec<_>>(),
            all[..n],
            "truncated to {n}"
        );
    }
    for f in &all {
        index.push(*f);
    }
    assert_eq!(index.iter().collect::<Vec<_>>(), all);
}

#[test]
fn a_tail_bulk_is_the_run_of_its_frames_at_the_end() {
    let bulk = |id| {
        Some(Bulk {
            id,
            end_of_shards: 0,
        })
    };
    let mut all = frames(40);
    for f in &mut all {
        f.bulk = None;
    }
    let mut index: FrameIndex = all.iter().copied().collect();
    assert_eq!(index.tail_bulk(), None);
    // Frames 34..40 are bulk 9 except 36, which belongs to bulk 8.
    for (i, f) in all.iter_mut().enumerate().skip(34) {
        f.bulk = if i == 36 { bulk(8) } else { bulk(9) };
    }
    index = all.iter().copied().collect();
    assert_eq!(
        index.tail_bulk().map(|(b, first)| (b.id, first)),
        Some((9, 37))
    );
    index.truncate(37);
    assert_eq!(
        index.tail_bulk().map(|(b, first)| (b.id, first)),
        Some((8, 36))
    );
}

/// What the index is for: small frames cost ~13 bytes, not 88.
#[test]
fn a_sealed_index_of_small_frames_costs_about_13_bytes_a_frame() {
    let mut index = FrameIndex::default();
    let (mut offset, mut seq) = (0u64, 0u64);
    for i in 0..100_000u64 {
        index.push(FrameRef {
            first_seq: seq,
            record_count: 1,
            offset,
            payload_len: 1_200,
            append_time_ms: 1_700_000_000_000 + (i / 4) as i64,
            progress: None,
            bulk: None,
            schema_version: 1,
        });
        offset += FRAME_HEADER_BYTES as u64 + 1_200;
        seq += 1;
    }
    index.shrink_to_fit();
    let per_frame = index.heap_bytes() as f64 / index.len() as f64;
    assert!(per_frame <= 13.1, "{per_frame} bytes a frame");
}
