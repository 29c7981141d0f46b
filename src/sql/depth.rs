//! How deeply a statement's expressions can nest, estimated from its text
//! before anything recursive sees it.
//!
//! Parsing, planning, optimising and evaluating an expression all recurse
//! over its tree, so a deep enough tree overflows a thread's stack and
//! aborts the process. sqlparser bounds nesting by parentheses and
//! subqueries (50 levels), but builds an operator chain (`1+1+…+1`,
//! `a OR b OR …`, `x::t::t…`, `UNION ALL` or `JOIN` chains) in a loop,
//! so such a chain is as deep as it is long. This scan bounds both before
//! sqlparser runs, in one pass over the bytes without allocating, and the
//! statement is refused with 54001 (PostgreSQL's "stack depth limit
//! exceeded" class) instead.
//!
//! The estimate is an upper bound of the tree's depth: every open group
//! (parenthesis, bracket, CASE) counts one, plus the operators seen in
//! each open group since its last separator (comma, WHEN, THEN, ELSE),
//! because a chain of `n` operators at one level is a tree `n` deep.

use super::split::{span_at, Span};
use crate::error::{Error, Result};

/// The deepest estimate accepted. The server's threads have stacks sized
/// so that a tree this deep plans and runs (`server::WORKER_STACK_BYTES`).
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// Refuses `stmt` with 54001 if its expressions could nest deeper than
/// [`MAX_EXPRESSION_DEPTH`].
pub fn check(stmt: &str) -> Result<()> {
    match estimate(stmt, MAX_EXPRESSION_DEPTH) {
        depth if depth > MAX_EXPRESSION_DEPTH => Err(Error::TooComplex(format!(
            "statement too complex: its expressions nest more than {MAX_EXPRESSION_DEPTH} levels deep \
             (long chains of operators, UNIONs or JOINs count one level each); split it or use IN (…) lists"
        ))),
        _ => Ok(()),
    }
}

/// What opened a group, so that `END` closes only a `CASE`.
#[derive(Clone, Copy, PartialEq)]
enum Opener {
    Statement,
    Paren,
    Case,
}

struct Group {
    opener: Opener,
    /// Operators since the group's last separator.
    operators: usize,
}

