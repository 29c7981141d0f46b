//! The login matrix with the client libraries users have: psycopg 3 and
//! pgjdbc, each with the right and a wrong password, in plaintext and with
//! TLS verified against a CA made here (psql, tokio-postgres and boto3
//! are covered in `auth`, `tls` and `http_auth`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::Server;
use crate::tls::make_certificates;

const PASSWORD: &str = "matrix-pw-7";

fn tls_server(dir: &Path) -> Server {
    make_certificates(dir);
    let secret = dir.join("sluice.pw");
    std::fs::write(&secret, PASSWORD).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\npassword_file = \"{}\"\n[tls]\ncert = \"{1}/server.pem\"\nkey = \"{1}/server.key\"\n",
            secret.display(),
            dir.display()
        ),
    )
    .unwrap();
    Server::spawn_with(&dir.join("data"), Some(&config), &[])
}

fn client(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(dir)
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .expect("client runs (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn psycopg_logs_in_with_the_password_over_plaintext_and_verified_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tls_server(tmp.path());
    let ca = tmp.path().join("ca.pem");
    let conninfo = |password: &str, tls: &str| {
        format!(
            "host=localhost port={} dbname=sluice user=sluice password={password} {tls}",
            server.pg_addr.port()
        )
    };
    let verify = format!("sslmode=verify-full sslrootcert={}", ca.display());
    let out = run(Command::new("python3")
        .arg(client("credentials_psycopg.py"))
        .arg(conninfo(PASSWORD, "sslmode=disable"))
        .arg(conninfo(PASSWORD, &verify))
        .arg(conninfo("wrong", "sslmode=disable"))
        .arg(conninfo("wrong", &verify)));
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 4, "{out}");
    for (answer, tls) in answers[..2].iter().zip([false, true]) {
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["user"], "sluice", "{answer}");
        assert_eq!(answer["tls"], tls, "{answer}");
    }
    for answer in &answers[2..] {
        assert_eq!(answer["ok"], false, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("password authentication failed for user \"sluice\""),
            "{message}"
        );
    }
}

#[test]
fn pgjdbc_logs_in_with_the_password_over_plaintext_and_verified_tls() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "pgjdbc is installed by .ci/run (libpostgresql-jdbc-java)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let server = tls_server(tmp.path());
    let port = server.pg_addr.port();
    let ca = tmp.path().join("ca.pem");
    let plain = format!("jdbc:postgresql://localhost:{port}/sluice?sslmode=disable");
    let tls = format!(
        "jdbc:postgresql://localhost:{port}/sluice?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let java = |password: &str| {
        run(Command::new("java")
            .arg("-cp")
            .arg(jar)
            .arg(client("Credentials.java"))
            .args(["sluice", password, &plain, &tls]))
    };
    let right = java(PASSWORD);
    assert_eq!(
        right.lines().collect::<Vec<_>>(),
        ["ok sluice", "ok sluice"],
        "{right}"
    );
    let wrong = java("wrong");
    let lines: Vec<&str> = wrong.lines().collect();
    assert_eq!(lines.len(), 2, "{wrong}");
    for line in lines {
        assert!(line.starts_with("error 28P01"), "{line}");
        assert!(
            !line.contains("wrong"),
            "the password is not echoed: {line}"
        );
    }
}
