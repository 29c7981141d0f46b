//! Splitting one COPY record into fields, into a reused buffer: unescaped
//! bytes plus a span per field (`None` for NULL), so decoding a row does not
//! allocate.

use crate::error::{Error, Result};
use crate::types::SqlType;

#[derive(Debug, Default)]
pub struct Fields {
    pub bytes: Vec<u8>,
    pub spans: Vec<Option<(usize, usize)>>,
}

impl Fields {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

/// Text format: `delimiter`-separated, backslash escapes, `null` marks NULL
/// (compared before unescaping, as Postgres does).
pub fn text_fields(record: &[u8], delimiter: u8, null: &[u8], out: &mut Fields) {
    let mut start = 0;
    let mut i = 0;
    loop {
        if i < record.len() && record[i] == b'\\' {
            i += 2;
            continue;
        }
        if i >= record.len() || record[i] == delimiter {
            let raw = &record[start..i.min(record.len())];
            if raw == null {
                out.spans.push(None);
            } else {
                let from = out.bytes.len();
                unescape_text(raw, &mut out.bytes);
                out.spans.push(Some((from, out.bytes.len())));
            }
            if i >= record.len() {
                return;
            }
            start = i + 1;
        }
        i += 1;
    }
}

fn unescape_text(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            out.push(match raw[i + 1] {
                b't' => b'\t',
                b'n' => b'\n',
                b'r' => b'\r',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}

/// CSV: quoted fields may hold delimiters, quotes (escaped) and newlines;
/// an unquoted field equal to `null` is NULL, a quoted one never is (unless
/// its column is in FORCE_NULL).
pub fn csv_fields(
    record: &[u8],
    (delimiter, quote, escape): (u8, u8, u8),
    null: &[u8],
    force_null: &[bool],
    out: &mut Fields,
) -> Result<()> {
    let mut i = 0;
    loop {
        let index = out.spans.len();
        let from = out.bytes.len();
        if record.get(i) == Some(&quote) {
            i += 1;
            loop {
                match record.get(i) {
                    None => {
                        return Err(Error::BadCopyFormat("unterminated CSV quoted field".into()))
                    }
                    Some(&b)
                        if b == escape
                            && matches!(record.get(i + 1), Some(&n) if n == quote || n == escape) =>
                    {
                        out.bytes.push(record[i + 1]);
                        i += 2;
                    }
                    Some(&b) if b == quote => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        out.bytes.push(b);
                        i += 1;
                    }
                }
            }
            let forced =
                force_null.get(index).copied().unwrap_or(false) && &out.bytes[from..] == null;
            out.spans.push((!forced).then_some((from, out.bytes.len())));
            match record.get(i) {
                None => return Ok(()),
                Some(&b) if b == delimiter => i += 1,
                Some(_) => {
                    return Err(Error::BadCopyFormat(
                        "unexpected character after a closing CSV quote".into(),
                    ))
                }
            }
        } else {
            let end = record[i..]
                .iter()
                .position(|&b| b == delimiter)
                .map_or(record.len(), |p| i + p);
            let raw = &record[i..end];
            if raw == null {
                out.spans.push(None);
            } else {
                out.bytes.extend_from_slice(raw);
                out.spans.push(Some((from, out.bytes.len())));
            }
            if end == record.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(f: &Fields) -> Vec<Option<String>> {
        f.spans
            .iter()
            .map(|s| s.map(|(a, b)| String::from_utf8(f.bytes[a..b].to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn text_escapes_and_nulls() {
        let mut f = Fields::default();
        text_fields(b"a\\tb\t\\N\t\tx\\\\y", b'\t', b"\\N", &mut f);
        assert_eq!(
            values(&f),
            vec![
                Some("a\tb".into()),
                None,
                Some(String::new()),
                Some("x\\y".into())
            ]
        );
    }

    #[test]
    fn csv_quotes_nulls_and_errors() {
        let mut f = Fields::default();
        csv_fields(
            b"1,,\"\",\"a,\"\"b\"\"\nc\",NA",
            (b',', b'"', b'"'),
            b"",
            &[],
            &mut f,
        )
        .unwrap();
        assert_eq!(
            values(&f),
            vec![
                Some("1".into()),
                None,
                Some(String::new()),
                Some("a,\"b\"\nc".into()),
                Some("NA".into())
            ]
        );
        f.clear();
        csv_fields(
            b"\"NA\",NA",
            (b',', b'"', b'"'),
            b"NA",
            &[true, false],
            &mut f,
        )
        .unwrap();
        assert_eq!(
            values(&f),
            vec![None, None],
            "FORCE_NULL and the NULL string"
        );
        f.clear();
        assert!(csv_fields(b"\"open", (b',', b'"', b'"'), b"", &[], &mut f).is_err());
        f.clear();
        assert!(csv_fields(b"\"a\"b", (b',', b'"', b'"'), b"", &[], &mut f).is_err());
    }
}

/// Postgres's binary COPY signature, flags and header extension length.
pub const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// One step of reading binary COPY data.
pub enum BinaryTuple {
    /// More bytes are needed.
    Incomplete,
    /// The trailer (-1 field count): the data ends.
    Trailer,
    /// A tuple of this many bytes was read into the fields.
    Row(usize),
}

/// Reads the binary header; `Ok(None)` while incomplete, else its length.
pub fn binary_header(data: &[u8]) -> Result<Option<usize>> {
    if data.len() < BINARY_SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &data[..BINARY_SIGNATURE.len()] != BINARY_SIGNATURE {
        return Err(Error::BadCopyFormat(
            "COPY file signature not recognized".into(),
        ));
    }
    let at = BINARY_SIGNATURE.len() + 4;
    let ext = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
    let total = at + 4 + ext;
    Ok((data.len() >= total).then_some(total))
}

/// Reads one binary tuple, converting each field of the column's type to
/// the text the rest of ingest converts from.
pub fn binary_tuple(data: &[u8], types: &[SqlType], out: &mut Fields) -> Result<BinaryTuple> {
    let Some(count) = data.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return Ok(BinaryTuple::Incomplete);
    };
    if count == -1 {
        return Ok(BinaryTuple::Trailer);
    }
    if count as usize != types.len() {
        return Err(Error::BadCopyFormat(format!(
            "row field count is {count}, expected {}",
            types.len()
        )));
    }
    let mut at = 2;
    for sql_type in types {
        let Some(len) = data
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return Ok(BinaryTuple::Incomplete);
        };
        at += 4;
        if len < 0 {
            out.spans.push(None);
            continue;
        }
        let Some(value) = data.get(at..at + len as usize) else {
            return Ok(BinaryTuple::Incomplete);
        };
        at += len as usize;
        let from = out.bytes.len();
        binary_to_text(value, *sql_type, &mut out.bytes)?;
        out.spans.push(Some((from, out.bytes.len())));
    }
    Ok(BinaryTuple::Row(at))
}

/// Microseconds between 1970-01-01 and Postgres's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn binary_to_text(v: &[u8], sql_type: SqlType, out: &mut Vec<u8>) -> Result<()> {
    use std::io::Write;
    let bad = || {
        Error::BadCopyFormat(format!(
            "a {} field of {} bytes is malformed",
            sql_type.pg_name(),
            v.len()
        ))
    };
    let fixed = |n: usize| -> Result<&[u8]> { (v.len() == n).then_some(v).ok_or_else(bad) };
    let text = match sql_type {
        SqlType::Text => {
            out.extend_from_slice(v);
            return Ok(());
        }
        // As bytea's text form (`\x` hex), so any bytes pass the text
        // stage that every ingest path shares.
        SqlType::Bytea => {
            out.extend_from_slice(b"\\x");
            for byte in v {
                write!(out, "{byte:02x}").map_err(|_| bad())?;
            }
            return Ok(());
        }
        SqlType::Boolean => (fixed(1)?[0] != 0).to_string(),
        SqlType::SmallInt => {
            i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| bad())?).to_string()
        }
        SqlType::Integer => {
            i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?).to_string()
        }
        SqlType::BigInt => i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?).to_string(),
        SqlType::Real => f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?).to_string(),
        SqlType::Double => f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?).to_string(),
        SqlType::Date => {
            let days = i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as i64;
            let (y, m, d) = crate::types::civil_from_days(days + 10_957);
            format!("{y:04}-{m:02}-{d:02}")
        }
        SqlType::Timestamp | SqlType::TimestampTz => {
            let micros = i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?);
            super::json::micros_to_iso(micros + PG_EPOCH_MICROS)
        }
        SqlType::Numeric { .. } => numeric_text(v).ok_or_else(bad)?,
    };
    out.write_all(text.as_bytes()).map_err(|_| bad())
}

