//! A throwaway PostgreSQL 15 for tests that compare with it or deliver to
//! it: its own data directory, a free port, local connections trusted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL 15 in `dir`; stopped on drop. Run as `postgres`
/// when the tests run as root.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    data: PathBuf,
    as_root: bool,
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).unwrap();
        let as_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let mut pg = Postgres {
            child: None,
            port: 0,
            data,
            as_root,
        };
        let data_str = pg.data.to_str().unwrap().to_string();
        let out = pg
            .command(
                "initdb",
                &["-D", &data_str, "-U", "postgres", "--auth=trust"],
            )
            .output()
            .expect("initdb (PostgreSQL 15 server, installed by .ci/run)");
        assert!(out.status.success(), "initdb: {out:?}");
        // A port found free can be taken by another test's server before
        // this one binds it; then the server exits, and whatever took the
        // port must not be mistaken for it.
        for _ in 0..5 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if pg.try_resume() {
                return pg;
            }
            pg.stop();
        }
        panic!("PostgreSQL did not start on any of five free ports");
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = format!("{PG_BIN}/{program}");
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]).args(args);
            c
        } else {
            let mut c = Command::new(path);
            c.args(args);
            c
        }
    }

    /// Starts the server (again) on the same port and data.
    pub fn resume(&mut self) {
        assert!(
            self.try_resume(),
            "PostgreSQL did not start on port {}",
            self.port
        );
    }

    /// Starts the server on `self.port`; false if it exited (the port was
    /// taken) or another server answers there.
    fn try_resume(&mut self) -> bool {
        let data_str = self.data.to_str().unwrap().to_string();
        let child = self
            .command(
                "postgres",
                &[
                    "-D",
                    &data_str,
                    "-p",
                    &self.port.to_string(),
                    "-k",
                    &data_str,
                    "-h",
                    "127.0.0.1",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return false;
                }
            }
            let ready = self
                .command(
                    "pg_isready",
                    &["-h", "127.0.0.1", "-p", &self.port.to_string()],
                )
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return self.serves(&data_str);
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server on `self.port` is the one of `data`.
    fn serves(&self, data: &str) -> bool {
        let out = self
            .command(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-Atc",
                    "SHOW data_directory",
                ],
            )
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == data
    }

    /// Stops the server (fast shutdown: open transactions roll back).
    pub fn stop(&mut self) {
        let data_str = self.data.to_str().unwrap().to_string();
        // The child may be `runuser`, which does not pass signals on.
        let _ = self
            .command("pg_ctl", &["-D", &data_str, "stop", "-m", "fast"])
            .stdout(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Restarts with TLS on, serving `server.pem`/`server.key` from
    /// `certs` (as `tls::make_certificates` writes them).
    pub fn enable_ssl(&mut self, certs: &Path) {
        for name in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(name), self.data.join(name)).unwrap();
        }
        if self.as_root {
            let status = Command::new("chown")
                .args(["postgres"])
                .arg(self.data.join("server.pem"))
                .arg(self.data.join("server.key"))
                .status()
                .unwrap();
            assert!(status.success());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            self.data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).unwrap();
        self.stop();
        self.resume();
    }

    /// `postgresql://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        crate::harness::connect(&format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        ))
        .await
        .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
