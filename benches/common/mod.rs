//! Shared by the benchmarks: start the release `sluice` binary on port 0
//! and connect to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tokio_postgres::{Client, NoTls};

pub async fn connect(conninfo: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub struct Sluice {
    child: Child,
    pub conninfo: String,
    _dir: tempfile::TempDir,
}

pub fn start_sluice() -> Sluice {
    let bin = std::env::var("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            PathBuf::from(target).join("release").join("sluice")
        });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--pg-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pg="))
        .expect("pg address")
        .to_string();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    Sluice {
        child,
        conninfo: format!("host={host} port={port} user=sluice dbname=sluice"),
        _dir: dir,
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
