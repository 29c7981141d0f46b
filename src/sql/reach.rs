//! Statements left to DataFusion that would reach past sluice's catalog or
//! the allowed locations are refused before DataFusion sees them (42501):
//! schema and database DDL (the catalog is shared, so one session's DROP
//! SCHEMA would hide every stream from every session), views and functions
//! (shared the same way), and COPY … TO a file in any form (EXPLAIN ANALYZE
//! runs it). Streams, sinks and tables are created with sluice's own
//! statements; writes into tables over files are refused by the tables.

use super::leading_words;
use crate::error::{Error, Result};

pub(super) fn check(stmt: &str) -> Result<()> {
    let words = leading_words(stmt, 8);
    let mut w: Vec<&str> = words.iter().map(String::as_str).collect();
    if w.first() == Some(&"EXPLAIN") {
        w.remove(0);
        while matches!(w.first(), Some(&"ANALYZE") | Some(&"VERBOSE")) {
            w.remove(0);
        }
        if w.first() == Some(&"FORMAT") {
            w.drain(..w.len().min(2));
        }
    }
    let refuse = |what: &str| Err(Error::InsufficientPrivilege(what.to_string()));
    match w.as_slice() {
        ["COPY", ..] => refuse(
            "COPY … TO a file is not allowed: the server's files are not SQL's; use COPY … TO STDOUT (psql: \\copy)",
        ),
        ["DROP" | "CREATE" | "ALTER", "SCHEMA" | "DATABASE" | "CATALOG", ..] => refuse(
            "schemas \"public\" and \"sluice\" are fixed: they are shared by every session and cannot be created, altered or dropped",
        ),
        ["CREATE", "VIEW" | "FUNCTION" | "TEMPORARY" | "TEMP" | "MATERIALIZED", ..]
        | ["CREATE", "OR", "REPLACE", ..]
        | ["DROP", "VIEW" | "FUNCTION", ..] => refuse(
            "views and functions would be shared by every session; create a stream (CREATE STREAM … AS SELECT) or a table (CREATE TABLE … AS SELECT)",
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn reaching_statements_are_refused_and_queries_pass() {
        for bad in [
            "DROP SCHEMA public CASCADE",
            "drop schema sluice cascade",
            "CREATE SCHEMA s",
            "EXPLAIN ANALYZE COPY (SELECT 'x') TO '/tmp/x.csv'",
            "explain analyze verbose copy (select 1) to '/tmp/y'",
            "/* c */ COPY (SELECT 1) TO '/tmp/z.csv' STORED AS CSV",
            "CREATE VIEW v AS SELECT 1",
            "CREATE OR REPLACE VIEW v AS SELECT 1",
            "DROP VIEW v",
        ] {
            let err = check(bad).unwrap_err();
            assert_eq!(err.sqlstate(), "42501", "{bad}");
        }
        for ok in [
            "SELECT 1",
            "EXPLAIN SELECT * FROM t",
            "WITH copy AS (SELECT 1) SELECT * FROM copy",
            "SET statement_timeout = 5",
            "SHOW ALL",
        ] {
            check(ok).unwrap();
        }
    }
}
