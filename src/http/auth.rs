//! Who may call the HTTP API. Without `[auth]` the server is loopback-only
//! and a request must also *name* a loopback host, and come from no other
//! web origin, so a web page cannot reach it through DNS rebinding or a
//! cross-site form. With `[auth]`, every route but `/health` (and
//! `/metrics` if `public_metrics`) needs an access key from
//! `[[auth.access_keys]]`: an AWS SigV4 signature (SDKs, the CLI) or
//! `Authorization: Bearer <secret>` (curl). The key's role then limits
//! the request as a pgwire session of that role is limited: readers
//! list and read, writers also put records, admins also create and delete
//! streams. Refusals speak the client's protocol: AWS error types on the
//! Kinesis API (which SDKs report instead of retrying), 401/403 with a
//! SQLSTATE on `/v1`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use subtle::ConstantTimeEq;

use super::sigv4::{Authorization, Refusal, ALGORITHM};
use crate::catalog::RoleGroup;
use crate::clock::now_ms;
use crate::config::{read_secret_file, AuthConfig};
use crate::engine::Engine;
use crate::error::Result;

/// The superuser role; a key with it may do everything.
const SUPERUSER: &str = "sluice";

/// The configured keys with their secrets (read once at start).
pub struct AccessKeys {
    keys: Vec<AccessKey>,
}

struct AccessKey {
    id: String,
    secret: String,
    role: String,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("AccessKeys").field("ids", &ids).finish()
    }
}

