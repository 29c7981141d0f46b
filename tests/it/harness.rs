//! Starts the real `sluice` binary on port 0 with a data directory and
//! talks to it as clients do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub struct Server {
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    pub pg_addr: SocketAddr,
    pub http_addr: SocketAddr,
    data_dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh temporary data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start_in(tmp.path());
        server._tmp = Some(tmp);
        server
    }

    /// A server on a fresh data directory with `toml` as its config file.
    pub fn start_with_config(toml: &str) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("sluice.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut server = Server::spawn(&tmp.path().join("data"), Some(&config));
        server._tmp = Some(tmp);
        server
    }

    /// A server on `data_dir` (which may hold an earlier server's data).
    pub fn start_in(data_dir: &Path) -> Server {
        Server::spawn(data_dir, None)
    }

    fn spawn(data_dir: &Path, config: Option<&Path>) -> Server {
        Server::spawn_with(data_dir, config, &[])
    }

    /// A server on `data_dir` with an optional config file and extra
    /// environment variables.
    pub fn spawn_with(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "serve",
                "--pg-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(
                config
                    .map(|c| vec!["--config".as_ref(), c.as_os_str()])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read address line");
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| {
                    panic!(
                        "no {key} in {line:?}; see {}",
                        data_dir.with_extension("log").display()
                    )
                })
                .parse()
                .expect("address")
        };
        Server {
            pg_addr: addr("pg="),
            http_addr: addr("http="),
            child: Some(child),
            _stdout: Some(stdout),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub async fn client(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.conninfo(), NoTls)
            .await
            .expect("connect to sluice");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=sluice dbname=sluice",
            self.pg_addr.ip(),
            self.pg_addr.port()
        )
    }

    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// SIGHUP: the server reloads its TLS certificate.
    pub fn hangup(&self) {
        let child = self.child.as_ref().expect("running server");
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// Waits for the server to exit by itself (e.g. at a fail point).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running server");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (clean shutdown).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running server");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the real `psql` with `script` on stdin; returns (stdout, stderr, success).
    pub fn psql(&self, script: &str) -> (String, String, bool) {
        use std::io::Write;
        let mut child = Command::new("psql")
            .args([
                "-X",
                "-h",
                &self.pg_addr.ip().to_string(),
                "-p",
                &self.pg_addr.port().to_string(),
            ])
            .args([
                "-U",
                "sluice",
                "-d",
                "sluice",
                "-v",
                "ON_ERROR_STOP=0",
                "-f",
                "-",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql is installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("psql output");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first column of the one row `sql` returns, as a BIGINT.
/// The session answers a query (it survived whatever the test did).
pub async fn assert_answers(client: &Client) {
    assert_eq!(scalar(client, "SELECT 1::BIGINT").await, 1);
}

/// Connects with `conninfo`, driving the connection in the background.
pub async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The plan text of an `EXPLAIN [ANALYZE] …` statement.
pub async fn explain(client: &Client, explain_sql: &str) -> String {
    let lines: Vec<String> = client
        .query(explain_sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(1))
        .collect();
    lines.join("\n")
}

pub async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

impl Server {
    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// Polls `check` until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Staging directories of bulk appends (large COPYs) under `data_dir`.
pub fn staged_bulks(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("streams"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("bulk-")
        })
        .count()
}

/// Cuts `bytes` off the last frame of the newest segment in `shard_dir`, as
/// a crash mid-write would: the zero tail an active segment is extended by
/// goes too (the last frame ends where the last non-zero byte is, give or
/// take its end-of-stream zeros, which the cut covers).
pub fn tear_last_frame(shard_dir: &Path, bytes: u64) {
    let segment = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let content = std::fs::read(&segment).unwrap();
    let end = content.iter().rposition(|b| *b != 0).unwrap() as u64 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(end - bytes)
        .unwrap();
}

/// Every file under `dir` (recursively) whose extension is `ext`, sorted.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, ext, &mut out);
    out.sort();
    out
}

/// Runs `tests/clients/<script>` with `args` and `env` under python3 (its
/// packages are installed by `.ci/run`) and parses the one JSON value it
/// prints; fails the test with its output otherwise.
pub fn python_json(script: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 with the packages .ci/run installs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON value")
}
