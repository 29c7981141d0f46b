//! Password authentication: with `[auth] password_file`, clients log in as
//! `sluice` with SCRAM-SHA-256 (tokio-postgres, psql); a wrong password or
//! an unknown role gets FATAL 28P01 naming the role, never the password.
//! Without a password the server refuses to serve a non-loopback address,
//! and a password file others can read is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio_postgres::NoTls;

use crate::harness::{assert_answers, connect, sqlstate, Server};

const PASSWORD: &str = "correct horse battery staple";

fn password_config(dir: &Path, mode: u32) -> std::path::PathBuf {
    let secret = dir.join("sluice.pw");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!("[auth]\npassword_file = \"{}\"\n", secret.display()),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn scram_logins_succeed_with_the_password_and_fail_with_28p01_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let config = password_config(tmp.path(), 0o600);
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let with = |user: &str, password: &str| {
        format!(
            "host={} port={} user={user} dbname=sluice password='{password}'",
            server.pg_addr.ip(),
            server.pg_addr.port()
        )
    };
    let (client, conn) = tokio_postgres::connect(&with("sluice", PASSWORD), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_answers(&client).await;

    for (user, password) in [("sluice", "wrong"), ("mallory", PASSWORD)] {
        let err = match tokio_postgres::connect(&with(user, password), NoTls).await {
            Ok(_) => panic!("{user} logged in with {password:?}"),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&err), "28P01", "{err:?}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains(user), "{message}");
        assert!(!message.contains(password), "{message}");
    }
    // No password at all: the server asks for one, the client has none.
    assert!(tokio_postgres::connect(&server.conninfo(), NoTls)
        .await
        .is_err());

    // psql, with the password in PGPASSWORD.
    let psql = |password: &str| {
        Command::new("psql")
            .args(["-X", "-h", &server.pg_addr.ip().to_string()])
            .args(["-p", &server.pg_addr.port().to_string()])
            .args(["-U", "sluice", "-d", "sluice", "-tAc", "SELECT 40 + 2"])
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("psql is installed")
    };
    let ok = psql(PASSWORD);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42", "{ok:?}");
    let refused = psql("nope");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password authentication failed"),
        "{refused:?}"
    );
}

/// Runs `sluice serve` expecting it to refuse to start; returns stderr.
fn refused_start(args: &[&str], data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started: {out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Without a password file (loopback), the session runs as the role the
/// client names, as PostgreSQL's trust authentication does.
#[tokio::test]
async fn current_user_is_the_role_the_client_named() {
    let server = Server::start();
    let conninfo = format!(
        "host={} port={} user=alice dbname=sluice",
        server.pg_addr.ip(),
        server.pg_addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await.unwrap();
    tokio::spawn(conn);
    let who: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "alice");
    let other = server.client().await;
    let who: String = other
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "sluice", "each session has its own");
}

#[test]
fn without_a_password_only_loopback_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = refused_start(
        &["--pg-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"],
        &tmp.path().join("data"),
    );
    assert!(stderr.contains("without a password"), "{stderr}");
    assert!(stderr.contains("password_file"), "{stderr}");
    let stderr = refused_start(
        &["--pg-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0"],
        &tmp.path().join("data"),
    );
    assert!(stderr.contains("http_addr"), "{stderr}");
    assert!(stderr.contains("[auth]"), "{stderr}");
}

#[test]
fn with_a_password_both_ports_may_listen_on_the_network() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let config = password_config(tmp.path(), 0o600);
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--pg-addr",
            "0.0.0.0:0",
            "--http-addr",
            "0.0.0.0:0",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // With [auth] the HTTP API asks every request for a key, so it may be
    // exposed too (tests/it/http_auth.rs).
    assert!(line.contains("pg=0.0.0.0:"), "{line}");
    assert!(line.contains("http=0.0.0.0:"), "{line}");
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = password_config(tmp.path(), 0o644);
    let stderr = refused_start(
        &[
            "--pg-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &tmp.path().join("data"),
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

/// Roles: an admin creates them with a group; each logs in with its own
/// password and may do what its group allows (42501 otherwise, naming the
/// role and what it tried); ALTER ROLE changes the password, DROP ROLE
/// ends further logins.
#[tokio::test]
async fn roles_log_in_with_their_password_and_do_what_their_group_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let config = password_config(tmp.path(), 0o600);
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let connect = |user: &'static str, password: &'static str| {
        let conninfo = format!(
            "host={} port={} user={user} dbname=sluice password='{password}'",
            server.pg_addr.ip(),
            server.pg_addr.port()
        );
        async move { connect(&conninfo).await }
    };
    let admin = connect("sluice", PASSWORD).await.unwrap();
    admin
        .batch_execute(
            "CREATE STREAM s (n BIGINT); INSERT INTO s VALUES (1); \
             CREATE ROLE ria LOGIN PASSWORD 'reader-pw' IN ROLE sluice_reader; \
             CREATE ROLE wes WITH LOGIN PASSWORD 'writer-pw' IN ROLE sluice_writer",
        )
        .await
        .unwrap();
    let err = admin
        .batch_execute("CREATE ROLE ria LOGIN PASSWORD 'x' IN ROLE sluice_reader")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42710");

    let reader = connect("ria", "reader-pw").await.unwrap();
    let n: i64 = reader
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    for (sql, what) in [
        ("INSERT INTO s VALUES (2)", "INSERT into \"s\""),
        ("INSERT INTO s SELECT n FROM s", "INSERT"),
        ("CREATE STREAM t (n BIGINT)", "DDL"),
    ] {
        let err = reader.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(
            message.contains("\"ria\"") && message.contains(what),
            "{message}"
        );
    }
    // The extended protocol is checked too.
    let err = reader
        .query("INSERT INTO s SELECT n FROM s", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");

    let writer = connect("wes", "writer-pw").await.unwrap();
    writer
        .batch_execute("INSERT INTO s VALUES (2)")
        .await
        .unwrap();
    let err = writer.batch_execute("DROP STREAM s").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = writer
        .batch_execute("CREATE ROLE eve LOGIN PASSWORD 'x' IN ROLE sluice_admin")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");

    admin
        .batch_execute("ALTER ROLE wes PASSWORD 'new-pw'")
        .await
        .unwrap();
    assert!(connect("wes", "writer-pw").await.is_err());
    assert!(connect("wes", "new-pw").await.is_ok());
    admin.batch_execute("DROP ROLE wes").await.unwrap();
    let err = connect("wes", "new-pw").await.err().unwrap();
    assert_eq!(sqlstate(&err), "28P01");
    let err = admin.batch_execute("DROP ROLE wes").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
    admin
        .batch_execute("DROP ROLE IF EXISTS wes")
        .await
        .unwrap();
    let n: i64 = admin
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
