//! One typed configuration. Precedence: command-line flags, then `SLUICE_*`
//! environment variables (clap reads both), then the TOML file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
pub const DEFAULT_PG_ADDR: &str = "127.0.0.1:5433";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8433";
const MIN_UPLOAD_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024;

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub pg_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub s3: S3Config,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
}

/// `[tls]`: a certificate for pgwire (SSLRequest and direct TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Refuse plaintext connections (fail closed).
    #[serde(default)]
    pub require: bool,
}

/// `[auth]`: who may connect, and where SQL may reach.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file holding the password of the superuser role `sluice`; with
    /// it, clients authenticate with SCRAM-SHA-256. Without it the server
    /// serves loopback addresses only.
    pub password_file: Option<PathBuf>,
    /// Directories and `s3://bucket/prefix/` prefixes SQL may read and
    /// write besides the data directory.
    #[serde(default)]
    pub allowed_locations: Vec<String>,
    /// Keys for the HTTP API and the Kinesis API: requests are signed
    /// with AWS SigV4 or carry `Authorization: Bearer <secret>`.
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    /// Serve `/metrics` without credentials (a scraper on a trusted
    /// network); by default it needs a key like the rest of the API.
    #[serde(default)]
    pub public_metrics: bool,
}

impl AuthConfig {
    /// Whether clients must authenticate: with a password file (pgwire)
    /// or access keys (HTTP), the HTTP API asks every request for a key.
    pub fn enabled(&self) -> bool {
        self.password_file.is_some() || !self.access_keys.is_empty()
    }
}

/// `[[auth.access_keys]]`: an access key id, the file holding its secret,
/// and the role whose privileges requests signed with it have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub id: String,
    pub secret_file: PathBuf,
    pub role: String,
}

impl Config {
    /// Every file the config names that holds a secret or a key (out of
    /// SQL's reach even when it lies in the data directory).
    pub fn secret_files(&self) -> Vec<PathBuf> {
        let auth = &self.auth;
        auth.password_file
            .iter()
            .cloned()
            .chain(auth.access_keys.iter().map(|k| k.secret_file.clone()))
            .chain(
                self.tls
                    .iter()
                    .flat_map(|t| [t.key.clone(), t.cert.clone()]),
            )
            .collect()
    }
}

/// Reads a secret from a file that only its owner may read or write (a
/// secret any local user can read is none); trailing newlines dropped.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |e: std::io::Error| {
        Error::InvalidParameter(format!("cannot read {what} {}: {e}", path.display()))
    };
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::InvalidParameter(format!(
            "{what} {} is readable or writable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(secret.to_string())
}

/// Settings for S3 and S3-compatible object stores.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
}

/// Bounds on everything that could otherwise grow without limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A shard's active segment is sealed once it reaches this size.
    pub segment_size_bytes: u64,
    /// Largest statement (rows encoded as Arrow) accepted in one INSERT.
    pub max_statement_bytes: u64,
    /// Append requests waiting for the log writer of one stream.
    pub append_queue_depth: usize,
    /// Concurrent pgwire connections; further ones are refused at once
    /// with 53300, as PostgreSQL does.
    pub max_connections: usize,
    /// Largest HTTP request body accepted (413 beyond).
    pub max_request_bytes: u64,
    /// Most records in one HTTP ingest request (413 beyond): bounds the
    /// per-record state a request of tiny records would multiply into.
    pub max_request_records: usize,
    /// HTTP and Kinesis ingest requests processed at once; more are
    /// answered 429 (Kinesis: ProvisionedThroughputExceededException)
    /// with Retry-After, so concurrent large bodies cannot exhaust memory.
    pub http_ingest_concurrency: usize,
    /// Concurrent HTTP connections; more are answered 503 and closed.
    pub http_max_connections: usize,
    /// How long an HTTP client may take to send a request's headers, and
    /// how long an idle keep-alive connection stays open.
    pub http_header_timeout_ms: u64,
    /// How often expired segments are looked for.
    pub retention_check_interval_ms: u64,
    /// Open Parquet files per sink shard task; more rolls them all.
    pub sink_max_open_files: usize,
    /// Bytes buffered in a sink shard task's open writers; more rolls them.
    pub sink_max_buffered_bytes: u64,
    /// Part size of multipart uploads (S3 needs at least 5 MiB).
    pub upload_part_size_bytes: u64,
    /// How long files merged away by compaction stay for running queries.
    pub compaction_grace_ms: u64,
    /// Memory all running queries may hold together (hash tables, sorts,
    /// buffers); past it operators spill to `<data-dir>/tmp/spill` or the
    /// query fails with 53200. Default: a quarter of the machine's memory.
    pub query_memory_bytes: u64,
    /// Most bytes of spill files at once (then 53200 as well).
    pub query_spill_bytes: u64,
    /// Default `statement_timeout` of sessions (0: none); `SET
    /// statement_timeout` overrides it per session.
    pub statement_timeout_ms: u64,
    /// How long a new pgwire connection may take to finish its startup;
    /// silent sockets are closed after it instead of holding a slot.
    pub startup_timeout_ms: u64,
    /// A pgwire session with no statement running for this long is closed
    /// with 57P05 (0: never, PostgreSQL's default).
    pub idle_session_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            segment_size_bytes: 64 * 1024 * 1024,
            max_statement_bytes: 256 * 1024 * 1024,
            append_queue_depth: 1024,
            max_connections: 512,
            max_request_bytes: 16 * 1024 * 1024,
            max_request_records: 100_000,
            http_ingest_concurrency: 16,
            http_max_connections: 1024,
            http_header_timeout_ms: 30_000,
            retention_check_interval_ms: 10_000,
            sink_max_open_files: 64,
            sink_max_buffered_bytes: 256 * 1024 * 1024,
            upload_part_size_bytes: 10 * 1024 * 1024,
            compaction_grace_ms: 60_000,
            query_memory_bytes: physical_memory_bytes().map_or(2 << 30, |m| (m / 4).max(256 << 20)),
            query_spill_bytes: 64 << 30,
            statement_timeout_ms: 0,
            startup_timeout_ms: 10_000,
            idle_session_timeout_ms: 0,
        }
    }
}

