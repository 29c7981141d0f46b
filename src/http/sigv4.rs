//! AWS Signature Version 4, verified the way AWS does it, so SDKs and the
//! CLI sign requests to sluice unchanged: the canonical request (method,
//! path, query, the signed headers, the body's SHA-256) is hashed into the
//! string to sign, and its HMAC under the key derived from the secret,
//! date, region and service must equal the signature sent. Requests more
//! than 15 minutes from the server's clock are refused as AWS does, which
//! bounds replays.

use axum::http::request::Parts;
use chrono::NaiveDateTime;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `X-Amz-Date` may be from the server's clock.
const MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq)]
pub struct Authorization<'a> {
    pub key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

/// Why a signature is refused; each becomes AWS's error type.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The header does not parse (`IncompleteSignatureException`).
    Malformed(String),
    /// Well formed, but not what the secret signs, or too old/new
    /// (`InvalidSignatureException`).
    Invalid(String),
}

impl<'a> Authorization<'a> {
    /// Parses `AWS4-HMAC-SHA256 Credential=id/date/region/service/aws4_request,
    /// SignedHeaders=a;b, Signature=hex`.
    pub fn parse(header: &'a str) -> Result<Authorization<'a>, Refusal> {
        let rest = header
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| Refusal::Malformed(format!("the algorithm must be {ALGORITHM}")))?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let missing = |what: &str| {
            Refusal::Malformed(format!(
                "Authorization header requires '{what}' parameter. Authorization={header}"
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(Refusal::Malformed(format!(
                "Credential should be scoped to a valid region and service, as \
                 <key>/<yyyymmdd>/<region>/<service>/aws4_request; got {credential:?}"
            )));
        };
        Ok(Authorization {
            key_id,
            date,
            region,
            service,
            signed_headers,
            signature,
        })
    }

    /// Checks the signature of a request whose body is `body`.
    pub fn verify(
        &self,
        parts: &Parts,
        body: &[u8],
        secret: &str,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let amz_date = header(parts, "x-amz-date")
            .ok_or_else(|| Refusal::Malformed("X-Amz-Date is required".into()))?;
        let signed_at = NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| {
                Refusal::Malformed(format!("X-Amz-Date {amz_date:?} is not yyyymmddThhmmssZ"))
            })?
            .and_utc()
            .timestamp_millis();
        if (signed_at - now_ms).abs() > MAX_SKEW_MS {
            return Err(Refusal::Invalid(format!(
                "Signature expired: {amz_date} is more than 15 minutes from the server's time"
            )));
        }
        if !amz_date.starts_with(self.date) {
            return Err(Refusal::Invalid(format!(
                "the credential's date {} is not the date of X-Amz-Date {amz_date}",
                self.date
            )));
        }
        let names: Vec<&str> = self.signed_headers.split(';').collect();
        if !names.contains(&"host") {
            return Err(Refusal::Invalid("the host header must be signed".into()));
        }
        let body_sha256 = to_hex(&Sha256::digest(body));
        if let Some(claimed) = header(parts, "x-amz-content-sha256") {
            if claimed != body_sha256 {
                return Err(Refusal::Invalid(
                    "X-Amz-Content-SHA256 is not the SHA-256 of the body (unsigned payloads are not accepted)"
                        .into(),
                ));
            }
        }
        let mut canonical = format!(
            "{}\n{}\n{}\n",
            parts.method.as_str(),
            canonical_path(parts.uri.path()),
            canonical_query(parts.uri.query().unwrap_or_default()),
        );
        for name in &names {
            let value = if *name == "host" {
                header(parts, "host").or_else(|| parts.uri.authority().map(|a| a.to_string()))
            } else {
                header(parts, name)
            }
            .unwrap_or_default();
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        canonical.push_str(&format!("\n{}\n{body_sha256}", self.signed_headers));
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            to_hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), self.date.as_bytes());
        for part in [self.region, self.service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let expected = to_hex(&hmac(&key, string_to_sign.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(self.signature.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::Invalid(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method."
                    .into(),
            ))
        }
    }
}

/// A header's values joined by commas, each trimmed with inner runs of
/// spaces collapsed (SigV4's canonical form).
fn header(parts: &Parts, name: &str) -> Option<String> {
    let values: Vec<String> = parts
        .headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The path as sent, URI-encoded once more (every service but S3 signs
/// the encoded path encoded again).
fn canonical_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The query's `name=value` pairs as sent, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (the `get-vanilla` request of the SigV4
    /// test suite): the same secret, date and request give its signature.
    #[test]
    fn the_aws_test_suite_vanilla_request_verifies() {
        let request = axum::http::Request::get("/")
            .header("host", "example.amazonaws.com")
            .header("x-amz-date", "20150830T123600Z")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let header =
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
            SignedHeaders=host;x-amz-date, \
            Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let auth = Authorization::parse(header).unwrap();
        assert_eq!(auth.key_id, "AKIDEXAMPLE");
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let at = NaiveDateTime::parse_from_str("20150830T123600Z", "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(auth.verify(&parts, b"", secret, at), Ok(()));
        assert!(matches!(
            auth.verify(&parts, b"", "another secret", at),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            auth.verify(&parts, b"", secret, at + MAX_SKEW_MS + 1000),
            Err(Refusal::Invalid(m)) if m.contains("expired")
        ));
        // A changed body no longer matches what was signed.
        assert!(auth.verify(&parts, b"x", secret, at).is_err());
    }

    #[test]
    fn malformed_headers_are_named() {
        assert!(matches!(
            Authorization::parse("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00"),
            Err(Refusal::Malformed(m)) if m.contains("scoped")
        ));
        assert!(matches!(
            Authorization::parse("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request"),
            Err(Refusal::Malformed(m)) if m.contains("SignedHeaders")
        ));
    }
}
