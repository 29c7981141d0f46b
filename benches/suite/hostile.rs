//! The soak of hostile input: random protocol messages (well-formed ones
//! with a few bytes changed, and noise) over raw connections, and random
//! SQL from a small grammar of attacks (writes, DDL, COPY to files,
//! runtime settings, deep expressions, each in random spellings) sent by
//! a reader over both protocols. Afterwards the server must be up, its log
//! free of panics, no file written outside its data directory, and the
//! stream's rows unchanged; the phase panics otherwise, so the smoke run
//! in CI fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{scalar, Row, Scale};
use crate::common::{connect, start_sluice_with, Sluice};

const PASSWORD: &str = "hostile soak password";

/// A deterministic generator (xorshift), so a failing run repeats.
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

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let messages = if scale.quick { 1_000 } else { 10_000 };
    let statements = if scale.quick { 200 } else { 1_000 };
    let outside = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");

    let trusted_log = logs.path().join("trusted.log");
    let trusted = start_sluice_with(None, Some(&trusted_log));
    let started = Instant::now();
    random_messages(&trusted, messages).await;
    let messages_s = started.elapsed().as_secs_f64();
    let client = connect(&trusted.conninfo).await;
    assert_eq!(scalar(&client, "SELECT 1::BIGINT").await, 1, "server up");
    assert_no_panic(&trusted_log);

    let secret = logs.path().join("sluice.pw");
    std::fs::write(&secret, format!("{PASSWORD}\n")).expect("password");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = logs.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("[auth]\npassword_file = \"{}\"\n", secret.display()),
    )
    .expect("config");
    let guarded_log = logs.path().join("guarded.log");
    let guarded = start_sluice_with(Some(&config), Some(&guarded_log));
    let admin = connect(&format!("{} password='{PASSWORD}'", guarded.conninfo)).await;
    admin
        .batch_execute(
            "CREATE STREAM s (n BIGINT); INSERT INTO s VALUES (1), (2), (3); \
             CREATE ROLE ria LOGIN PASSWORD 'reader-pw' IN ROLE sluice_reader",
        )
        .await
        .expect("setup");
    let reader = connect(
        &guarded
            .conninfo
            .replace("user=sluice", "user=ria password='reader-pw'"),
    )
    .await;
    let started = Instant::now();
    let mut rng = Rng(0x5EED_0F5A_1CE5);
    let mut refused = 0;
    for i in 0..statements {
        let sql = attack(&mut rng, outside.path(), i);
        let result = if rng.below(2) == 0 {
            reader.batch_execute(&sql).await
        } else {
            reader.query(&sql, &[]).await.map(|_| ())
        };
        refused += usize::from(result.is_err());
    }
    let statements_s = started.elapsed().as_secs_f64();
    assert_eq!(
        scalar(&admin, "SELECT count(*) FROM s").await,
        3,
        "rows unchanged"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("outside").count(),
        0,
        "nothing written outside the data directory"
    );
    assert_no_panic(&guarded_log);
    vec![
        Row::new(
            "hostile",
            format!("{messages} random protocol messages"),
            format!(
                "{:.0} msg/s, no panic, server up",
                messages as f64 / messages_s
            ),
        ),
        Row::new(
            "hostile",
            format!("{statements} random attack statements as a reader"),
            format!(
                "{refused} refused, {:.0} stmt/s, rows and files unchanged",
                statements as f64 / statements_s
            ),
        ),
    ]
}

fn assert_no_panic(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("panicked") && !text.contains("overflow"),
        "the server log shows a panic: {}",
        log.display()
    );
}

/// Well-formed frontend messages to mutate.
fn templates() -> Vec<Vec<u8>> {
    let msg = |kind: u8, body: &[u8]| {
        let mut out = vec![kind];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    // Unnamed portal and statement, one binary format, an int and a NULL.
    let bind = b"\0\0\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff\0\x01\0\0".to_vec();
    vec![
        msg(b'Q', b"SELECT 1\0"),
        msg(b'P', b"\0SELECT $1::int\0\0\x01\0\0\0\x17"),
        msg(b'B', &bind),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'C', b"S\0"),
        msg(b'S', b""),
        msg(b'H', b""),
        msg(b'd', b"1\n"),
        msg(b'f', b"no\0"),
    ]
}

