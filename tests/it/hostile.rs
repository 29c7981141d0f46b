//! A logged-in role tries what an attacker would: statements that recurse
//! deep enough to overflow a stack, writes and DDL spelled so that their
//! first words hide them, settings that move the server's files. Each
//! gets a precise error, the server stays up and nothing changes.

use std::os::unix::fs::PermissionsExt;

use tokio_postgres::Client;

use crate::harness::{connect, scalar, sqlstate, Server};

const PASSWORD: &str = "correct horse battery staple";

/// A server with a password file and one role of each group.
pub struct Roles {
    /// Kept running (and its data directory kept) for the clients.
    _server: Server,
    pub admin: Client,
    pub writer: Client,
    pub reader: Client,
    pub tmp: tempfile::TempDir,
}

impl Roles {
    pub async fn start() -> Roles {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("sluice.pw");
        std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = tmp.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!("[auth]\npassword_file = \"{}\"\n", secret.display()),
        )
        .unwrap();
        let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
        let login = |user: &str, password: &str| {
            format!(
                "host={} port={} user={user} dbname=sluice password='{password}'",
                server.pg_addr.ip(),
                server.pg_addr.port()
            )
        };
        let admin = connect(&login("sluice", PASSWORD)).await.unwrap();
        admin
            .batch_execute(
                "CREATE STREAM s (n BIGINT); INSERT INTO s VALUES (1), (2); \
                 CREATE ROLE ria LOGIN PASSWORD 'reader-pw' IN ROLE sluice_reader; \
                 CREATE ROLE wes LOGIN PASSWORD 'writer-pw' IN ROLE sluice_writer; \
                 CREATE ROLE ada LOGIN PASSWORD 'admin-pw' IN ROLE sluice_admin",
            )
            .await
            .unwrap();
        let reader = connect(&login("ria", "reader-pw")).await.unwrap();
        let writer = connect(&login("wes", "writer-pw")).await.unwrap();
        let admin = connect(&login("ada", "admin-pw")).await.unwrap();
        Roles {
            _server: server,
            admin,
            writer,
            reader,
            tmp,
        }
    }

    pub async fn rows(&self) -> i64 {
        scalar(&self.admin, "SELECT count(*) FROM s").await
    }
}

/// The SQLSTATE `sql` fails with over the simple protocol (`None` if it
/// succeeds).
async fn simple(client: &Client, sql: &str) -> Option<String> {
    client.batch_execute(sql).await.err().map(|e| sqlstate(&e))
}

/// The same over the extended protocol (Parse, Bind, Execute).
async fn extended(client: &Client, sql: &str) -> Option<String> {
    client.execute(sql, &[]).await.err().map(|e| sqlstate(&e))
}

/// `SELECT 1+1+…+1` with 2,000 terms aborted the process with a stack
/// overflow; every deep form now gets 54001 (or the parser's own nesting
/// error) through both protocols, and the server answers after each.
#[tokio::test]
async fn deep_statements_get_54001_and_the_server_stays_up() {
    let roles = Roles::start().await;
    let ones = |op: &str, n: usize| vec!["1"; n].join(op);
    let deep = [
        format!("SELECT {}", ones("+", 2000)),
        format!("SELECT {}", ones("+", 200_000)),
        format!("SELECT count(*) FROM s WHERE {}", ones(" = 1 OR 1", 1000)),
        format!("SELECT CASE WHEN {} THEN 1 END", ones(" AND ", 3000)),
        format!("SELECT abs({})", ones(" * ", 5000)),
        format!("SELECT 'a' {}", " || 'a'".repeat(5000)),
        format!("SELECT n{} FROM s", "::BIGINT".repeat(5000)),
        vec!["SELECT n FROM s"; 3000].join(" UNION ALL "),
        format!("SELECT 1 FROM s{}", " JOIN s USING (n)".repeat(2000)),
        format!("INSERT INTO s VALUES ({})", ones("+", 5000)),
    ];
    for sql in &deep {
        for (protocol, state) in [
            ("simple", simple(&roles.reader, sql).await),
            ("extended", extended(&roles.reader, sql).await),
        ] {
            assert_eq!(
                state.as_deref(),
                Some("54001"),
                "{protocol}: {}",
                &sql[..40]
            );
        }
    }
    // Nesting by parentheses, calls and subqueries is bounded by the
    // parser: an error, never a crash.
    let nested = [
        format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
        format!("SELECT {}1{}", "abs(".repeat(5000), ")".repeat(5000)),
        format!("SELECT {}1{}", "(SELECT ".repeat(3000), ")".repeat(3000)),
        format!("SELECT {}1", "- ".repeat(20_000)),
        format!("SELECT {} TRUE", "NOT ".repeat(20_000)),
    ];
    for sql in &nested {
        let state = simple(&roles.reader, sql).await;
        assert!(
            matches!(state.as_deref(), Some("54001" | "42601")),
            "{}: {state:?}",
            &sql[..40]
        );
        assert!(extended(&roles.reader, sql).await.is_some());
    }
    // Just under the bound still runs, in every phase.
    let ok = format!("SELECT {}", ones("+", 900));
    assert_eq!(
        scalar(&roles.reader, &format!("{ok} + 0::BIGINT")).await,
        900
    );
    assert_eq!(roles.rows().await, 2);
}

