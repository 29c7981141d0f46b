//! The extended query protocol (what tokio-postgres, psycopg and JDBC use):
//! prepared statements with typed parameters, errors with SQLSTATEs, and a
//! connection that sends garbage.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{assert_answers, sqlstate, Server};

#[tokio::test]
async fn prepared_inserts_and_selects_with_parameters() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM events (at TIMESTAMP NOT NULL, id BIGINT NOT NULL, name TEXT, score DOUBLE PRECISION) \
             WITH (shards = 2, partition_key = 'id')",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO events (at, id, name, score) VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    // 2026-11-25 13:00:00 UTC
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_611_600);
    for i in 0..20i64 {
        let name = (i % 2 == 0).then(|| format!("n{i}"));
        let n = client
            .execute(&insert, &[&at, &i, &name, &(i as f64 / 2.0)])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let rows = client
        .query(
            "SELECT id, name, score FROM events WHERE id >= $1 ORDER BY id",
            &[&15i64],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![15, 16, 17, 18, 19]);
    let names: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(names[1].as_deref(), Some("n16"));
    assert_eq!(names[0], None);
    let score: f64 = rows[4].get(2);
    assert_eq!(score, 9.5);
    let stored: std::time::SystemTime = client
        .query_one("SELECT at FROM events WHERE id = $1", &[&3i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, at);

    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 20);
}

#[tokio::test]
async fn extended_protocol_errors_carry_sqlstates() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM s (t TIMESTAMP NOT NULL, n INT)")
        .await
        .unwrap();
    let err = client
        .query("SELECT * FROM missing", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let err = client
        .execute("CREATE STREAM s (a INT)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P07");
    let err = client
        .execute("INSERT INTO s VALUES (NULL, 1)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23502");
    assert!(err.as_db_error().unwrap().message().contains("\"t\""));
    // DDL through the extended protocol answers with its command tag.
    let n = client.execute("DROP STREAM s", &[]).await.unwrap();
    assert_eq!(n, 0);
    let err = client.query("SELECT * FROM s", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
}

#[tokio::test]
async fn garbage_on_the_pg_port_closes_only_that_connection() {
    let server = Server::start();
    let mut sock = tokio::net::TcpStream::connect(server.pg_addr)
        .await
        .unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = sock.write_all(&garbage).await;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "server should close a garbage connection");
    let client = server.client().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// Every INSERT path refuses a statement over `max_statement_bytes` with
/// 54000 and stores nothing of it: a literal INSERT (checked on its text,
/// before any row is built, at Parse for a prepared one) and INSERT … SELECT.
#[tokio::test]
async fn statements_over_max_statement_bytes_are_refused_whole() {
    let server = Server::start_with_config("[limits]\nmax_statement_bytes = 65536\n");
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM s (n BIGINT, pad TEXT)")
        .await
        .unwrap();
    let pad = "x".repeat(1000);
    let rows: Vec<String> = (0..100).map(|n| format!("({n}, '{pad}')")).collect();
    let insert = format!("INSERT INTO s VALUES {}", rows.join(", "));

    let err = client.batch_execute(&insert).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54000", "{err}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("max_statement_bytes") && message.contains("\"s\""),
        "{message}"
    );

    let err = client.prepare(&insert).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54000", "prepared: {err}");

    let err = client
        .batch_execute(
            "INSERT INTO s SELECT value, repeat('x', 1000) FROM generate_series(1, 1000)",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "54000", "INSERT … SELECT: {err}");

    client
        .batch_execute("INSERT INTO s VALUES (1, 'small')")
        .await
        .unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "nothing of the refused statements is stored");
}

