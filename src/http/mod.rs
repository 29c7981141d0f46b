//! The HTTP front end (axum): record ingestion (`records`), the
//! Kinesis-compatible API (`kinesis`), health and Prometheus metrics.

mod cbor;
mod kinesis;
mod records;

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind};

/// The process-wide Prometheus recorder (a recorder can be installed once
/// per process; several servers in one process share it).
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

pub fn router(engine: Arc<Engine>) -> Router {
    let _ = prometheus();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/streams/{name}/records", post(records::put_records))
        .route("/", post(kinesis::handle))
        .layer(axum::extract::DefaultBodyLimit::max(
            engine.config.limits.max_request_bytes as usize,
        ))
        .with_state(engine)
}

pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(engine);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
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
