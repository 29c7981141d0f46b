//! Splitting one COPY record into fields, into a reused buffer: unescaped
//! bytes plus a span per field (`None` for NULL), so decoding a row does not
//! allocate.

use crate::error::{Error, Result};

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