/// The machine's memory (`MemTotal` in /proc/meminfo), if known.
fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What the command line (and environment, through clap) set explicitly.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub pg_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub password_file: Option<PathBuf>,
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    pg_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    #[serde(default)]
    s3: S3Config,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    auth: AuthConfig,
    tls: Option<TlsConfig>,
}

impl Config {
    /// Resolves flags/env over the optional file over the defaults.
    pub fn load(overrides: Overrides) -> Result<Config> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let default_addr = |s: &str| -> SocketAddr {
            // The defaults are literals that always parse.
            s.parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        if file.limits.upload_part_size_bytes < MIN_UPLOAD_PART_SIZE_BYTES {
            return Err(Error::InvalidParameter(format!(
                "limits.upload_part_size_bytes must be at least {MIN_UPLOAD_PART_SIZE_BYTES} (S3's smallest part)"
            )));
        }
        let mut auth = file.auth;
        if overrides.password_file.is_some() {
            auth.password_file = overrides.password_file;
        }
        let config = Config {
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            pg_addr: overrides
                .pg_addr
                .or(file.pg_addr)
                .unwrap_or_else(|| default_addr(DEFAULT_PG_ADDR)),
            http_addr: overrides
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| default_addr(DEFAULT_HTTP_ADDR)),
            s3: file.s3,
            limits: file.limits,
            auth,
            tls: file.tls,
        };
        config.check_exposure()?;
        Ok(config)
    }

    /// Fails closed (Redis's protected mode is the model): without a
    /// password, only loopback addresses are served, since anyone who
    /// reaches a port would own the server.
    fn check_exposure(&self) -> Result<()> {
        // With [auth], every HTTP request but /health needs a key.
        if !self.auth.enabled() && !self.http_addr.ip().is_loopback() {
            return Err(Error::InvalidParameter(format!(
                "refusing to serve http_addr {} without [auth]: anyone who reaches it could write and drop \
                 streams. Add [[auth.access_keys]] (and [auth] password_file) or serve a loopback address",
                self.http_addr
            )));
        }
        if self.auth.password_file.is_none() && !self.pg_addr.ip().is_loopback() {
            return Err(Error::InvalidParameter(format!(
                "refusing to serve pg_addr {} without a password: anyone who reaches it would own the server. \
                 Set [auth] password_file (or --password-file) to a file (mode 600) holding the password of the \
                 superuser role \"sluice\", or serve a loopback address",
                self.pg_addr
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for key in &self.auth.access_keys {
            if key.id.is_empty() || !ids.insert(key.id.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "auth.access_keys: id {:?} is empty or listed twice",
                    key.id
                )));
            }
        }
        Ok(())
    }

    /// A configuration for tests and embedding: given data dir, ports 0.
    pub fn ephemeral(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            pg_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            s3: S3Config::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidParameter(format!("cannot read config file {}: {e}", path.display()))
    })?;
    toml::from_str(&text).map_err(|e| {
        Error::InvalidParameter(format!("invalid config file {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\npg_addr = \"127.0.0.1:7000\"\n[s3]\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let cfg = Config::load(Overrides {
            config_file: Some(path),
            pg_addr: Some("127.0.0.1:7001".parse().unwrap()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(cfg.pg_addr.port(), 7001);
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(cfg.s3.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "pg_adr = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("pg_adr"), "{err}");
    }
}
