//! The view cache and group numbering.

use super::*;

/// Two views that map to the same slot.
fn colliding_pair() -> (u128, u128) {
    let first = 1u128 << 64;
    let slot = ViewCache::slot(first);
    let second = (2..)
        .map(|n: u128| n << 64)
        .find(|v| ViewCache::slot(*v) == slot)
        .unwrap();
    (first, second)
}

#[test]
fn a_view_is_known_only_in_the_batch_it_was_seen() {
    let mut cache = ViewCache::default();
    cache.next_batch();
    cache.insert(7, 3);
    assert_eq!(cache.get(7), Some(3));
    assert_eq!(cache.get(8), None);
    cache.next_batch();
    assert_eq!(cache.get(7), None);
}

#[test]
fn two_views_of_one_slot_are_both_kept() {
    let (a, b) = colliding_pair();
    let mut cache = ViewCache::default();
    cache.next_batch();
    cache.insert(a, 1);
    cache.insert(b, 2);
    assert_eq!((cache.get(a), cache.get(b)), (Some(1), Some(2)));
}

#[test]
fn groups_are_numbered_by_value_not_by_view() {
    // The same long value at two offsets has two views, one group.
    let long = "a value longer than twelve bytes";
    let keys = StringViewArray::from(vec![Some(long), Some("short"), None, Some(long)]);
    let again = StringViewArray::from(vec![Some("short"), Some(long), None]);
    let mut groups = Groups::default();
    let mut out = Vec::new();
    groups.intern(&keys, &mut out);
    assert_eq!(out, vec![0, 1, 2, 0]);
    groups.intern(&again, &mut out);
    assert_eq!(out, vec![1, 0, 2]);
    let values = groups.take_values();
    let values = values.as_string_view();
    assert_eq!(values.value(0), long);
    assert_eq!(values.value(1), "short");
    assert!(values.is_null(2));
    // A new window numbers from 0 again.
    groups.intern(&again, &mut out);
    assert_eq!(out, vec![0, 1, 2]);
}
