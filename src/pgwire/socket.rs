//! The protocol loop of one connection: pgwire's `process_socket`, with
//! the answers to pipelined messages written together. pgwire flushes
//! after each ParseComplete, BindComplete and CommandComplete, so an
//! extended-protocol statement (Parse, Bind, Execute, Sync sent at once)
//! cost four `sendto`s and four packets for the client to wake on.
//! PostgreSQL writes its output when it has to wait for the client; this
//! loop does the same: while the next message is already buffered, writes
//! are held in memory (bounded by [`CORK_MAX_BYTES`]), and everything goes
//! out before the connection waits for input. Every byte read passes
//! [`FrameCheck`] before pgwire's decoder sees it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message, MaybeTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::frames::FrameCheck;

/// Most bytes held back before they are written anyway.
const CORK_MAX_BYTES: usize = 64 * 1024;
/// A client that has not finished its startup by then is dropped (as
/// pgwire's own loop does).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one TCP connection (TLS negotiated first) until the client
/// leaves.
pub async fn process_socket<H: PgWireServerHandlers>(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
    max_message_bytes: usize,
) -> io::Result<()> {
    let startup_deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_deadline);
    let negotiated = tokio::select! {
        _ = &mut startup_deadline => return Ok(()),
        negotiated = negotiate_tls(socket, tls) => negotiated?,
    };
    // A direct TLS handshake without TLS configured: nothing to serve.
    let Some(framed) = negotiated else {
        return Ok(());
    };
    let parts = framed.into_parts();
    let mut io = Corked::new(parts.io, FrameCheck::new(max_message_bytes));
    let mut read_buf = parts.read_buf;
    // What TLS negotiation read ahead is checked like any later bytes.
    if let Err((at, why)) = io.check.feed(&read_buf) {
        read_buf.truncate(at);
        io.violation = Some(why);
    }
    let mut corked = FramedParts::new(io, parts.codec);
    corked.read_buf = read_buf;
    corked.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(corked);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if starting {
            tokio::select! {
                _ = &mut startup_deadline => None,
                next = socket.next() => next,
            }
        } else {
            socket.next().await
        };
        let Some(Ok(message)) = next else {
            if let Some(why) = socket.get_mut().violation.take() {
                // As PostgreSQL answers a malformed message, then closes.
                let error = ErrorInfo::new("FATAL".into(), "08P01".into(), why);
                socket.get_mut().corked = false;
                socket
                    .send(PgWireBackendMessage::ErrorResponse(error.into()))
                    .await?;
            }
            break;
        };
        // A Terminate: the client waits for the server to close.
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let pipelined = !starting && holds_message(socket.read_buffer());
        socket.get_mut().corked = pipelined;
        let handled = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(mut e) = handled {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
        if !pipelined {
            socket.get_mut().corked = false;
            socket.flush().await?;
        }
    }
    Ok(())
}

/// Whether `buf` holds a whole frontend message (type byte, then a length
/// that counts itself).
fn holds_message(buf: &BytesMut) -> bool {
    if buf.len() < 5 {
        return false;
    }
    let mut len = &buf[1..5];
    let len = len.get_u32() as usize;
    buf.len() > len
}

/// A socket whose writes collect in memory (up to [`CORK_MAX_BYTES`])
/// and go out at a flush, unless `corked`.
struct Corked {
    io: MaybeTls,
    held: BytesMut,
    corked: bool,
    /// Follows the client's messages; reading stops before the first
    /// malformed one.
    check: FrameCheck,
    /// Why reading stopped, for the FATAL 08P01.
    violation: Option<String>,
}

impl Corked {
    fn new(io: MaybeTls, check: FrameCheck) -> Corked {
        Corked {
            io,
            held: BytesMut::new(),
            corked: false,
            check,
            violation: None,
        }
    }

    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // After a malformed message the stream ends for the decoder.
        if this.violation.is_some() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Err((at, why)) = this.check.feed(&buf.filled()[before..]) {
            buf.set_filled(before + at);
            this.violation = Some(why);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Bytes are held even when uncorked, so a flush writes what was
        // held and what follows in one call; the order on the wire is the
        // order written.
        let this = self.get_mut();
        if this.held.len() + buf.len() > CORK_MAX_BYTES {
            ready!(this.poll_drain(cx))?;
            if buf.len() > CORK_MAX_BYTES {
                return Pin::new(&mut this.io).poll_write(cx, buf);
            }
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::holds_message;
    use bytes::BytesMut;

    #[test]
    fn a_message_is_whole_once_its_length_is_in() {
        // 'S' (Sync) with length 4: five bytes in all.
        assert!(!holds_message(&BytesMut::from(&b"S\0\0\0"[..])));
        assert!(holds_message(&BytesMut::from(&b"S\0\0\0\x04"[..])));
        // A Parse of length 10 needs 11 bytes.
        let mut parse = BytesMut::from(&b"P\0\0\0\x0a"[..]);
        parse.extend_from_slice(b"abcde");
        assert!(!holds_message(&parse));
        parse.extend_from_slice(b"f");
        assert!(holds_message(&parse));
    }
}