/// Postgres's binary NUMERIC (base-10000 digits) as decimal text.
fn numeric_text(v: &[u8]) -> Option<String> {
    let word = |i: usize| v.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (
        word(0)? as usize,
        word(2)? as i16 as i32,
        word(4)?,
        word(6)? as usize,
    );
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let digit = |i: i32| {
        if i >= 0 {
            digits.get(i as usize).copied().unwrap_or(0)
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        s.push_str(&digit(0).to_string());
        for i in 1..=weight {
            s.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod binary_tests {
    use super::*;

    #[test]
    fn numeric_and_time_fields() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let mut v = Vec::new();
        for w in [3u16, 1, 0, 3, 1, 2345, 6780] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_text(&v).unwrap(), "12345.678");
        // -0.0012: weight -1, digits [12], dscale 4.
        let mut v = Vec::new();
        for w in [1u16, 0xffff, 0x4000, 4, 12] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_text(&v).unwrap(), "-0.0012");
        let mut out = Vec::new();
        binary_to_text(&0i64.to_be_bytes(), SqlType::Timestamp, &mut out).unwrap();
        assert_eq!(out, b"2000-01-01T00:00:00.000000");
        out.clear();
        binary_to_text(&366i32.to_be_bytes(), SqlType::Date, &mut out).unwrap();
        assert_eq!(out, b"2001-01-01");
        assert!(binary_to_text(&[1, 2], SqlType::Integer, &mut out).is_err());
    }
}