impl AccessKeys {
    /// Reads every key's secret file (each must be private to its owner).
    pub fn load(auth: &AuthConfig) -> Result<AccessKeys> {
        let keys = auth
            .access_keys
            .iter()
            .map(|k| {
                Ok(AccessKey {
                    id: k.id.clone(),
                    secret: read_secret_file(
                        &k.secret_file,
                        &format!("secret file of key {}", k.id),
                    )?,
                    role: k.role.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AccessKeys { keys })
    }

    fn by_id(&self, id: &str) -> Option<&AccessKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The key whose secret this is, compared in constant time.
    fn by_secret(&self, secret: &str) -> Option<&AccessKey> {
        self.keys
            .iter()
            .find(|k| bool::from(k.secret.as_bytes().ct_eq(secret.as_bytes())))
    }
}

/// What the middleware needs, shared by every request.
pub(super) struct Gate {
    pub keys: AccessKeys,
    pub engine: Arc<Engine>,
}

/// Why a request is refused, before or after knowing who sent it.
enum Denial {
    /// No credentials at all.
    Missing,
    /// An `Authorization` header that does not parse.
    Malformed(String),
    /// A key id or bearer secret no key has.
    UnknownKey,
    /// A signature that does not verify (or has expired).
    BadSignature(String),
    /// Authenticated, but the key's role may not do this.
    NotAllowed(String),
    /// Unauthenticated mode, non-loopback host or foreign origin.
    NotLoopback(String),
}

pub(super) async fn authenticate(
    State(gate): State<Arc<Gate>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" {
        return next.run(request).await;
    }
    let kinesis = path == "/";
    let auth = &gate.engine.config.auth;
    if !auth.enabled() {
        return match loopback_only(&request) {
            Ok(()) => next.run(request).await,
            Err(why) => refuse(kinesis, request.headers(), Denial::NotLoopback(why)),
        };
    }
    if path == "/metrics" && auth.public_metrics {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let credentials = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (key, body) = match credentials.as_deref() {
        None => return refuse(kinesis, &parts.headers, Denial::Missing),
        Some(value) if value.starts_with("Bearer ") => {
            let secret = value["Bearer ".len()..].trim();
            match gate.keys.by_secret(secret) {
                Some(key) => (key, body),
                None => return refuse(kinesis, &parts.headers, Denial::UnknownKey),
            }
        }
        Some(value) if value.starts_with(ALGORITHM) => {
            let limit = gate.engine.config.limits.max_request_bytes as usize;
            let bytes = match axum::body::to_bytes(body, limit).await {
                Ok(b) => b,
                Err(e) => return body_error(e),
            };
            match verify(&gate.keys, &parts, value, &bytes) {
                Ok(key) => (key, axum::body::Body::from(bytes)),
                Err(denial) => return refuse(kinesis, &parts.headers, denial),
            }
        }
        Some(_) => {
            let denial = Denial::Malformed(format!(
                "the Authorization header must be \"Bearer <secret>\" or an {ALGORITHM} signature"
            ));
            return refuse(kinesis, &parts.headers, denial);
        }
    };
    let request = Request::from_parts(parts, body);
    if let Err(denial) = allowed(&gate.engine, key, &request) {
        return refuse(kinesis, request.headers(), denial);
    }
    next.run(request).await
}

fn verify<'k>(
    keys: &'k AccessKeys,
    parts: &Parts,
    header: &str,
    body: &[u8],
) -> std::result::Result<&'k AccessKey, Denial> {
    let signed = Authorization::parse(header).map_err(|r| match r {
        Refusal::Malformed(m) | Refusal::Invalid(m) => Denial::Malformed(m),
    })?;
    let key = keys.by_id(signed.key_id).ok_or(Denial::UnknownKey)?;
    signed
        .verify(parts, body, &key.secret, now_ms())
        .map_err(|r| match r {
            Refusal::Malformed(m) => Denial::Malformed(m),
            Refusal::Invalid(m) => Denial::BadSignature(m),
        })?;
    Ok(key)
}

/// Whether the key's role may make this request.
fn allowed(engine: &Engine, key: &AccessKey, request: &Request) -> std::result::Result<(), Denial> {
    if key.role == SUPERUSER {
        return Ok(());
    }
    let path = request.uri().path();
    let (needed, action) = if path.starts_with("/v1/") {
        (RoleGroup::Writer, format!("write records ({path})"))
    } else if path == "/" {
        let target = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let action = target.rsplit('.').next().unwrap_or_default();
        let needed = match action {
            "PutRecord" | "PutRecords" | "PutRecordBatch" => RoleGroup::Writer,
            "CreateStream" | "DeleteStream" => RoleGroup::Admin,
            _ => RoleGroup::Reader,
        };
        (needed, format!("call {action}"))
    } else {
        (RoleGroup::Reader, format!("read {path}"))
    };
    let group = match RoleGroup::from_name(&key.role) {
        Some(group) => Some(group),
        None => engine
            .role_group(&key.role)
            .map_err(|e| Denial::NotAllowed(e.to_string()))?,
    };
    if group.is_some_and(|g| g >= needed) {
        return Ok(());
    }
    let has = group.map_or("no such role".to_string(), |g| g.name().to_string());
    Err(Denial::NotAllowed(format!(
        "access key {} (role \"{}\", {has}) may not {action}; that needs {}",
        key.id,
        key.role,
        needed.name()
    )))
}

/// Without authentication, a request must name a loopback host and come
/// from no foreign web origin.
fn loopback_only(request: &Request) -> std::result::Result<(), String> {
    let host = request
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host {
        if !is_loopback_host(strip_port(&host)) {
            return Err(format!(
                "Host {host:?} is not a loopback name; this server has no [auth] and answers only \
                 requests to localhost/127.0.0.1/[::1]"
            ));
        }
    }
    if let Some(origin) = request.headers().get("origin") {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let host = url::Url::parse(&origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        if !host.is_some_and(|h| is_loopback_host(&h)) {
            return Err(format!(
                "requests from web origin {origin:?} are refused; this server has no [auth]"
            ));
        }
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn body_error(e: axum::Error) -> Response {
    let too_large = std::error::Error::source(&e)
        .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        || e.to_string().contains("length limit");
    let (status, code, message) = if too_large {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "54000",
            "request body larger than limits.max_request_bytes".to_string(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "08P01",
            format!("could not read the request body: {e}"),
        )
    };
    (
        status,
        Json(serde_json::json!({ "error_code": code, "error_message": message })),
    )
        .into_response()
}

/// The refusal in the client's protocol.
fn refuse(kinesis: bool, headers: &HeaderMap, denial: Denial) -> Response {
    if kinesis {
        let (status, kind, message) = match denial {
            Denial::Missing => (
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token: sign the request (SigV4) with a key from [[auth.access_keys]]".into(),
            ),
            Denial::Malformed(m) => (StatusCode::BAD_REQUEST, "IncompleteSignatureException", m),
            Denial::UnknownKey => (
                StatusCode::BAD_REQUEST,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
            ),
            Denial::BadSignature(m) => (StatusCode::BAD_REQUEST, "InvalidSignatureException", m),
            Denial::NotAllowed(m) => (StatusCode::BAD_REQUEST, "AccessDeniedException", m),
            Denial::NotLoopback(m) => (StatusCode::FORBIDDEN, "AccessDeniedException", m),
        };
        return super::kinesis::refusal(headers, status, kind, &message);
    }
    let (status, code, message) = match denial {
        Denial::Missing => (
            StatusCode::UNAUTHORIZED,
            "28000",
            "authentication required: send Authorization: Bearer <secret> or an AWS SigV4 signature".into(),
        ),
        Denial::Malformed(m) => (StatusCode::UNAUTHORIZED, "28000", m),
        Denial::UnknownKey => (
            StatusCode::UNAUTHORIZED,
            "28P01",
            "the access key or bearer secret is not valid".into(),
        ),
        Denial::BadSignature(m) => (StatusCode::UNAUTHORIZED, "28P01", m),
        Denial::NotAllowed(m) => (StatusCode::FORBIDDEN, "42501", m),
        Denial::NotLoopback(m) => (StatusCode::FORBIDDEN, "42501", m),
    };
    let mut response = (
        status,
        Json(serde_json::json!({ "error_code": code, "error_message": message })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart_from_others() {
        for host in [
            "localhost:8433",
            "127.0.0.1:1",
            "[::1]:8433",
            "LOCALHOST",
            "a.localhost",
        ] {
            assert!(is_loopback_host(strip_port(host)), "{host}");
        }
        for host in [
            "evil.example:8433",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(strip_port(host)), "{host}");
        }
    }
}
