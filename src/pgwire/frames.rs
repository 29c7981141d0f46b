//! Frontend messages checked before pgwire decodes them.
//!
//! pgwire's decoders read a message's fields from the connection's whole
//! read buffer, not from the message's own bytes: a Bind whose counts or
//! lengths run past its end reads the next message's bytes, or past the
//! buffer and panics (`advance out of bounds`). So every byte a client
//! sends passes [`FrameCheck`] first, which follows the message
//! boundaries (the untyped startup packets, then type byte and length)
//! and holds each message pgwire would decode to its exact layout: a
//! length of at least 4 and at most the server's largest statement,
//! known types only, fields that end exactly where the message does.
//! The first message that does not is never handed on: the connection
//! gets FATAL 08P01, as PostgreSQL answers a malformed message.

/// Request codes of the untyped packets sent before the startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// The startup packet is small; PostgreSQL refuses more than 10,000 bytes.
const MAX_STARTUP_BYTES: usize = 10_000;

/// Where the stream of client bytes stands.
#[derive(Debug)]
enum Phase {
    /// Untyped packets (startup, SSL and GSS requests): a length that
    /// counts itself, then the body.
    Untyped,
    /// Typed messages: a type byte, a length that counts itself, a body.
    Typed,
}

/// Follows the messages in a connection's byte stream and stops at the
/// first malformed one.
#[derive(Debug)]
pub struct FrameCheck {
    phase: Phase,
    /// The header read so far (type byte, if typed, and the length).
    header: Vec<u8>,
    /// The message being read: its type (0 if untyped), its body length,
    /// how much of the body is still to come, and the body itself for the
    /// types whose layout is checked once whole.
    kind: u8,
    body_bytes: usize,
    remaining: usize,
    body: Vec<u8>,
    max_message_bytes: usize,
}

impl FrameCheck {
    pub fn new(max_message_bytes: usize) -> FrameCheck {
        FrameCheck {
            phase: Phase::Untyped,
            header: Vec::with_capacity(5),
            kind: 0,
            body_bytes: 0,
            remaining: 0,
            body: Vec::new(),
            max_message_bytes,
        }
    }

    /// Follows `bytes`. On a malformed message: where in `bytes` that
    /// message starts (0 if it started in earlier bytes), and why.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), (usize, String)> {
        let mut at = 0;
        // Where the message being read starts in `bytes`.
        let mut start = 0;
        while at < bytes.len() {
            if self.in_header() {
                if self.header.is_empty() {
                    start = at;
                }
                self.header.push(bytes[at]);
                at += 1;
                if !self.in_header() {
                    self.begin_body().map_err(|why| (start, why))?;
                    if self.remaining == 0 {
                        self.end_message().map_err(|why| (start, why))?;
                    }
                }
                continue;
            }
            let take = self.remaining.min(bytes.len() - at);
            if self.keeps_body() {
                self.body.extend_from_slice(&bytes[at..at + take]);
            }
            at += take;
            self.remaining -= take;
            if self.remaining == 0 {
                self.end_message().map_err(|why| (start, why))?;
            }
        }
        Ok(())
    }

    fn header_len(&self) -> usize {
        match self.phase {
            Phase::Untyped => 4,
            Phase::Typed => 5,
        }
    }

    fn in_header(&self) -> bool {
        self.remaining == 0 && self.header.len() < self.header_len()
    }

    fn begin_body(&mut self) -> Result<(), String> {
        let (kind, len) = match self.phase {
            Phase::Untyped => (0, &self.header[..4]),
            Phase::Typed => (self.header[0], &self.header[1..5]),
        };
        let declared = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let limit = if kind == 0 {
            MAX_STARTUP_BYTES
        } else {
            self.max_message_bytes
        };
        let length = usize::try_from(declared).unwrap_or(0);
        if length < 4 || length > limit {
            return Err(format!(
                "invalid message length {declared} (a message counts its 4-byte length, and may hold at most {limit} bytes)"
            ));
        }
        if kind != 0 && !KNOWN_TYPES.contains(&kind) {
            return Err(format!("invalid frontend message type {}", kind as char));
        }
        self.kind = kind;
        self.body_bytes = length - 4;
        self.remaining = self.body_bytes;
        self.body.clear();
        Ok(())
    }

    /// Types whose layout is checked once the body is whole: everything
    /// but raw payloads (CopyData, the password family).
    fn keeps_body(&self) -> bool {
        !matches!(self.kind, b'd' | b'p')
    }

    fn end_message(&mut self) -> Result<(), String> {
        let body = std::mem::take(&mut self.body);
        let checked = match self.kind {
            0 => {
                let code = read_u32(&body, 0).unwrap_or(0);
                if !matches!(code, SSL_REQUEST | GSSENC_REQUEST) {
                    self.phase = Phase::Typed;
                }
                startup_layout(&body, code)
            }
            kind => layout(kind, &body),
        };
        self.header.clear();
        // The buffer is reused unless a large message grew it.
        if body.capacity() <= 64 << 10 {
            self.body = body;
            self.body.clear();
        }
        checked.map_err(|what| {
            format!(
                "invalid frontend message: {} ({} bytes) {what}",
                message_name(self.kind),
                self.body_bytes
            )
        })
    }
}

