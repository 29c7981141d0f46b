//! One connection's life around the protocol loop (`socket`), and how it
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// Whether the client finished its startup (authenticated).
    started: watch::Sender<bool>,
    /// The role the session runs as (`current_user`), once started.
    user: std::sync::OnceLock<String>,
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
            started: watch::channel(false).0,
            user: std::sync::OnceLock::new(),
        })
    }

    /// The client finished its startup as `user`.
    pub fn start(&self, user: &str) {
        let _ = self.user.set(user.to_string());
        self.started.send_replace(true);
    }

    /// The session's role, once started.
    pub fn user(&self) -> Option<&str> {
        self.user.get().map(String::as_str)
    }

    /// Resolves when (if ever) the session must end on its own: its startup
    /// took longer than `startup`, or it sat idle (no statement running)
    /// for `idle`. Returns the FATAL error to send.
    async fn expired(
        &self,
        startup: Duration,
        idle: Option<Duration>,
    ) -> (ErrorKind, &'static str) {
        let mut started = self.started.subscribe();
        if tokio::time::timeout(startup, started.wait_for(|s| *s))
            .await
            .is_err()
        {
            return (
                ErrorKind::Canceled,
                "canceling authentication due to timeout",
            );
        }
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let mut busy = self.busy.subscribe();
        loop {
            let _ = busy.wait_for(|n| *n == 0).await;
            // Any change (a statement began, even one that already ended)
            // restarts the wait; a value check could miss a short one.
            if tokio::time::timeout(idle, busy.changed()).await.is_err() {
                return (
                    ErrorKind::IdleSessionTimeout,
                    "terminating connection due to idle-session timeout",
                );
            }
        }
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

/// How long a connection may take to start, and stay idle.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub startup: Duration,
    pub idle: Option<Duration>,
    /// The largest message a client may send (a statement and its slack).
    pub max_message_bytes: usize,
}

/// Serves one socket until the client leaves, its session expires, or
/// shutdown ends it.
pub async fn serve(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: ConnectionHandlers,
    activity: Arc<Activity>,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    // A second handle on the socket: the 57P01 goes out on it after the
    // protocol task is dropped.
    let std = socket.into_std()?;
    let notice = TcpStream::from_std(std.try_clone()?)?;
    let socket = TcpStream::from_std(std)?;
    // Malformed messages are stopped before pgwire decodes them
    // (`frames`); a panic anywhere else in the protocol task still ends
    // this connection only, and the client is told why.
    let mut connection = Box::pin(
        AssertUnwindSafe(super::socket::process_socket(
            socket,
            tls,
            handlers,
            limits.max_message_bytes,
        ))
        .catch_unwind(),
    );
    enum First {
        Ended(std::thread::Result<std::io::Result<()>>),
        Shutdown,
        Expired(ErrorKind, &'static str),
    }
    let first = tokio::select! {
        ended = &mut connection => First::Ended(ended),
        _ = shutdown.wait_for(|stop| *stop) => First::Shutdown,
        (kind, why) = activity.expired(limits.startup, limits.idle) => First::Expired(kind, why),
    };
    match first {
        First::Ended(ended) => return finish(ended, notice).await,
        First::Expired(kind, why) => {
            drop(connection);
            fatal(notice, kind, why).await;
            return Ok(());
        }
        First::Shutdown => {}
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

/// Answers a connection past `max_connections` with FATAL 53300. The
/// startup packet is read first (an SSLRequest answered 'N'): closing a
/// socket with unread input resets it, and the client could lose the
/// answer.
pub(super) async fn refuse_too_many(mut socket: TcpStream) {
    const SSL_REQUEST: i32 = 80_877_103;
    const GSS_REQUEST: i32 = 80_877_104;
    let read_startup = async {
        loop {
            let len = socket.read_i32().await?;
            let code = socket.read_i32().await?;
            let rest = usize::try_from(len)
                .unwrap_or(0)
                .saturating_sub(8)
                .min(10_000);
            let mut skip = vec![0u8; rest];
            socket.read_exact(&mut skip).await?;
            if code == SSL_REQUEST || code == GSS_REQUEST {
                socket.write_all(b"N").await?;
                continue;
            }
            return Ok::<(), std::io::Error>(());
        }
    };
    let _ = tokio::time::timeout(REFUSAL_READ, read_startup).await;
    fatal(
        socket,
        ErrorKind::TooManyConnections,
        "sorry, too many clients already",
    )
    .await;
}

/// How long a refused client has to send its startup packet.
const REFUSAL_READ: Duration = Duration::from_secs(2);

/// Sends a FATAL error (57P01 when an administrator shuts the server
/// down, 08P01 for a malformed message), then closes the socket.
pub(super) async fn fatal(mut socket: TcpStream, kind: ErrorKind, message: &str) {
    let info = ErrorInfo::new("FATAL".into(), kind.sqlstate().into(), message.into());
    let mut buf = BytesMut::new();
    if ErrorResponse::from(info).encode(&mut buf).is_ok() {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}