/// `count` messages over raw connections, ten to a connection.
async fn random_messages(server: &Sluice, count: usize) {
    let addr = server
        .conninfo
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .fold((String::new(), String::new()), |(h, p), (k, v)| match k {
            "host" => (v.to_string(), p),
            "port" => (h, v.to_string()),
            _ => (h, p),
        });
    let addr = format!("{}:{}", addr.0, addr.1);
    let templates = templates();
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    for _ in 0..count.div_ceil(10) {
        let mut socket = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
        let mut bytes = (body.len() as i32 + 4).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        for _ in 0..10 {
            let mut message = if rng.below(10) == 0 {
                (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect()
            } else {
                templates[rng.below(templates.len())].clone()
            };
            for _ in 0..rng.below(4) {
                let i = rng.below(message.len());
                message[i] = rng.next() as u8;
            }
            bytes.extend_from_slice(&message);
        }
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut sink)).await;
    }
}

/// One attack statement in a random spelling.
fn attack(rng: &mut Rng, outside: &Path, i: usize) -> String {
    let dir = outside.display();
    let deep =
        |rng: &mut Rng| vec!["1"; 1 + rng.below(3000)].join(rng.pick(&["+", " OR ", "||", "*"]));
    let words = match rng.below(16) {
        0 => format!("COPY s TO '{dir}/f{i}.csv'"),
        1 => format!("COPY (SELECT 'pwned' AS a) TO '{dir}/q{i}.csv'"),
        2 => format!("EXPLAIN ANALYZE COPY s TO '{dir}/e{i}.json'"),
        3 => "INSERT INTO s SELECT n FROM s".into(),
        4 => "EXPLAIN ANALYZE INSERT INTO s SELECT n FROM s".into(),
        5 => format!("PREPARE p{i} AS INSERT INTO s VALUES ({i})"),
        6 => "WITH w AS (SELECT 9::BIGINT AS n) INSERT INTO s SELECT n FROM w".into(),
        7 => rng
            .pick(&[
                "DROP SCHEMA public CASCADE",
                "DROP STREAM s",
                "DROP TABLE s",
                "CREATE SCHEMA x",
                "CREATE VIEW v AS SELECT 1",
                "TRUNCATE s",
                "DELETE FROM s",
                "UPDATE s SET n = 0",
            ])
            .into(),
        8 => format!("SET datafusion.runtime.temp_directory = '{dir}'"),
        9 => format!("SELECT {}", deep(rng)),
        10 => format!("CREATE EXTERNAL TABLE x{i} STORED AS CSV LOCATION '{dir}'"),
        11 => "SELECT count(*) FROM s".into(),
        12 => format!("COPY (INSERT INTO s VALUES ({i})) TO STDOUT"),
        13 => format!("SELECT 1 INTO t{i}"),
        14 => format!("CREATE TABLE c{i} AS SELECT n FROM s"),
        _ => format!(
            "SELECT {}1{}",
            "(".repeat(rng.below(200)),
            ")".repeat(rng.below(200))
        ),
    };
    let mut out = String::new();
    for (n, word) in words.split(' ').enumerate() {
        if n > 0 {
            out.push_str(rng.pick(&[" ", "/**/", "\n", "--c\n", "\t", " /* x */ "]));
        }
        // Quoted text (paths) keeps its case.
        match rng.below(3) {
            _ if word.contains('\'') => out.push_str(word),
            0 => out.push_str(&word.to_ascii_lowercase()),
            1 => out.push_str(&word.to_ascii_uppercase()),
            _ => out.push_str(word),
        }
    }
    out
}
