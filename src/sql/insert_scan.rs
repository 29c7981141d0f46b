//! A scanner for the common shape of ingest statements, `INSERT INTO t
//! [(cols)] VALUES (literal, …), …`, that avoids building a SQL syntax tree
//! per literal. Anything outside that shape (comments, expressions,
//! `E'…'` strings, casts, RETURNING …) yields `None`, and the statement
//! goes through the full SQL parser instead ([`super::insert`]).

use super::statement::InsertValues;

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn keyword(&mut self, word: &str) -> Option<()> {
        self.skip_ws();
        let end = self.i + word.len();
        let candidate = self.s.get(self.i..end)?;
        let boundary = self
            .s
            .get(end)
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
        (candidate.eq_ignore_ascii_case(word.as_bytes()) && boundary).then(|| self.i = end)
    }

    /// An identifier: unquoted ones fold to lower case.
    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'"') {
            let mut out = Vec::new();
            self.i += 1;
            loop {
                match *self.s.get(self.i)? {
                    b'"' if self.s.get(self.i + 1) == Some(&b'"') => {
                        out.push(b'"');
                        self.i += 2;
                    }
                    b'"' => {
                        self.i += 1;
                        return String::from_utf8(out).ok();
                    }
                    b => {
                        out.push(b);
                        self.i += 1;
                    }
                }
            }
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || self.s[self.i] == b'$')
        {
            self.i += 1;
        }
        if start == self.i || self.s[start].is_ascii_digit() {
            return None;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_lowercase())
    }

    /// A literal: `'text'`, a number, NULL, TRUE or FALSE.
    fn literal(&mut self) -> Option<Option<String>> {
        match self.peek()? {
            b'\'' => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match *self.s.get(self.i)? {
                        b'\'' if self.s.get(self.i + 1) == Some(&b'\'') => {
                            out.push(b'\'');
                            self.i += 2;
                        }
                        b'\'' => {
                            self.i += 1;
                            return String::from_utf8(out).ok().map(Some);
                        }
                        b => {
                            out.push(b);
                            self.i += 1;
                        }
                    }
                }
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => {
                let start = self.i;
                if matches!(self.s[self.i], b'-' | b'+') {
                    self.i += 1;
                }
                let digits = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit()
                        || self.s[self.i] == b'.'
                        || ((self.s[self.i] == b'e' || self.s[self.i] == b'E') && self.i > digits)
                        || ((self.s[self.i] == b'-' || self.s[self.i] == b'+')
                            && matches!(self.s[self.i - 1], b'e' | b'E')))
                {
                    self.i += 1;
                }
                (self.i > digits)
                    .then(|| Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
            }
            _ => {
                if self.keyword("null").is_some() {
                    Some(None)
                } else if self.keyword("true").is_some() {
                    Some(Some("true".into()))
                } else if self.keyword("false").is_some() {
                    Some(Some("false".into()))
                } else {
                    None
                }
            }
        }
    }
}

/// Scans a literal-only INSERT; `None` when the statement has any other shape.
pub fn scan_insert(stmt: &str) -> Option<InsertValues> {
    let mut p = Scanner {
        s: stmt.as_bytes(),
        i: 0,
    };
    p.keyword("insert")?;
    p.keyword("into")?;
    let mut table = p.ident()?;
    if p.peek() == Some(b'.') {
        p.i += 1;
        if table != "public" {
            return None;
        }
        table = p.ident()?;
    }
    let mut columns = None;
    if p.eat(b'(').is_some() {
        let mut cols = vec![p.ident()?];
        while p.eat(b',').is_some() {
            cols.push(p.ident()?);
        }
        p.eat(b')')?;
        columns = Some(cols);
    }
    p.keyword("values")?;
    let mut rows = Vec::new();
    loop {
        p.eat(b'(')?;
        let mut row = vec![p.literal()?];
        while p.eat(b',').is_some() {
            row.push(p.literal()?);
        }
        p.eat(b')')?;
        rows.push(row);
        if p.eat(b',').is_none() {
            break;
        }
    }
    let _ = p.eat(b';');
    (p.peek().is_none()).then_some(InsertValues {
        table,
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_the_common_shape() {
        let s = scan_insert(
            "insert into Public.Clicks (A, \"Url\") VALUES ('it''s', -1.5e3), (NULL, TRUE) ,('x',42);",
        )
        .unwrap();
        assert_eq!(s.table, "clicks");
        assert_eq!(s.columns, Some(vec!["a".into(), "Url".into()]));
        assert_eq!(
            s.rows,
            vec![
                vec![Some("it's".into()), Some("-1.5e3".into())],
                vec![None, Some("true".into())],
                vec![Some("x".into()), Some("42".into())],
            ]
        );
    }

    #[test]
    fn anything_else_is_left_to_the_parser() {
        for sql in [
            "INSERT INTO t VALUES (1 + 1)",
            "INSERT INTO t VALUES (E'a\\tb')",
            "INSERT INTO t VALUES ('a') RETURNING *",
            "INSERT INTO t SELECT 1",
            "INSERT INTO t VALUES (now())",
            "INSERT INTO t VALUES ('a'::text)",
            "INSERT INTO t VALUES (1) -- note",
            "INSERT INTO other.t VALUES (1)",
            "INSERT INTO t VALUES ('unterminated)",
            "INSERT INTO t VALUES ($1)",
        ] {
            assert_eq!(scan_insert(sql), None, "{sql}");
        }
    }
}
