//! The frame check against real message layouts, every chunking of a
//! stream, and pgwire's own decoder: whatever passes the check decodes
//! without a panic, message for message.

use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

use super::FrameCheck;

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
    let mut out = (body.len() as i32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn bind(params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = b"portal\0stmt\0".to_vec();
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &body)
}

/// A session's worth of well-formed messages.
fn session() -> Vec<u8> {
    let mut parse = b"\0SELECT $1::int\0".to_vec();
    parse.extend_from_slice(&1u16.to_be_bytes());
    parse.extend_from_slice(&23u32.to_be_bytes());
    let mut execute = b"portal\0".to_vec();
    execute.extend_from_slice(&0i32.to_be_bytes());
    [
        startup(),
        msg(b'p', b"password\0"),
        msg(b'Q', b"SELECT 1\0"),
        msg(b'P', &parse),
        bind(&[Some(b"\0\0\0\x07"), None]),
        msg(b'D', b"Pportal\0"),
        msg(b'E', &execute),
        msg(b'C', b"S\0"),
        msg(b'H', b""),
        msg(b'S', b""),
        msg(b'd', b"1\t2\n"),
        msg(b'c', b""),
        msg(b'f', b"stopped\0"),
        msg(b'X', b""),
    ]
    .concat()
}

#[test]
fn well_formed_messages_pass_in_any_chunking() {
    let stream = session();
    for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
        let mut check = FrameCheck::new(1 << 20);
        for part in stream.chunks(chunk) {
            check.feed(part).unwrap();
        }
    }
}

#[test]
fn malformed_messages_are_stopped_where_they_start() {
    let mut count_past_end = b"\0\0".to_vec();
    count_past_end.extend_from_slice(&1u16.to_be_bytes());
    count_past_end.extend_from_slice(&0u16.to_be_bytes());
    count_past_end.extend_from_slice(&5u16.to_be_bytes());
    let cases = [
        (msg(b'B', &count_past_end), "field past its end"),
        (msg(b'B', b"\0"), "string without"),
        (msg(b'Q', b"SELECT 1\0extra"), "bytes after its last field"),
        (msg(b'Q', b"SELECT 1"), "without its terminating NUL"),
        (msg(b'D', b"Xname\0"), "neither a statement"),
        (msg(b'S', b"x"), "bytes after"),
        (msg(b'Z', b""), "invalid frontend message type"),
        (b"B\0\0\0\x02".to_vec(), "invalid message length 2"),
        (b"d\xff\xff\xff\xff".to_vec(), "invalid message length -1"),
    ];
    for (bad, why) in cases {
        let good = msg(b'S', b"");
        let stream = [startup(), good.clone(), bad, good].concat();
        let mut check = FrameCheck::new(1 << 20);
        let (at, message) = check.feed(&stream).unwrap_err();
        assert_eq!(at, startup().len() + 5, "{message}");
        assert!(message.contains(why), "{message}");
    }
    let mut check = FrameCheck::new(100);
    let (_, message) = check
        .feed(&[startup(), msg(b'Q', &[b'x'; 200])].concat())
        .unwrap_err();
    assert!(message.contains("at most 100 bytes"), "{message}");
}

/// A tiny deterministic generator (xorshift), so failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 10,000 hostile messages, mostly well-formed ones with a few bytes
/// changed: pgwire never panics on what the check lets through, and
/// decodes exactly the messages the check counted.
#[test]
fn what_passes_the_check_decodes_without_a_panic() {
    let templates: Vec<Vec<u8>> = {
        let s = session();
        let mut check_points = Vec::new();
        let mut at = startup().len();
        while at < s.len() {
            let len = i32::from_be_bytes([s[at + 1], s[at + 2], s[at + 3], s[at + 4]]) as usize;
            check_points.push(s[at..at + 1 + len].to_vec());
            at += 1 + len;
        }
        check_points
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut passed = 0;
    for _ in 0..10_000 {
        let mut message = templates[rng.below(templates.len())].clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(message.len());
            message[i] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                _ => rng.next() as u8,
            };
        }
        let mut check = FrameCheck::new(1 << 20);
        check.feed(&startup()).unwrap();
        if check.feed(&message).is_err() {
            continue;
        }
        passed += 1;
        let decoded = std::panic::catch_unwind(|| {
            let mut ctx = DecodeContext::new(ProtocolVersion::default());
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = false;
            let mut buf = BytesMut::from(&message[..]);
            let first = PgWireFrontendMessage::decode(&mut buf, &ctx);
            (first.is_ok(), buf.len())
        });
        let (_, left) = decoded.unwrap_or_else(|_| panic!("pgwire panicked on {message:?}"));
        // A whole message was accepted: pgwire consumed exactly it.
        let declared = message
            .get(1..5)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if declared < message.len() {
            assert_eq!(left, message.len() - declared - 1, "{message:?}");
        }
    }
    assert!(
        passed > 1000,
        "only {passed} mutated messages were well-formed"
    );
}
