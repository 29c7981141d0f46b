//! The Postgres wire protocol front end: the accept loop (bounded by a
//! semaphore, backing off on errors, stops on shutdown), each connection's
//! life and end (`connection`) and, in `handler`, the per-connection
//! handlers that route sluice statements to the engine and the rest to a
//! DataFusion session of the connection's own.

mod auth;
mod connection;
mod copy;
mod cursor;
mod execute;
mod frames;
mod handler;
mod parser;
mod privilege;
mod roles;
mod session;
mod socket;
mod statement;
mod text_format;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use pgwire::error::{ErrorInfo, PgWireError};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::engine::Engine;
use crate::error::Error;

pub use auth::{Security, Verifiers};
pub use handler::ConnectionHandlers;

/// Accept errors (out of file descriptors, say) are retried after a delay
/// doubling up to this, instead of spinning.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections past `max_connections` being told 53300 at once; more are
/// closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Serves connections until `shutdown` flips to true, then returns once
/// every connection has ended: statements in flight finish and are
/// answered, idle clients get 57P01 (see `connection`).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: Security,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = &engine.config.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let session_limits = connection::SessionLimits {
        startup: Duration::from_millis(limits.startup_timeout_ms.max(1)),
        idle: Some(Duration::from_millis(limits.idle_session_timeout_ms)).filter(|d| !d.is_zero()),
        // A Parse or Query of the largest statement, with room for its
        // other fields.
        max_message_bytes: usize::try_from(limits.max_statement_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10),
    };
    let connections = Arc::new(pgwire::api::ConnectionManager::new());
    let cancels = Arc::new(statement::Cancels::default());
    let mut open = JoinSet::new();
    let mut backoff = Duration::from_millis(1);
    loop {
        // Reap finished connection tasks so the set stays bounded.
        while open.try_join_next().is_some() {}
        let (socket, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(1);
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: say so at once, as PostgreSQL does, rather than leave
            // the client waiting. Past a bound of such answers in flight
            // the socket is just closed.
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                open.spawn(async move {
                    connection::refuse_too_many(socket).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let activity = connection::Activity::new();
        // A second handle on the socket tells a running query that its
        // client has gone (see `statement`).
        let peer_socket = socket
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from);
        let handlers = ConnectionHandlers::new(
            engine.clone(),
            connections.clone(),
            cancels.clone(),
            peer_socket,
            activity.clone(),
            &security,
        );
        let tls = security.tls.as_ref().map(|t| t.pg());
        let shutdown = shutdown.clone();
        open.spawn(async move {
            let served =
                connection::serve(socket, tls, handlers, activity, session_limits, shutdown).await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // The completion guard: the logs close only after every connection.
    while open.join_next().await.is_some() {}
}

/// The one place an [`Error`] becomes a Postgres error response.
pub fn to_pg_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

pub fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string());
    info.where_context = e.context().map(str::to_string);
    info
}

/// Gives errors coming back from DataFusion's handlers our SQLSTATEs.
pub fn map_pg_error(e: PgWireError) -> PgWireError {
    match into_error(e) {
        Ok(own) => to_pg_error(own),
        Err(other) => other,
    }
}

/// Recovers an [`Error`] from what DataFusion's handlers return; protocol
/// errors and errors that already carry a SQLSTATE stay as they are.
pub fn into_error(e: PgWireError) -> Result<Error, PgWireError> {
    use datafusion::sql::sqlparser::parser::ParserError;
    let PgWireError::ApiError(inner) = e else {
        return Err(e);
    };
    let inner = match inner.downcast::<datafusion::error::DataFusionError>() {
        Ok(df) => return Ok(Error::from_datafusion(*df)),
        Err(other) => other,
    };
    let inner = match inner.downcast::<ParserError>() {
        Ok(p) => {
            let msg = p.to_string().replace("sql parser error: ", "");
            return Ok(Error::Syntax(format!("syntax error: {msg}")));
        }
        Err(other) => other,
    };
    match inner.downcast::<Error>() {
        Ok(own) => Ok(*own),
        Err(other) => Ok(Error::Internal(other.to_string())),
    }
}
