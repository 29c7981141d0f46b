//! Client compatibility: the same checks (tests/clients/: psycopg 3,
//! SQLAlchemy 2 and pandas; pgjdbc; node-postgres with pg-cursor and
//! pg-copy-streams; asyncpg and pg8000) run first against a throwaway
//! PostgreSQL 15, which validates them, then against sluice, which must
//! give the same answers.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::Server;
use crate::postgres::Postgres;

/// Runs a client program to its end; its standard output.
fn run_client(program: &str, args: &[String], env: &[(&str, String)]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (installed by .ci/run): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn client_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}

fn compat(port: u16, user: &str, create: &str) -> Value {
    let args = [
        client_script("compat_psycopg.py"),
        "127.0.0.1".into(),
        port.to_string(),
        user.into(),
        create.into(),
    ];
    serde_json::from_str(run_client("python3", &args, &[]).trim()).unwrap()
}

#[test]
fn psycopg_sqlalchemy_and_pandas_see_what_they_see_on_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let columns = "(id BIGINT, name TEXT, ts TIMESTAMP, raw BYTEA)";
    let postgres = Postgres::start(tmp.path());
    let expected = compat(
        postgres.port,
        "postgres",
        &format!("CREATE TABLE ev {columns}"),
    );
    drop(postgres);
    // Every check passes on PostgreSQL: a failure below is sluice's.
    for (check, result) in expected.as_object().unwrap() {
        assert_eq!(result["ok"], true, "on PostgreSQL, {check}: {result}");
    }
    let server = Server::start();
    let got = compat(
        server.pg_addr.port(),
        "sluice",
        &format!("CREATE STREAM ev {columns}"),
    );
    let mut differ = Vec::new();
    for (check, want) in expected.as_object().unwrap() {
        let mut want = want.clone();
        if check == "version" {
            // sluice answers as PostgreSQL 16; each source must agree.
            let v = &got[check]["value"];
            let major = v["num_major"].clone();
            assert_eq!(
                v["version"].as_str().map(|s| s.split('.').next()),
                Some(Some("16")),
                "{v}"
            );
            for key in ["shown_major", "startup_major"] {
                assert_eq!(v[key], major, "{v}");
            }
            want = got[check].clone();
        }
        if check == "sqlalchemy_connect" {
            want["value"]["major"] = got[check]["value"]["major"].clone();
        }
        if got[check] != want {
            differ.push(format!("{check}: PostgreSQL {want}, sluice {}", got[check]));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

fn pgjdbc(port: u16, user: &str, create: &str) -> Vec<String> {
    let db = if user == "sluice" {
        "sluice"
    } else {
        "postgres"
    };
    let args = [
        "-cp".to_string(),
        "/usr/share/java/postgresql.jar".into(),
        client_script("Compat.java"),
        format!("jdbc:postgresql://127.0.0.1:{port}/{db}"),
        user.into(),
        create.into(),
    ];
    run_client("java", &args, &[])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pgjdbc_sees_what_it_sees_on_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let columns = "(id BIGINT, name TEXT)";
    let postgres = Postgres::start(tmp.path());
    let expected = pgjdbc(
        postgres.port,
        "postgres",
        &format!("CREATE TABLE jv {columns}"),
    );
    drop(postgres);
    assert_eq!(expected.len(), 7, "{expected:?}");
    for line in &expected {
        assert!(!line.contains("FAILED"), "on PostgreSQL: {line}");
    }
    let server = Server::start();
    let got = pgjdbc(
        server.pg_addr.port(),
        "sluice",
        &format!("CREATE STREAM jv {columns}"),
    );
    let differ: Vec<String> = expected
        .iter()
        .zip(&got)
        .filter(|(want, got)| want != got)
        .map(|(want, got)| format!("PostgreSQL {want:?}, sluice {got:?}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Runs `program args… HOST PORT USER DATABASE CREATE` against PostgreSQL
/// (which must pass every check) and sluice; the JSON answers must match.
fn same_as_postgres(program: &str, script: &str, env: &[(&str, String)], table: &str) {
    let columns = "(id BIGINT, name TEXT)";
    let run = |port: u16, user: &str, db: &str, create: String| -> Value {
        let args = [
            client_script(script),
            "127.0.0.1".into(),
            port.to_string(),
            user.into(),
            db.into(),
            create,
        ];
        serde_json::from_str(run_client(program, &args, env).trim()).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let postgres = Postgres::start(tmp.path());
    let expected = run(
        postgres.port,
        "postgres",
        "postgres",
        format!("CREATE TABLE {table} {columns}"),
    );
    drop(postgres);
    let text = expected.to_string();
    assert!(
        !text.contains("\"ok\":false"),
        "a check fails on PostgreSQL: {text}"
    );
    let server = Server::start();
    let got = run(
        server.pg_addr.port(),
        "sluice",
        "sluice",
        format!("CREATE STREAM {table} {columns}"),
    );
    assert_eq!(got, expected, "sluice (left) and PostgreSQL (right) differ");
}

#[test]
fn node_postgres_sees_what_it_sees_on_postgresql() {
    let modules = std::env::var("SLUICE_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/sluice-node/node_modules",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    same_as_postgres("node", "compat_node.js", &[("NODE_PATH", modules)], "nv");
}

#[test]
fn asyncpg_and_pg8000_see_what_they_see_on_postgresql() {
    same_as_postgres("python3", "compat_drivers.py", &[], "dv");
}