/// Writes, DDL and files spelled past the first words (comments, a
/// newline comment, EXPLAIN ANALYZE, PREPARE, CTEs, COPY's query) are
/// refused with 42501 for a reader, and nothing is written.
#[tokio::test]
async fn a_reader_cannot_write_whatever_the_spelling() {
    let roles = Roles::start().await;
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().display();
    let attacks = [
        format!("COPY/**/(SELECT 'pwned' AS a) TO '{out}/a.csv'"),
        format!("COPY--x\n(SELECT 'pwned' AS a) TO '{out}/b.csv'"),
        format!("COPY/**/s TO '{out}/dump.json'"),
        format!("copy s to '{out}/c.csv'"),
        format!("EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/d.csv'"),
        format!("EXPLAIN/**/ANALYZE/**/COPY s TO '{out}/e.csv'"),
        "DROP/**/SCHEMA public CASCADE".into(),
        "drop--x\nschema public cascade".into(),
        "DROP/**/STREAM s".into(),
        "CREATE/**/TABLE t AS SELECT 1 AS a".into(),
        "CREATE/**/VIEW v AS SELECT 1".into(),
        "EXPLAIN ANALYZE INSERT INTO s SELECT n FROM s".into(),
        "EXPLAIN/**/ANALYZE INSERT INTO s VALUES (7)".into(),
        "PREPARE p AS INSERT INTO s SELECT n FROM s".into(),
        "/**/INSERT/**/INTO s SELECT n FROM s".into(),
        "WITH w AS (SELECT 5::BIGINT AS n) INSERT INTO s SELECT n FROM w".into(),
        "SELECT 1 INTO t2".into(),
        "SET datafusion.execution.target_partitions = 512".into(),
    ];
    for attack in &attacks {
        assert_eq!(
            simple(&roles.reader, attack).await.as_deref(),
            Some("42501"),
            "simple: {attack}"
        );
        assert_eq!(
            extended(&roles.reader, attack).await.as_deref(),
            Some("42501"),
            "extended: {attack}"
        );
    }
    // EXECUTE of what a reader could not prepare finds nothing.
    assert!(simple(&roles.reader, "EXECUTE p").await.is_some());
    // A parameterised INSERT through the extended protocol.
    let err = roles
        .reader
        .execute("INSERT INTO s SELECT n + $1 FROM s", &[&1i64])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // COPY's query is a query, for every role.
    for client in [&roles.reader, &roles.admin] {
        for sql in [
            "COPY (INSERT INTO s VALUES (9)) TO STDOUT",
            "COPY (DROP SCHEMA public CASCADE) TO STDOUT",
        ] {
            let err = client.copy_out(sql).await.err().expect(sql);
            assert!(
                matches!(sqlstate(&err).as_str(), "42601" | "42501"),
                "{sql}: {err:?}"
            );
        }
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(roles.rows().await, 2);
    assert_eq!(scalar(&roles.reader, "SELECT count(*) FROM s").await, 2);
    // The writer may insert through the query engine, but not define.
    roles
        .writer
        .batch_execute("EXPLAIN ANALYZE INSERT INTO s SELECT n FROM s")
        .await
        .unwrap();
    assert_eq!(roles.rows().await, 4);
    for ddl in ["DROP/**/STREAM s", "create/**/stream x (n int)"] {
        assert_eq!(simple(&roles.writer, ddl).await.as_deref(), Some("42501"));
    }
    let _ = &roles.tmp;
}

/// Settings that move the server's files or swap its memory pool are
/// nobody's (55P02); the query engine's other settings are the admin's.
#[tokio::test]
async fn runtime_settings_cannot_be_changed_by_any_role() {
    let roles = Roles::start().await;
    for client in [&roles.reader, &roles.writer, &roles.admin] {
        for sql in [
            "SET datafusion.runtime.temp_directory = '/tmp/anywhere'",
            "SET datafusion.runtime.memory_limit = '100G'",
            "set/**/datafusion.runtime.max_temp_directory_size = '1T'",
            "RESET datafusion.runtime.memory_limit",
        ] {
            assert_eq!(simple(client, sql).await.as_deref(), Some("55P02"), "{sql}");
            assert_eq!(
                extended(client, sql).await.as_deref(),
                Some("55P02"),
                "{sql}"
            );
        }
    }
    roles
        .admin
        .batch_execute("SET datafusion.execution.batch_size = 4096")
        .await
        .unwrap();
    roles
        .reader
        .batch_execute("SET statement_timeout = 5000; SET application_name = 'r'")
        .await
        .unwrap();
}

/// A raw connection that has logged in (trust): startup sent, answers
/// read up to ReadyForQuery.
async fn logged_in(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
    let mut startup = (body.len() as i32 + 4).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    socket.write_all(&startup).await.unwrap();
    let mut seen = Vec::new();
    while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during startup");
        seen.extend_from_slice(&chunk[..n]);
    }
    socket
}