/// The estimated depth of `sql`, counted up to just past `limit` (the
/// scan stops there, so a huge hostile statement costs no more).
fn estimate(sql: &str, limit: usize) -> usize {
    let bytes = sql.as_bytes();
    let mut groups = vec![Group {
        opener: Opener::Statement,
        operators: 0,
    }];
    // Kept equal to groups.len() + the sum of their operators.
    let mut depth = 1;
    let mut deepest = depth;
    let mut i = 0;
    while i < bytes.len() && deepest <= limit {
        if let Some(Span::Quoted(end) | Span::Comment(end)) = span_at(sql, i) {
            i = end;
            continue;
        }
        let b = bytes[i];
        match b {
            b'$' => {
                // A placeholder such as `$12`.
                i += 1;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            b'(' | b'[' => {
                open(&mut groups, &mut depth, Opener::Paren);
                i += 1;
            }
            b')' | b']' => {
                close(&mut groups, &mut depth, Opener::Paren);
                i += 1;
            }
            b',' => {
                separate(&mut groups, &mut depth);
                i += 1;
            }
            b if is_operator_byte(b) => {
                // A run like `<=`, `||`, `::` or `->>` is one operator.
                while bytes.get(i).copied().is_some_and(is_operator_byte)
                    && !(bytes[i] == b'-' && bytes.get(i + 1) == Some(&b'-'))
                    && !(bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*'))
                {
                    i += 1;
                }
                operator(&mut groups, &mut depth);
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                let start = i;
                while bytes.get(i).is_some_and(|&c| {
                    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
                }) {
                    i += 1;
                }
                word(&sql[start..i], &mut groups, &mut depth);
            }
            _ => i += 1,
        }
        deepest = deepest.max(depth);
    }
    deepest
}

fn is_operator_byte(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'|'
            | b'&'
            | b'^'
            | b'<'
            | b'>'
            | b'='
            | b'!'
            | b'~'
            | b'#'
            | b'@'
            | b':'
            | b'?'
    )
}

fn word(word: &str, groups: &mut Vec<Group>, depth: &mut usize) {
    const OPERATORS: [&str; 16] = [
        "AND",
        "OR",
        "NOT",
        "IS",
        "IN",
        "LIKE",
        "ILIKE",
        "BETWEEN",
        "SIMILAR",
        "COLLATE",
        "AT",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "JOIN",
        "OVERLAPS",
    ];
    const SEPARATORS: [&str; 3] = ["WHEN", "THEN", "ELSE"];
    if word.len() > 9 {
        return;
    }
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    if is("CASE") {
        open(groups, depth, Opener::Case);
    } else if is("END") {
        close(groups, depth, Opener::Case);
    } else if SEPARATORS.iter().any(|w| is(w)) {
        separate(groups, depth);
    } else if OPERATORS.iter().any(|w| is(w)) {
        operator(groups, depth);
    }
}

fn open(groups: &mut Vec<Group>, depth: &mut usize, opener: Opener) {
    groups.push(Group {
        opener,
        operators: 0,
    });
    *depth += 1;
}

fn close(groups: &mut Vec<Group>, depth: &mut usize, opener: Opener) {
    // An unbalanced closer is the parser's to report; the outermost
    // group stays.
    if groups.len() > 1 && groups.last().is_some_and(|g| g.opener == opener) {
        if let Some(group) = groups.pop() {
            *depth -= 1 + group.operators;
        }
    }
}

fn separate(groups: &mut [Group], depth: &mut usize) {
    if let Some(group) = groups.last_mut() {
        *depth -= group.operators;
        group.operators = 0;
    }
}

fn operator(groups: &mut [Group], depth: &mut usize) {
    if let Some(group) = groups.last_mut() {
        group.operators += 1;
        *depth += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(op: &str, n: usize) -> String {
        vec!["1"; n].join(op)
    }

    fn chain(op: &str, n: usize) -> String {
        format!("SELECT {}", terms(op, n))
    }

    #[test]
    fn long_chains_are_refused_with_54001() {
        for sql in [
            chain("+", 2000),
            chain(" OR ", 1500),
            chain(" || ", 1200),
            format!("SELECT 1{}", "::int".repeat(1200)),
            format!("SELECT a FROM t{}", " JOIN t USING (a)".repeat(1100)),
            vec!["SELECT 1"; 1100].join(" UNION ALL "),
            format!("SELECT CASE WHEN {} THEN 1 END", terms(" AND ", 1100)),
            format!("SELECT f({})", terms("*", 1100)),
        ] {
            let err = check(&sql).unwrap_err();
            assert_eq!(err.sqlstate(), "54001", "{}", &sql[..60]);
            assert!(err.to_string().starts_with("statement too complex"));
        }
    }

    #[test]
    fn wide_statements_pass() {
        let many_values = format!(
            "INSERT INTO t VALUES {}",
            vec!["(-1, 'a+b', 2.5, now())"; 20_000].join(", ")
        );
        let in_list = format!(
            "SELECT * FROM t WHERE a IN ({})",
            (0..50_000)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let case = format!(
            "SELECT CASE {} ELSE 0 END",
            (0..2000)
                .map(|n| format!("WHEN a = {n} THEN {n} + 1"))
                .collect::<String>()
        );
        let ors = format!("SELECT 1 WHERE {}", terms(" OR ", 400));
        for sql in [many_values, in_list, case, ors] {
            check(&sql).unwrap();
        }
        // Operators inside strings, comments and dollar quotes are text.
        let quoted = format!(
            "SELECT '{}', $${}$$ /* {} */ -- {}\n",
            "+".repeat(5000),
            "+1".repeat(5000),
            "+1".repeat(5000),
            "+1".repeat(5000)
        );
        check(&quoted).unwrap();
        assert_eq!(estimate("SELECT $1 + $2", 10), 2);
    }

    #[test]
    fn the_scan_stops_past_the_limit() {
        assert_eq!(estimate(&chain("+", 1_000_000), 10), 11);
    }
}
