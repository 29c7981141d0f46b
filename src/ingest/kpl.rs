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
use crate::error::{Error, ErrorKind, Result};

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
    let aggregated = AggregatedRecord::decode(checked_message(data)?).ok()?;
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

/// The protobuf message of an aggregated record whose magic and MD5 check.
fn checked_message(data: &[u8]) -> Option<&[u8]> {
    let body = data.strip_prefix(&MAGIC)?;
    let split = body.len().checked_sub(DIGEST_BYTES)?;
    let (message, digest) = body.split_at(split);
    (Md5::digest(message).as_slice() == digest).then_some(message)
}

/// How many user records an aggregated record's message holds, counted
/// on the wire without decoding (so a hostile record is refused before
/// it allocates one object per record); `None` if it does not parse.
fn count_user_records(mut message: &[u8]) -> Option<usize> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let mut count = 0usize;
    while !message.is_empty() {
        let (tag, wire_type) = decode_key(&mut message).ok()?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut message).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut message).ok()?).ok()?,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        message = message.get(skip..)?;
        count += usize::from(tag == 3);
    }
    Some(count)
}

/// Put records as `(partition key, data)`.
pub type Puts = Vec<(String, Vec<u8>)>;

/// Each `(key, data)` expanded into its user records; `origin[i]` is the
/// index of the put record that user record `i` came from. The request's
/// limits hold for what it becomes, not for what it looked like: more
/// than `max_records` user records, or user records whose keys and data
/// add up to more than `max_bytes` (a key is repeated for every record
/// that names it), refuse the request with 54000.
pub fn expand(records: Puts, max_records: usize, max_bytes: usize) -> Result<(Puts, Vec<usize>)> {
    let over = |what: String| {
        Err(Error::ProgramLimit(format!(
            "the request holds {what} once its aggregated (KPL) records are taken apart; split it"
        )))
    };
    let mut total_records = 0usize;
    for (_, data) in &records {
        let users = checked_message(data)
            .and_then(count_user_records)
            .filter(|&n| n > 0)
            .unwrap_or(1);
        total_records = total_records.saturating_add(users);
        if total_records > max_records {
            return over(format!(
                "more than {max_records} records (limits.max_request_records)"
            ));
        }
    }
    let mut out = Vec::with_capacity(total_records);
    let mut origin = Vec::with_capacity(total_records);
    let mut total_bytes = 0usize;
    for (i, (key, data)) in records.into_iter().enumerate() {
        let users = match deaggregate(&data) {
            Some(users) if !users.is_empty() => users,
            _ => vec![(key, data)],
        };
        total_bytes = users.iter().fold(total_bytes, |sum, (key, data)| {
            sum.saturating_add(key.len() + data.len())
        });
        if total_bytes > max_bytes {
            return over(format!(
                "more than {max_bytes} bytes of keys and data (limits.max_request_bytes)"
            ));
        }
        origin.extend(std::iter::repeat_n(i, users.len()));
        out.extend(users);
    }
    Ok((out, origin))
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
        let (expanded, origin) = expand(
            vec![
                ("plain".into(), b"x".to_vec()),
                ("outer".into(), agg.clone()),
            ],
            4,
            1 << 20,
        )
        .unwrap();
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
        let (expanded, _) = expand(vec![("k".into(), bad_digest.clone())], 1, 1 << 20).unwrap();
        assert_eq!(expanded, vec![("k".to_string(), bad_digest)]);
    }

    /// One small aggregated record cannot become more records, or more
    /// bytes, than the request may hold (130,000 user records from 1 MB).
    #[test]
    fn amplification_is_bounded_before_decoding() {
        let key = "k".repeat(200);
        let records: Vec<(u64, &[u8])> = vec![(0, b"x"); 130_000];
        let agg = aggregate(&[&key], &records);
        assert!(agg.len() < 1 << 20);
        assert_eq!(
            count_user_records(checked_message(&agg).unwrap()),
            Some(130_000)
        );
        let err = expand(vec![("p".into(), agg.clone())], 100_000, 16 << 20).unwrap_err();
        assert_eq!(err.sqlstate(), "54000");
        assert!(
            err.to_string().contains("more than 100000 records"),
            "{err}"
        );
        // Within the count, the repeated 200-byte key passes the bytes.
        let err = expand(vec![("p".into(), agg)], 200_000, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("bytes of keys and data"), "{err}");
        // Two ordinary records over a limit of one.
        let plain = vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())];
        assert!(expand(plain, 1, 1 << 20).is_err());
    }
}
