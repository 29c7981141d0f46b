//! One connection's life around pgwire's `process_socket`, and how it
//! ends at shutdown (tokio's mini-redis is the model): the accept loop
//! stops, a statement in flight finishes and its answer is sent, an idle
//! client is told 57P01 and disconnected, and the server waits for every
//! connection task before it closes the logs.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use pgwire::error::ErrorInfo;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ConnectionHandlers;
use crate::error::{Error, ErrorKind};

/// How long a statement in flight may run on once shutdown begins; after
/// it the connection is dropped (an unacknowledged statement stores
/// nothing, so dropping it loses nothing acknowledged).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After a statement ends, how long its answer has to reach the socket
/// before the idle connection is closed.
const ANSWER_FLUSH: Duration = Duration::from_millis(100);

/// Statements a connection is running now (a COPY counts from its start
/// to CopyDone or CopyFail).
#[derive(Debug)]
pub struct Activity {
    busy: watch::Sender<usize>,
}

/// Held while a statement runs.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            busy: watch::channel(0).0,
        })
    }

    pub fn enter(self: &Arc<Self>) -> Busy {
        self.busy.send_modify(|n| *n += 1);
        Busy(self.clone())
    }

    /// Resolves once no statement runs.
    async fn idle(&self) {
        let mut rx = self.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Serves one socket until the client leaves or shutdown ends it.
pub async fn serve(
    socket: TcpStream,
    handlers: ConnectionHandlers,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    // A second handle on the socket: the 57P01 goes out on it after the
    // protocol task is dropped.
    let std = socket.into_std()?;
    let notice = TcpStream::from_std(std.try_clone()?)?;
    let socket = TcpStream::from_std(std)?;
    // pgwire's decoder panics on some malformed lengths (a message shorter
    // than its own length field); the panic ends this connection only, and
    // the client is told why, as PostgreSQL would.
    let mut connection = Box::pin(
        AssertUnwindSafe(pgwire::tokio::process_socket(socket, None, handlers)).catch_unwind(),
    );
    let ended = tokio::select! {
        ended = &mut connection => Some(ended),
        _ = shutdown.wait_for(|stop| *stop) => None,
    };
    if let Some(ended) = ended {
        return finish(ended, notice).await;
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        let ended = tokio::select! {
            ended = &mut connection => Some(ended),
            _ = tokio::time::sleep_until(deadline) => break,
            _ = activity.idle() => {
                // Let the last answer reach the socket; a statement that
                // starts meanwhile is waited for too.
                match tokio::time::timeout(ANSWER_FLUSH, &mut connection).await {
                    Ok(ended) => Some(ended),
                    Err(_) if *activity.busy.borrow() == 0 => break,
                    Err(_) => None,
                }
            }
        };
        if let Some(ended) = ended {
            return finish(ended, notice).await;
        }
    }
    // The protocol task goes first, so nothing else is written after the
    // notice.
    drop(connection);
    fatal(
        notice,
        ErrorKind::ShuttingDown,
        "terminating connection due to administrator command",
    )
    .await;
    Ok(())
}

/// The end of the protocol task: its I/O error, or a panic in pgwire's
/// decoder, answered with FATAL 08P01.
async fn finish(
    ended: std::thread::Result<std::io::Result<()>>,
    notice: TcpStream,
) -> Result<(), Error> {
    match ended {
        Ok(result) => result.map_err(|e| Error::Internal(e.to_string())),
        Err(_) => {
            tracing::warn!("malformed protocol message; connection closed with 08P01");
            fatal(
                notice,
                ErrorKind::ProtocolViolation,
                "invalid message format: a message length is shorter than its header",
            )
            .await;
            Ok(())
        }
    }
}

/// Sends a FATAL error (57P01 when an administrator shuts the server
/// down, 08P01 for a malformed message), then closes the socket.
async fn fatal(mut socket: TcpStream, kind: ErrorKind, message: &str) {
    let info = ErrorInfo::new("FATAL".into(), kind.sqlstate().into(), message.into());
    let mut buf = BytesMut::new();
    if ErrorResponse::from(info).encode(&mut buf).is_ok() {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}
