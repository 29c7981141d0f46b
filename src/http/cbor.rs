//! CBOR for the Kinesis API (`application/x-amz-cbor-1.1`, what the AWS
//! Java SDK sends by default): requests are turned into the same JSON
//! values the JSON 1.1 protocol uses (byte strings → base64, tagged
//! timestamps → numbers), and answers back (`Data` → byte strings,
//! `*Timestamp` → tag 1 epoch seconds).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ciborium::Value as Cbor;
use serde_json::Value as Json;

pub const CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

pub fn decode(body: &[u8]) -> Result<Json, String> {
    let value: Cbor = ciborium::de::from_reader(body).map_err(|e| e.to_string())?;
    Ok(to_json(value))
}

fn to_json(value: Cbor) -> Json {
    match value {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Integer(i) => {
            let i: i128 = i.into();
            i64::try_from(i).map_or_else(|_| Json::from(i as f64), Json::from)
        }
        Cbor::Float(f) => Json::from(f),
        Cbor::Text(s) => Json::String(s),
        Cbor::Bytes(b) => Json::String(B64.encode(b)),
        Cbor::Tag(_, inner) => to_json(*inner),
        Cbor::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Cbor::Map(entries) => Json::Object(
            entries
                .into_iter()
                .filter_map(|(k, v)| match k {
                    Cbor::Text(k) => Some((k, to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        _ => Json::Null,
    }
}

pub fn encode(value: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&from_json(None, value), &mut out);
    out
}

fn from_json(key: Option<&str>, value: &Json) -> Cbor {
    match value {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(*b),
        Json::Number(n) if key.is_some_and(|k| k.ends_with("Timestamp")) => {
            Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or_default())))
        }
        Json::Number(n) => match n.as_i64() {
            Some(i) => Cbor::Integer(i.into()),
            None => Cbor::Float(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) if key == Some("Data") => Cbor::Bytes(B64.decode(s).unwrap_or_default()),
        Json::String(s) => Cbor::Text(s.clone()),
        Json::Array(items) => Cbor::Array(items.iter().map(|v| from_json(key, v)).collect()),
        Json::Object(map) => Cbor::Map(
            map.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), from_json(Some(k), v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_timestamps_round_trip() {
        let request = Cbor::Map(vec![
            (Cbor::Text("StreamName".into()), Cbor::Text("s".into())),
            (Cbor::Text("Data".into()), Cbor::Bytes(vec![0, 159, 1])),
            (
                Cbor::Text("Timestamp".into()),
                Cbor::Tag(1, Box::new(Cbor::Float(1.5))),
            ),
        ]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&request, &mut bytes).unwrap();
        let json = decode(&bytes).unwrap();
        assert_eq!(json["Data"], "AJ8B");
        assert_eq!(json["Timestamp"], 1.5);
        let back: Cbor = ciborium::de::from_reader(encode(&json).as_slice()).unwrap();
        let map = back.as_map().unwrap();
        assert!(map
            .iter()
            .any(|(k, v)| k.as_text() == Some("Data") && v.as_bytes() == Some(&vec![0, 159, 1])));
        assert!(map
            .iter()
            .any(|(k, v)| k.as_text() == Some("Timestamp") && matches!(v, Cbor::Tag(1, _))));
    }
}
