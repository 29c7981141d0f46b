//! The HTTP front end (axum): record ingestion (`records`), the
//! Kinesis-compatible API (`kinesis`), health and Prometheus metrics.

mod auth;
mod cbor;
mod kinesis;
mod records;
mod sigv4;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::tls::Certificates;

pub use auth::AccessKeys;

/// What the HTTP port asks of clients: keys (with `[auth]`) and TLS.
pub struct Security {
    pub access_keys: AccessKeys,
    pub tls: Option<Arc<Certificates>>,
}

/// The process-wide Prometheus recorder (a recorder can be installed once
/// per process; several servers in one process share it).
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

pub fn router(engine: Arc<Engine>, access_keys: AccessKeys) -> Router {
    let _ = prometheus();
    let gate = Arc::new(auth::Gate {
        keys: access_keys,
        engine: engine.clone(),
    });
    let ingest_slots = Arc::new(Semaphore::new(
        engine.config.limits.http_ingest_concurrency.max(1),
    ));
    let ingest = Router::new()
        .route("/v1/streams/{name}/records", post(records::put_records))
        .route("/", post(kinesis::handle))
        // Authenticated inside the concurrency bound: a signature check
        // reads the body, and bodies in memory are what the bound limits.
        .layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            ingest_slots,
            limit_ingest,
        ));
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                gate,
                auth::authenticate,
            ));
    Router::new()
        .route("/health", get(health))
        .merge(metrics)
        .merge(ingest)
        .layer(axum::extract::DefaultBodyLimit::max(
            engine.config.limits.max_request_bytes as usize,
        ))
        .with_state(engine)
}