/// The types pgwire decodes from a client.
const KNOWN_TYPES: &[u8] = b"pQPBCDEHSXdcf";

fn message_name(kind: u8) -> &'static str {
    match kind {
        0 => "startup packet",
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'C' => "Close",
        b'D' => "Describe",
        b'E' => "Execute",
        b'f' => "CopyFail",
        _ => "message",
    }
}

fn read_u32(body: &[u8], at: usize) -> Option<u32> {
    let b = body.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the fields of one message body, each one in bounds.
struct Fields<'a> {
    body: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn cstring(&mut self) -> Result<(), &'static str> {
        let rest = self.body.get(self.at..).ok_or("ends inside a string")?;
        let nul = memchr::memchr(0, rest).ok_or("has a string without its terminating NUL")?;
        self.at += nul + 1;
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("has a field past its end")?;
        let field = self
            .body
            .get(self.at..end)
            .ok_or("has a field past its end")?;
        self.at = end;
        Ok(field)
    }

    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.bytes(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The layout must end exactly where the message does: pgwire
    /// would read what is left as the next message.
    fn end(&self) -> Result<(), &'static str> {
        if self.at == self.body.len() {
            Ok(())
        } else {
            Err("has bytes after its last field")
        }
    }
}

/// Checks a typed message's body against its layout.
fn layout(kind: u8, body: &[u8]) -> Result<(), &'static str> {
    let mut f = Fields { body, at: 0 };
    match kind {
        // Raw payloads: CopyData, and the password family, whose layout
        // depends on the authentication under way (checked there).
        b'd' | b'p' => return Ok(()),
        b'Q' | b'f' => f.cstring()?,
        b'P' => {
            f.cstring()?;
            f.cstring()?;
            let types = f.u16()?;
            f.bytes(types * 4)?;
        }
        b'B' => {
            f.cstring()?;
            f.cstring()?;
            let formats = f.u16()?;
            f.bytes(formats * 2)?;
            for _ in 0..f.u16()? {
                match f.i32()? {
                    -1 => {}
                    len if len < 0 => return Err("has a parameter of negative length"),
                    len => {
                        f.bytes(len as usize)?;
                    }
                }
            }
            let results = f.u16()?;
            f.bytes(results * 2)?;
        }
        b'C' | b'D' => {
            if !matches!(f.bytes(1)?[0], b'S' | b'P') {
                return Err("names neither a statement (S) nor a portal (P)");
            }
            f.cstring()?;
        }
        b'E' => {
            f.cstring()?;
            f.i32()?;
        }
        b'H' | b'S' | b'X' | b'c' => {}
        _ => return Err("is not supported"),
    }
    f.end()
}

/// Checks an untyped packet: an SSL or GSS request is its code alone; a
/// startup packet is a protocol version and `name NUL value NUL` pairs
/// ending with one more NUL.
fn startup_layout(body: &[u8], code: u32) -> Result<(), &'static str> {
    let mut f = Fields { body, at: 4 };
    if body.len() < 4 {
        return Err("is too short");
    }
    match code {
        SSL_REQUEST | GSSENC_REQUEST => return f.end(),
        // A CancelRequest: process id and secret key (or a longer key).
        80_877_102 => return Ok(()),
        _ => {}
    }
    loop {
        if f.body.get(f.at) == Some(&0) {
            f.at += 1;
            return f.end();
        }
        f.cstring()?;
        f.cstring()?;
    }
}

#[cfg(test)]
mod tests;