/// Everything the server sends until it closes the connection.
async fn until_closed(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut out),
    );
    let _ = read.await;
    out
}

/// Malformed protocol messages (a Bind whose counts run past its end,
/// lengths shorter than the length field, unknown types, random bytes)
/// get FATAL 08P01 and a closed connection; pgwire never decodes them, so
/// nothing panics, and other clients are served throughout.
#[tokio::test]
async fn malformed_messages_get_08p01_and_nothing_panics() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start();
    let client = server.client().await;
    let mut bind_past_end = b"B\0\0\0\x0c\0\0".to_vec();
    bind_past_end.extend_from_slice(&[0, 1, 0, 0, 0, 9]);
    let named = [
        bind_past_end,
        b"B\0\0\0\x02".to_vec(),
        b"P\0\0\0\x05\0".to_vec(),
        b"Z\0\0\0\x04".to_vec(),
        b"Q\0\0\0\x09SELECT 1".to_vec(),
    ];
    for message in &named {
        let mut socket = logged_in(server.pg_addr).await;
        socket.write_all(message).await.unwrap();
        let answer = until_closed(&mut socket).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("FATAL") && text.contains("08P01"),
            "{message:?}: {text}"
        );
    }
    // Random bytes after login, over many connections.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..300 {
        let mut socket = logged_in(server.pg_addr).await;
        let mut bytes = Vec::new();
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        // A known type first, so the body is what is random.
        bytes[0] = b"PBDECQSHdcf"[(state % 11) as usize];
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
        until_closed(&mut socket).await;
    }
    assert_eq!(scalar(&client, "SELECT 1 + 1").await, 2);
    let log = std::fs::read_to_string(server.data_dir().with_extension("log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// Parse and Bind of 65,535 parameters (the protocol's most): a select
/// list that wide gets 54011 as on PostgreSQL (the planner's work grows
/// with its square), a long IN list runs, and other clients connect and
/// are answered while such statements are planned.
#[tokio::test]
async fn statements_of_65535_parameters_are_answered_and_others_served() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM p (a INT)")
        .await
        .unwrap();
    let values: Vec<i32> = (0..65_535).collect();
    let casts = |n: usize| {
        (1..=n)
            .map(|i| format!("${i}::int"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wide = format!("SELECT {}", casts(65_535));
    let heavy = {
        let client = server.client().await;
        let values = values.clone();
        tokio::spawn(async move {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            client.query(&wide, &params).await.map(|_| ())
        })
    };
    // Others are served meanwhile.
    for _ in 0..3 {
        let other = server.client().await;
        assert_eq!(scalar(&other, "SELECT 7::BIGINT").await, 7);
    }
    let err = heavy.await.unwrap().unwrap_err();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    assert_eq!(sqlstate(&err), "54011", "{err:?}");
    let in_list = format!("SELECT count(*) FROM p WHERE a IN ({})", casts(5000));
    let rows = client.query(&in_list, &params[..5000]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let insert = format!(
        "INSERT INTO p VALUES {}",
        (1..=2000)
            .map(|i| format!("(${i}::int)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        client.execute(&insert, &params[..2000]).await.unwrap(),
        2000
    );
}