/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long requests in flight may finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Accept errors (out of file descriptors, say) are retried after a delay
/// doubling up to this, instead of spinning.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 and HTTP/2 (HTTPS with `[tls]`) until `shutdown`: at
/// most `http_max_connections` connections (more are answered 503 and
/// closed), each bounded in time for its TLS handshake, headers, bodies
/// and idleness.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: Security,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(
        engine.config.limits.http_max_connections.max(1),
    ));
    let header_timeout = Duration::from_millis(engine.config.limits.http_header_timeout_ms.max(1));
    let app = router(engine, security.access_keys).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT),
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(1);
    loop {
        let socket = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    backoff = Duration::from_millis(1);
                    socket
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "HTTP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(socket, BUSY));
            continue;
        };
        let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
        let tls = security.tls.clone();
        tokio::spawn(async move {
            if let Some(io) = secure(socket, tls.as_deref(), header_timeout).await {
                let service = TowerToHyperService::new(app);
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period");
    }
}

/// A connection's byte stream, plaintext or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// With `[tls]`, a connection whose first byte opens a TLS handshake is
/// served HTTPS; a plaintext one is served as is, or refused with 400 if
/// TLS is required. `None`: the connection is over.
async fn secure(
    socket: tokio::net::TcpStream,
    tls: Option<&Certificates>,
    timeout: Duration,
) -> Option<Box<dyn Io>> {
    /// The content type of a TLS handshake record.
    const TLS_HANDSHAKE: u8 = 0x16;
    let Some(tls) = tls else {
        return Some(Box::new(socket));
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, socket.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] == TLS_HANDSHAKE {
        match tokio::time::timeout(timeout, tls.http().accept(socket)).await {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    } else if tls.required() {
        refuse(socket, PLAINTEXT_REFUSED).await;
        None
    } else {
        Some(Box::new(socket))
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Type: application/json\r\nConnection: close\r\nContent-Length: 41\r\n\r\n\
    {\"message\":\"too many connections; retry\"}";
const PLAINTEXT_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    Content-Type: application/json\r\nConnection: close\r\nContent-Length: 81\r\n\r\n\
    {\"error_code\":\"28000\",\"error_message\":\"this server requires HTTPS (tls.require)\"}";

/// Answers a connection that will not be served (`answer`), then closes.
async fn refuse(mut socket: tokio::net::TcpStream, answer: &'static [u8]) {
    // The request head is read first: closing a socket with unread input
    // resets it, and the client could lose the answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while head.len() < 16 * 1024 && memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = socket.write_all(answer).await;
        let _ = socket.shutdown().await;
        // Drain what else arrives until the client closes.
        while matches!(socket.read(&mut chunk).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Bounds the ingest requests in flight (each holds its body and the
/// records decoded from it): past `http_ingest_concurrency` a request is
/// refused at once with Retry-After, in the protocol its client speaks.
async fn limit_ingest(
    State(slots): State<Arc<Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Ok(_permit) = slots.try_acquire() else {
        let message = "too many ingest requests at once (limits.http_ingest_concurrency); retry";
        let mut response = if request.uri().path() == "/" {
            // AWS SDKs back off and retry on this throttling error.
            (
                StatusCode::BAD_REQUEST,
                [("x-amzn-ErrorType", "ProvisionedThroughputExceededException")],
                Json(serde_json::json!({
                    "__type": "ProvisionedThroughputExceededException",
                    "message": message,
                })),
            )
                .into_response()
        } else {
            (
                StatusCode::TOO_MANY_REQUESTS,
                Json(serde_json::json!({
                    "error_code": ErrorKind::TooManyConnections.sqlstate(),
                    "error_message": message,
                })),
            )
                .into_response()
        };
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

async fn health(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "streams": engine.registry.list().len(),
    }))
}

/// Log gauges are read from live state at scrape time, so they are never
/// stale; counters are recorded where events happen.
async fn metrics(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let dead_letters = engine.registry.dead_letter_counts();
    for stream in engine.registry.list() {
        let name = stream.def.name.clone();
        let dead = dead_letters.get(&name).copied().unwrap_or(0);
        metrics::gauge!("sluice_stream_dead_letters", "stream" => name.clone()).set(dead as f64);
        for (shard, stats) in stream.log.shard_stats().into_iter().enumerate() {
            let labels = [("stream", name.clone()), ("shard", shard.to_string())];
            metrics::gauge!("sluice_stream_records", &labels).set(stats.records as f64);
            metrics::gauge!("sluice_stream_bytes", &labels).set(stats.bytes as f64);
            metrics::gauge!("sluice_stream_next_sequence", &labels).set(stats.next_seq as f64);
            metrics::gauge!("sluice_stream_index_bytes", &labels).set(stats.index_bytes as f64);
        }
    }
    for pipeline in engine.registry.pipelines() {
        let labels = [("pipeline", pipeline.name.clone())];
        metrics::gauge!("sluice_pipeline_lag_records", &labels).set(pipeline.lag_records() as f64);
        metrics::gauge!("sluice_pipeline_processed_records", &labels)
            .set(pipeline.stats.processed.load(Ordering::Relaxed) as f64);
        metrics::gauge!("sluice_pipeline_failed_records", &labels)
            .set(pipeline.stats.errors.load(Ordering::Relaxed) as f64);
    }
    for sink in engine.registry.sinks() {
        let labels = [("sink", sink.name().to_string())];
        let files = sink.core.files();
        metrics::gauge!("sluice_sink_lag_records", &labels).set(sink.lag_records() as f64);
        metrics::gauge!("sluice_sink_files", &labels).set(files.len() as f64);
        metrics::gauge!("sluice_sink_bytes", &labels)
            .set(files.iter().map(|f| f.bytes).sum::<u64>() as f64);
        metrics::gauge!("sluice_sink_rows", &labels)
            .set(files.iter().map(|f| f.rows).sum::<u64>() as f64);
        metrics::gauge!("sluice_sink_retrying", &labels)
            .set(f64::from(u8::from(sink.state() == "retrying")));
        metrics::gauge!("sluice_sink_last_commit_ms", &labels)
            .set(sink.core.stats.last_commit_ms.load(Ordering::Relaxed) as f64);
        metrics::gauge!("sluice_sink_buffered_bytes", &labels)
            .set(sink.core.stats.buffered_bytes() as f64);
        metrics::gauge!("sluice_sink_compaction_bytes", &labels)
            .set(sink.core.stats.compaction_bytes.load(Ordering::Relaxed) as f64);
        if let Some(delta) = &sink.core.delta {
            metrics::gauge!("sluice_sink_delta_snapshot_versions", &labels)
                .set(delta.snapshot_versions.load(Ordering::Relaxed) as f64);
            metrics::gauge!("sluice_sink_delta_outbox_changes", &labels)
                .set(delta.outbox_changes.load(Ordering::Relaxed) as f64);
        }
    }
    match prometheus() {
        Some(handle) => (StatusCode::OK, handle.render()).into_response(),
        None => error_response(&Error::Internal("metrics recorder unavailable".into())),
    }
}

/// The HTTP status of an error kind: the one mapping for every route.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::UndefinedTable => StatusCode::NOT_FOUND,
        ErrorKind::DuplicateTable | ErrorKind::DependentObjects => StatusCode::CONFLICT,
        ErrorKind::InsufficientPrivilege => StatusCode::FORBIDDEN,
        ErrorKind::DiskFull | ErrorKind::OutOfMemory | ErrorKind::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::ProgramLimit => StatusCode::PAYLOAD_TOO_LARGE,
        k if k.is_server_side() => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The one place an [`Error`] becomes an HTTP response.
pub fn error_response(e: &Error) -> axum::response::Response {
    let status = status(e.kind());
    (
        status,
        Json(serde_json::json!({ "error_code": e.sqlstate(), "error_message": e.to_string() })),
    )
        .into_response()
}
