//! Statements about the session rather than data: savepoints and
//! DEALLOCATE of protocol-level prepared statements. sluice
//! stores each statement when it completes (see README, "Transactions"),
//! so SAVEPOINT and RELEASE are accepted as markers, and ROLLBACK TO says
//! in a notice that it undoes nothing: clients that wrap work in
//! savepoints (SQLAlchemy, psycopg's `transaction()`) run unchanged.

use super::leading_words;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Savepoint {
    /// The command tag PostgreSQL answers with.
    pub tag: &'static str,
    /// What to tell a client that may expect more.
    pub notice: Option<String>,
}

/// `SAVEPOINT name`, `RELEASE [SAVEPOINT] name`, `ROLLBACK [WORK |
/// TRANSACTION] TO [SAVEPOINT] name`; `None` if `stmt` is none of them.
pub fn parse_savepoint(stmt: &str) -> Option<Result<Savepoint>> {
    let words = leading_words(stmt, 6);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let (tag, rest) = match w.as_slice() {
        ["SAVEPOINT", rest @ ..] => ("SAVEPOINT", rest),
        ["RELEASE", "SAVEPOINT", rest @ ..] | ["RELEASE", rest @ ..] => ("RELEASE", rest),
        ["ROLLBACK", "WORK" | "TRANSACTION", "TO", rest @ ..] | ["ROLLBACK", "TO", rest @ ..] => {
            ("ROLLBACK", rest)
        }
        _ => return None,
    };
    let rest = match rest {
        ["SAVEPOINT", rest @ ..] => rest,
        rest => rest,
    };
    if rest.len() != 1 {
        return Some(Err(Error::Syntax(format!(
            "syntax error: {tag} takes one savepoint name"
        ))));
    }
    let notice = (tag == "ROLLBACK").then(|| {
        "sluice stores each statement when it completes: ROLLBACK TO SAVEPOINT undoes nothing"
            .to_string()
    });
    Some(Ok(Savepoint { tag, notice }))
}

/// What `DEALLOCATE [PREPARE] name | ALL` frees.
#[derive(Debug, Clone, PartialEq)]
pub enum Deallocate {
    All,
    Named(String),
}

/// `DEALLOCATE`, if `stmt` is one; the name as written (quotes dropped).
pub fn parse_deallocate(stmt: &str) -> Option<Deallocate> {
    let body = super::strip_comments(stmt)
        .trim()
        .trim_end_matches(';')
        .trim();
    let mut words = body.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("DEALLOCATE") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("PREPARE") {
        name = words.next()?;
    }
    if words.next().is_some() {
        return None;
    }
    if name.eq_ignore_ascii_case("ALL") {
        return Some(Deallocate::All);
    }
    Some(Deallocate::Named(name.trim_matches('"').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_statements_are_recognised() {
        let tag = |s: &str| parse_savepoint(s).map(|r| r.map(|p| p.tag).map_err(|e| e.sqlstate()));
        assert_eq!(tag("SAVEPOINT \"_pg3_1\""), Some(Ok("SAVEPOINT")));
        assert_eq!(tag("release savepoint a"), Some(Ok("RELEASE")));
        assert_eq!(tag("RELEASE a"), Some(Ok("RELEASE")));
        assert_eq!(tag("ROLLBACK TO SAVEPOINT a"), Some(Ok("ROLLBACK")));
        assert_eq!(tag("ROLLBACK WORK TO a"), Some(Ok("ROLLBACK")));
        assert_eq!(tag("ROLLBACK"), None);
        assert_eq!(tag("SELECT 1"), None);
        assert_eq!(tag("SAVEPOINT"), Some(Err("42601")));
        assert_eq!(parse_deallocate("DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(
            parse_deallocate("deallocate prepare \"_pg3_0\""),
            Some(Deallocate::Named("_pg3_0".into()))
        );
        assert_eq!(parse_deallocate("SELECT 1"), None);
        let rollback = parse_savepoint("ROLLBACK TO a").unwrap().unwrap();
        assert!(rollback.notice.unwrap().contains("undoes nothing"));
    }
}
