//! Every statement kind sluice takes, run by a reader, a writer and an
//! admin in several spellings (case, comments between words, a newline
//! comment, a leading comment) over both protocols: a role below the
//! statement's group gets 42501, one at or above it is never refused for
//! privilege, and what no role may run is refused for all.

use crate::harness::sqlstate;
use crate::hostile::Roles;

/// What a statement needs.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Need {
    Reader,
    Writer,
    Admin,
    /// No role: the SQLSTATE every role gets.
    Never(&'static str),
}

/// Statements with `{k}` where a name must be new at each run.
const STATEMENTS: &[(&str, Need)] = &[
    ("SELECT count(*) FROM s", Need::Reader),
    ("SHOW STREAMS", Need::Reader),
    ("SHOW SINKS", Need::Reader),
    ("SHOW PIPELINES", Need::Reader),
    ("SELECT name FROM sluice.streams", Need::Reader),
    ("EXPLAIN SELECT n FROM s", Need::Reader),
    (
        "EXPLAIN CREATE STREAM d{k} AS SELECT n FROM s",
        Need::Reader,
    ),
    ("SET statement_timeout = 0", Need::Reader),
    ("BEGIN", Need::Reader),
    ("COMMIT", Need::Reader),
    ("INSERT INTO s VALUES (5)", Need::Writer),
    ("INSERT INTO s SELECT n FROM s WHERE n < 0", Need::Writer),
    (
        "EXPLAIN ANALYZE INSERT INTO s SELECT n FROM s WHERE n < 0",
        Need::Writer,
    ),
    ("PREPARE w{k} AS INSERT INTO s VALUES (6)", Need::Writer),
    ("CREATE STREAM a{k} (n BIGINT)", Need::Admin),
    ("CREATE STREAM IF NOT EXISTS s (n BIGINT)", Need::Admin),
    ("CREATE STREAM d{k} AS SELECT n FROM s", Need::Admin),
    ("ALTER STREAM s ADD COLUMN c{k} TEXT", Need::Admin),
    ("DROP STREAM IF EXISTS nothing_here", Need::Admin),
    (
        "CREATE SINK k{k} FROM s WITH (location = 'lake{k}')",
        Need::Admin,
    ),
    ("DROP SINK IF EXISTS nothing_here", Need::Admin),
    ("FLUSH SINK nothing_here", Need::Admin),
    ("CREATE TABLE t{k} AS SELECT 1 AS n", Need::Admin),
    ("DROP TABLE IF EXISTS nothing_here", Need::Admin),
    (
        "CREATE EXTERNAL TABLE e{k} STORED AS PARQUET LOCATION 'none{k}'",
        Need::Admin,
    ),
    (
        "CREATE ROLE r{k} LOGIN PASSWORD 'pw' IN ROLE sluice_reader",
        Need::Admin,
    ),
    ("DROP ROLE IF EXISTS nobody_here", Need::Admin),
    ("SET datafusion.execution.batch_size = 4096", Need::Admin),
    (
        "COPY s TO '/tmp/sluice-never-{k}.csv'",
        Need::Never("42501"),
    ),
    (
        "COPY (SELECT 1) TO '/tmp/sluice-never-{k}.csv'",
        Need::Never("42501"),
    ),
    ("DROP SCHEMA public CASCADE", Need::Never("42501")),
    ("CREATE VIEW v{k} AS SELECT 1", Need::Never("42501")),
    ("SELECT 1 INTO i{k}", Need::Never("42501")),
    (
        "SET datafusion.runtime.memory_limit = '1G'",
        Need::Never("55P02"),
    ),
];

/// The spellings of `sql`: as written, lower case, and with comments
/// between its words or before it.
fn spellings(sql: &str) -> Vec<String> {
    let words: Vec<&str> = sql.split(' ').collect();
    vec![
        sql.to_string(),
        sql.to_lowercase(),
        words.join("/**/"),
        words.join("--x\n"),
        format!("/* lead */ {}", words.join(" /* a */ ")),
    ]
}

#[tokio::test]
async fn each_statement_kind_needs_its_group_in_any_spelling() {
    let roles = Roles::start().await;
    let clients = [
        (&roles.reader, Need::Reader),
        (&roles.writer, Need::Writer),
        (&roles.admin, Need::Admin),
    ];
    let mut k = 0;
    for (template, need) in STATEMENTS {
        for spelled in spellings(template) {
            for (client, has) in clients {
                for extended in [false, true] {
                    k += 1;
                    let sql = spelled.replace("{k}", &k.to_string());
                    let result = if extended {
                        client.execute(&sql, &[]).await.map(|_| ())
                    } else {
                        client.batch_execute(&sql).await
                    };
                    let state = result.err().map(|e| sqlstate(&e));
                    let how = if extended { "extended" } else { "simple" };
                    match need {
                        Need::Never(code) => {
                            assert_eq!(state.as_deref(), Some(*code), "{how}: {sql}")
                        }
                        need if has < *need => {
                            assert_eq!(state.as_deref(), Some("42501"), "{how} {has:?}: {sql}")
                        }
                        _ => assert_ne!(state.as_deref(), Some("42501"), "{how}: {sql}"),
                    }
                }
            }
        }
    }
    assert!(std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("sluice-never-")));
}
