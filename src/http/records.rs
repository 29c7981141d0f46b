//! `POST /v1/streams/{name}/records`: NDJSON or a JSON array, answered per
//! record like Kinesis PutRecords.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error_response;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::ingest::{JsonBody, Writer};

pub async fn put_records(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let writer = match Writer::open(
        &engine.registry.streams,
        &name,
        engine.config.limits.max_statement_bytes,
    ) {
        Ok(w) => w,
        Err(e) => return error_response(&e),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let kind = match content_type.as_str() {
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/x-jsonlines" => JsonBody::Lines,
        "application/json" => JsonBody::Document,
        other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(serde_json::json!({
                    "error_code": ErrorKind::FeatureNotSupported.sqlstate(),
                    "error_message": format!(
                        "content type {:?} is not accepted; send application/x-ndjson (one JSON object per line) or application/json (an array of objects)",
                        other
                    ),
                })),
            )
                .into_response();
        }
    };
    let limit = engine.config.limits.max_request_bytes;
    let bytes = match axum::body::to_bytes(body, limit as usize).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&Error::ProgramLimit(format!(
            "request body exceeds the limit of {limit} bytes (limits.max_request_bytes); split it"
        )))
        }
    };
    let max_records = engine.config.limits.max_request_records;
    match writer.json(&bytes, kind, max_records).await {
        Ok(report) => {
            let stored = (report.records.len() - report.failed) as u64;
            metrics::counter!("sluice_ingest_records_total", "stream" => name.clone(), "path" => "http")
                .increment(stored);
            metrics::counter!("sluice_ingest_failed_records_total", "stream" => name, "path" => "http")
                .increment(report.failed as u64);
            (StatusCode::OK, Json(report)).into_response()
        }
        Err(e) => error_response(&e),
    }
}
