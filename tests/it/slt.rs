//! Runs every `sql/**/*.slt` file over pgwire (simple protocol) against a
//! fresh server per file. Errors read "SQLSTATE: message", so a script can
//! assert codes: `statement error 42P01: relation "x" does not exist`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::SimpleQueryMessage;

use crate::harness::Server;

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

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("sql dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .slt files under {}", root.display());
    let mut failures = Vec::new();
    for file in &files {
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
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
