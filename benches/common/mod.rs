//! Shared by the benchmarks: start the release `sluice` binary on port 0
//! and connect to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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
    /// `host:port` of the HTTP API.
    pub http: String,
    _dir: tempfile::TempDir,
}

/// Starts the `sluice` binary built with this bench (release under
/// `cargo bench`, debug under `cargo test --bench`), or `SLUICE_BIN`.
pub fn start_sluice() -> Sluice {
    start_sluice_with(None, None)
}

/// [`start_sluice`] with `config` (a `sluice.toml` written beside the
/// data directory, in the temporary directory) and the server's log in
/// `log` instead of this process's stderr.
pub fn start_sluice_with(config: Option<&Path>, log: Option<&Path>) -> Sluice {
    let bin = std::env::var("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(&bin);
    command
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
        .stdout(Stdio::piped());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if let Some(log) = log {
        command.stderr(std::fs::File::create(log).expect("server log"));
    }
    let mut child = command
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
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("http address")
        .to_string();
    Sluice {
        child,
        http,
        conninfo: format!("host={host} port={port} user=sluice dbname=sluice"),
        _dir: dir,
    }
}

impl Sluice {
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Peak resident memory of the server process so far (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    /// Anonymous resident memory of the server now (RssAnon), in MB.
    pub fn rss_anon_mb(&self) -> f64 {
        self.status_mb("RssAnon:")
    }

    /// A `/proc/<pid>/status` figure in kB, as MB.
    fn status_mb(&self, key: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub conninfo: String,
    _dir: tempfile::TempDir,
}

fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop()
}

/// Whether a PostgreSQL server can be started here; with `install`, tries
/// the Debian package first when it is missing.
pub fn postgres_available(install: bool) -> bool {
    if pg_bin_dir().is_some() {
        return true;
    }
    if install {
        eprintln!("installing the PostgreSQL server package (peer of the benchmarks)");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let apt = |args: &[&str]| {
            let mut c = if root {
                Command::new("apt-get")
            } else {
                let mut c = Command::new("sudo");
                c.args(["-n", "apt-get"]);
                c
            };
            c.args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let _ = apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "postgresql"]);
    }
    pg_bin_dir().is_some()
}

/// PostgreSQL refuses to run as root; run its tools as user `postgres` then.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

/// A PostgreSQL server on a free loopback port. A fixed port could be
/// taken: ports this high are in the kernel's ephemeral range, where the
/// bench's own connections and port-0 listeners land; so a port is picked
/// free, and picked again if the server still finds it taken.
pub fn start_postgres() -> Postgres {
    let mut last_log = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        match try_start_postgres(port) {
            Ok(postgres) => return postgres,
            Err(log) => last_log = log,
        }
    }
    panic!("pg_ctl start failed three times; the last log:\n{last_log}");
}

/// Starts PostgreSQL on `port`, or returns its log.
fn try_start_postgres(port: u16) -> Result<Postgres, String> {
    let bin = pg_bin_dir().expect("PostgreSQL server binaries under /usr/lib/postgresql");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pgdata");
    std::fs::create_dir(&data).expect("pgdata");
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path())
        .status();
    let _ = Command::new("chmod").args(["755"]).arg(dir.path()).status();
    let ok = pg_command(&bin, "initdb")
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
        .stdout(Stdio::null())
        .status()
        .expect("initdb");
    assert!(ok.success(), "initdb failed");
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on -c synchronous_commit=on -c max_connections=100",
        dir.path().display()
    );
    let ok = pg_command(&bin, "pg_ctl")
        .args(["-D"])
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(dir.path().join("pg.log"))
        .args(["-w", "start"])
        .stdout(Stdio::null())
        .status()
        .expect("pg_ctl start");
    if !ok.success() {
        return Err(std::fs::read_to_string(dir.path().join("pg.log")).unwrap_or_default());
    }
    Ok(Postgres {
        bin,
        data,
        conninfo: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        _dir: dir,
    })
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "fast", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}
