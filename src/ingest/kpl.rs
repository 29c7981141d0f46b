//! Kinesis Producer Library aggregation: one Kinesis record that carries
//! many user records. Its bytes are the magic `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the MD5 of those protobuf bytes. Each user
//! record names its partition key by index into the record's key table.
//! De-aggregated, every user record is stored (and routed) on its own; a
//! record whose magic, protobuf or MD5 does not check is ordinary data,
//! as the KCL treats it.

use md5::{Digest, Md5};
use prost::Message;

use super::RecordResult;
use crate::error::ErrorKind;

/// The four bytes that open an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_BYTES: usize = 16;

/// `AggregatedRecord` of the KPL's `messages.proto` (proto2).
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// The user records of `data` as (partition key, bytes), or `None` when it
/// is not a well-formed aggregated record (then it is one record itself).
pub fn deaggregate(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let body = data.strip_prefix(&MAGIC)?;
    let split = body.len().checked_sub(DIGEST_BYTES)?;
    let (message, digest) = body.split_at(split);
    if Md5::digest(message).as_slice() != digest {
        return None;
    }
    let aggregated = AggregatedRecord::decode(message).ok()?;
    let keys = &aggregated.partition_key_table;
    aggregated
        .records
        .into_iter()
        .map(|r| {
            let key = keys.get(usize::try_from(r.partition_key_index).ok()?)?;
            Some((key.clone(), r.data))
        })
        .collect()
}

/// Each `(key, data)` expanded into its user records; `origin[i]` is the
/// index of the put record that user record `i` came from.
pub fn expand(records: Vec<(String, Vec<u8>)>) -> (Vec<(String, Vec<u8>)>, Vec<usize>) {
    let mut out = Vec::with_capacity(records.len());
    let mut origin = Vec::with_capacity(records.len());
    for (i, (key, data)) in records.into_iter().enumerate() {
        match deaggregate(&data) {
            Some(users) if !users.is_empty() => {
                origin.extend(std::iter::repeat_n(i, users.len()));
                out.extend(users);
            }
            _ => {
                origin.push(i);
                out.push((key, data));
            }
        }
    }
    (out, origin)
}

/// One result per put record from the results of its user records: the
/// first failure among them, else where the first was stored (what a KPL
/// producer reads back for the aggregated record it sent).
pub fn fold(results: Vec<RecordResult>, origin: &[usize], puts: usize) -> Vec<RecordResult> {
    let mut out: Vec<Option<RecordResult>> = vec![None; puts];
    for (result, &i) in results.into_iter().zip(origin) {
        let Some(slot) = out.get_mut(i) else {
            continue;
        };
        let replace = matches!(
            (&*slot, &result),
            (None, _)
                | (
                    Some(RecordResult::Stored { .. }),
                    RecordResult::Failed { .. }
                )
        );
        if replace {
            *slot = Some(result);
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| RecordResult::Failed {
                kind: ErrorKind::Internal,
                error_code: "XX000".into(),
                error_message: "no result for this record".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregate(keys: &[&str], records: &[(u64, &[u8])]) -> Vec<u8> {
        let message = AggregatedRecord {
            partition_key_table: keys.iter().map(|k| k.to_string()).collect(),
            explicit_hash_key_table: Vec::new(),
            records: records
                .iter()
                .map(|(k, d)| Record {
                    partition_key_index: *k,
                    explicit_hash_key_index: None,
                    data: d.to_vec(),
                    tags: Vec::new(),
                })
                .collect(),
        }
        .encode_to_vec();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&message);
        out.extend_from_slice(&Md5::digest(&message));
        out
    }

    #[test]
    fn user_records_come_out_with_their_keys() {
        let agg = aggregate(&["a", "b"], &[(0, b"one"), (1, b"two"), (0, b"three")]);
        let users = deaggregate(&agg).unwrap();
        assert_eq!(
            users,
            vec![
                ("a".to_string(), b"one".to_vec()),
                ("b".to_string(), b"two".to_vec()),
                ("a".to_string(), b"three".to_vec()),
            ]
        );
        let (expanded, origin) = expand(vec![
            ("plain".into(), b"x".to_vec()),
            ("outer".into(), agg.clone()),
        ]);
        assert_eq!(expanded.len(), 4);
        assert_eq!(origin, vec![0, 1, 1, 1]);
    }

    #[test]
    fn anything_that_does_not_check_is_ordinary_data() {
        let agg = aggregate(&["a"], &[(0, b"one")]);
        let mut bad_digest = agg.clone();
        let last = bad_digest.len() - 1;
        bad_digest[last] ^= 1;
        assert!(deaggregate(&bad_digest).is_none());
        assert!(deaggregate(&agg[..10]).is_none(), "truncated");
        assert!(
            deaggregate(b"\xF3\x89\x9A").is_none(),
            "shorter than the magic"
        );
        assert!(deaggregate(b"{\"json\": 1}").is_none());
        let out_of_table = aggregate(&["a"], &[(3, b"one")]);
        assert!(
            deaggregate(&out_of_table).is_none(),
            "a key index past the table"
        );
        let (expanded, _) = expand(vec![("k".into(), bad_digest.clone())]);
        assert_eq!(expanded, vec![("k".to_string(), bad_digest)]);
    }
}
