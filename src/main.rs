//! The `sluice` command: parses flags and hands over to `server::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::{Config, Overrides};

/// glibc raises its mmap threshold after every large free (up to 32 MiB),
/// so buffers of a megabyte or so (COPY chunks, encoded frames, query
/// batches) then come from per-thread arenas, which keep the pages: a 1M-row
/// COPY peaked ~40 MB higher than with the threshold fixed at 1 MiB, for
/// no measurable change in its speed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; it runs before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "SQL-first streaming ingestion and query engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (pgwire and HTTP) on a data directory.
    Serve {
        /// Where streams, the catalog and delivered data live [default: ./sluice-data]
        #[arg(long, env = "SLUICE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Postgres wire protocol address [default: 127.0.0.1:5433]
        #[arg(long, env = "SLUICE_PG_ADDR")]
        pg_addr: Option<SocketAddr>,
        /// HTTP API address [default: 127.0.0.1:8433]
        #[arg(long, env = "SLUICE_HTTP_ADDR")]
        http_addr: Option<SocketAddr>,
        /// TOML config file; flags and SLUICE_* variables override it
        #[arg(long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// File holding the password of the superuser role `sluice` (mode 600); clients then authenticate with SCRAM-SHA-256
        #[arg(long, env = "SLUICE_PASSWORD_FILE")]
        password_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        data_dir,
        pg_addr,
        http_addr,
        config,
        password_file,
    } = Cli::parse().command;
    let overrides = Overrides {
        config_file: config,
        data_dir,
        pg_addr,
        http_addr,
        password_file,
    };
    let result = Config::load(overrides).and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(sluice::server::WORKER_STACK_BYTES)
            .build()?
            .block_on(sluice::server::run(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}