/// A frontend message: type byte, length, body.
fn frontend(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads backend messages up to ReadyForQuery; returns their type bytes.
async fn message_types(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    loop {
        let kind = socket.read_u8().await.unwrap();
        let len = socket.read_i32().await.unwrap();
        let mut body = vec![0; (len - 4) as usize];
        socket.read_exact(&mut body).await.unwrap();
        types.push(kind);
        if kind == b'Z' {
            return types;
        }
    }
}

/// A raw protocol connection past its startup, once stream `t (n BIGINT,
/// s TEXT)` exists.
async fn started_with_stream(server: &Server) -> tokio::net::TcpStream {
    server
        .client()
        .await
        .batch_execute("CREATE STREAM t (n BIGINT, s TEXT)")
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(server.pg_addr)
        .await
        .unwrap();
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
    let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    socket.write_all(&message).await.unwrap();
    let types = message_types(&mut socket).await;
    assert_eq!(types.first(), Some(&b'R'), "{types:?}");
    socket
}

/// The answers to pipelined messages leave in one write, as PostgreSQL
/// sends them: ParseComplete and BindComplete are not sent ahead of the
/// INSERT's fsync, so the first read holds everything up to
/// ReadyForQuery. Then a statement on its own is answered at once.
#[tokio::test]
async fn answers_to_pipelined_messages_arrive_together() {
    let server = Server::start();
    let mut socket = started_with_stream(&server).await;
    for round in 0..5 {
        let mut batch = frontend(b'P', b"\0INSERT INTO t VALUES (1, 'a')\0\0\0");
        batch.extend(frontend(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(frontend(b'E', b"\0\0\0\0\0"));
        batch.extend(frontend(b'S', &[]));
        socket.write_all(&batch).await.unwrap();
        let mut answer = vec![0; 4096];
        let n = socket.read(&mut answer).await.unwrap();
        // ParseComplete, BindComplete, CommandComplete "INSERT 0 1", ReadyForQuery.
        let expected = [
            &b"1\0\0\0\x042\0\0\0\x04C\0\0\0\x0fINSERT 0 1\0"[..],
            b"Z\0\0\0\x05I",
        ]
        .concat();
        assert_eq!(answer[..n], expected[..], "round {round}");
    }
    // A lone Sync (nothing buffered behind it) is answered by itself.
    socket.write_all(&frontend(b'S', &[])).await.unwrap();
    assert_eq!(message_types(&mut socket).await, b"Z");
}

/// Describe of a prepared statement answers NoData (not an empty
/// RowDescription) when it returns no rows, as PostgreSQL does: pgjdbc
/// otherwise fails a successful prepared INSERT once it names it.
#[tokio::test]
async fn describe_of_a_statement_without_rows_is_no_data() {
    let server = Server::start();
    let mut socket = started_with_stream(&server).await;
    let mut batch = Vec::new();
    for (name, sql) in [
        ("with_params", "INSERT INTO t VALUES ($1, $2)"),
        ("literal", "INSERT INTO t VALUES (1, 'a')"),
        ("rows", "SELECT n, s FROM t"),
    ] {
        let mut body = format!("{name}\0{sql}\0").into_bytes();
        body.extend_from_slice(&0i16.to_be_bytes());
        batch.extend(frontend(b'P', &body));
        batch.extend(frontend(b'D', format!("S{name}\0").as_bytes()));
    }
    batch.extend(frontend(b'S', &[]));
    socket.write_all(&batch).await.unwrap();
    let types = message_types(&mut socket).await;
    let text: String = types.iter().map(|b| *b as char).collect();
    // ParseComplete, ParameterDescription, then NoData / NoData / RowDescription.
    assert_eq!(text, "1tn1tn1tTZ");
}

/// A message whose length field is below its own 4 bytes (pgwire's decoder
/// underflows on it) ends that connection with FATAL 08P01; the server
/// and other clients go on.
#[tokio::test]
async fn a_message_shorter_than_its_length_field_is_a_protocol_violation() {
    let server = Server::start();
    for kind in [b'd', b'p'] {
        let mut socket = tokio::net::TcpStream::connect(server.pg_addr)
            .await
            .unwrap();
        let mut startup = Vec::new();
        startup.extend_from_slice(&196_608i32.to_be_bytes());
        startup.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
        let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend_from_slice(&startup);
        socket.write_all(&message).await.unwrap();
        message_types(&mut socket).await;
        let mut bad = vec![kind];
        bad.extend_from_slice(&2i32.to_be_bytes());
        bad.extend_from_slice(b"xxxxxxxx");
        socket.write_all(&bad).await.unwrap();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(answer.first(), Some(&b'E'), "{kind}: {text:?}");
        assert!(text.contains("C08P01"), "{kind}: {text:?}");
    }
    let client = server.client().await;
    assert_answers(&client).await;
}

/// Literal INSERTs prepared one after another and executed in another
/// order, or twice, each store their own rows: what a Parse parsed is only
/// reused by the Execute of the same text.
#[tokio::test]
async fn prepared_literal_inserts_run_what_each_says() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM lits (id BIGINT NOT NULL, name TEXT) WITH (shards = 2)")
        .await
        .unwrap();
    let first = client
        .prepare("INSERT INTO lits VALUES (1, 'one')")
        .await
        .unwrap();
    let second = client
        .prepare("INSERT INTO lits VALUES (2, 'two'), (3, 'three')")
        .await
        .unwrap();
    assert_eq!(client.execute(&first, &[]).await.unwrap(), 1);
    assert_eq!(client.execute(&second, &[]).await.unwrap(), 2);
    assert_eq!(client.execute(&second, &[]).await.unwrap(), 2);
    assert_eq!(client.execute(&first, &[]).await.unwrap(), 1);
    // Prepared and executed at once (tokio-postgres' `execute` of text).
    assert_eq!(
        client
            .execute("INSERT INTO lits VALUES (4, 'four')", &[])
            .await
            .unwrap(),
        1
    );
    let rows = client
        .query("SELECT id, name FROM lits ORDER BY id, name", &[])
        .await
        .unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [
        (1, "one"),
        (1, "one"),
        (2, "two"),
        (2, "two"),
        (3, "three"),
        (3, "three"),
        (4, "four"),
    ];
    assert_eq!(got, want.map(|(id, name)| (id, name.to_string())).to_vec());
}
