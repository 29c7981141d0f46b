//! The SQL behaviour of sluice as sqllogictest scripts: runs every
//! `sql/**/*.slt` file over pgwire (simple protocol) against a fresh server
//! per file, files in parallel. Errors read "SQLSTATE: message", so a
//! script can assert codes: `statement error 42P01: relation "x" does not
//! exist`.
//!
//! ```text
//! cargo test --test slt                      # every file
//! cargo test --test slt -- sinks errors      # files whose path contains "sinks" or "errors"
//! cargo test --test slt -- sinks --complete  # rewrite their expected output from what sluice answers
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::SimpleQueryMessage;

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use harness::{files_with_extension, Server};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct Sluice {
    client: tokio_postgres::Client,
}

#[async_trait]
impl sqllogictest::AsyncDB for Sluice {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => SltError(format!("{}: {}", db.code().code(), db.message())),
                None => SltError(e.to_string()),
            })?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut affected = 0;
        let mut is_query = false;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => {
                    is_query = true;
                    columns = desc.len();
                }
                SimpleQueryMessage::Row(row) => {
                    is_query = true;
                    columns = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        if is_query {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(affected))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sluice"
    }
}

/// What the command line asks for: path filters (any one matching is
/// enough; none means every file) and `--complete`. Other flags (those
/// cargo's test harness would take) are ignored.
struct Args {
    filters: Vec<String>,
    complete: bool,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            filters: Vec::new(),
            complete: false,
        };
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--complete" => args.complete = true,
                flag if flag.starts_with('-') => {}
                filter => args.filters.push(filter.to_string()),
            }
        }
        args
    }

    fn selects(&self, path: &Path) -> bool {
        let path = path.to_string_lossy();
        self.filters.is_empty() || self.filters.iter().any(|f| path.contains(f.as_str()))
    }
}

/// Runs (or with `--complete` rewrites) one file on a server of its own.
async fn run_file(file: PathBuf, complete: bool) -> Result<(), String> {
    let server = Server::start();
    let conninfo = server.conninfo();
    let mut runner = sqllogictest::Runner::new(move || {
        let conninfo = conninfo.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .map_err(|e| SltError(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, SltError>(Sluice { client })
        }
    });
    let outcome = if complete {
        runner
            .update_test_file(
                &file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(&file)
            .await
            .map_err(|e| e.to_string())
    };
    outcome.map_err(|e| format!("{}: {e}", file.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = files_with_extension(&root, "slt");
    files.retain(|f| args.selects(f));
    if files.is_empty() {
        // A filter meant for other test binaries (`cargo test name`).
        println!("slt: no .slt file matches {:?}", args.filters);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slt: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    // Files run concurrently, each against a server process of its own.
    let outcomes = runtime.block_on(futures::future::join_all(
        files.iter().map(|f| run_file(f.clone(), args.complete)),
    ));
    let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    let verb = if args.complete { "completed" } else { "passed" };
    println!(
        "slt: {} of {} file(s) {verb} in {:.1} s",
        files.len() - failures.len(),
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    ExitCode::FAILURE
}
