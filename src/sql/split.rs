//! Splits a simple-query string into statements at top-level semicolons,
//! honouring quotes, comments and dollar quoting, so that sluice statements
//! and DataFusion SQL can be mixed in one message.

/// What opens at a byte of SQL text: quoted text or a comment, each with
/// the index just past its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Span {
    Quoted(usize),
    Comment(usize),
}

/// The quoted text (`'…'`, `"…"`, `$tag$…$tag$`) or comment (`--…`,
/// `/* … */`) opening at `i`, if one does.
pub(super) fn span_at(sql: &str, i: usize) -> Option<Span> {
    let bytes = sql.as_bytes();
    Some(match bytes[i] {
        b'\'' => Span::Quoted(skip_quoted(bytes, i, b'\'', backslash_escapes(bytes, i))),
        b'"' => Span::Quoted(skip_quoted(bytes, i, b'"', false)),
        b'$' => match skip_dollar_quoted(sql, i) {
            end if end > i + 1 => Span::Quoted(end),
            _ => return None,
        },
        b'-' if bytes.get(i + 1) == Some(&b'-') => Span::Comment(
            bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |p| i + p + 1),
        ),
        b'/' if bytes.get(i + 1) == Some(&b'*') => Span::Comment(skip_block_comment(bytes, i)),
        _ => return None,
    })
}

/// Statements of `sql` in order, trimmed, empty ones dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(Span::Quoted(end) | Span::Comment(end)) = span_at(sql, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b';' => {
                push_trimmed(&mut out, &sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_trimmed(&mut out, &sql[start..]);
    out
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, stmt: &'a str) {
    let trimmed = stmt.trim();
    if !strip_comments(trimmed).is_empty() {
        out.push(trimmed);
    }
}

/// `E'...'` strings treat backslash as an escape.
fn backslash_escapes(bytes: &[u8], quote: usize) -> bool {
    quote > 0
        && matches!(bytes[quote - 1], b'e' | b'E')
        && (quote < 2 || !(bytes[quote - 2].is_ascii_alphanumeric() || bytes[quote - 2] == b'_'))
}

/// Index just past the closing quote (a doubled quote is an escaped one).
fn skip_quoted(bytes: &[u8], open: usize, quote: u8, backslash: bool) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if backslash && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn skip_block_comment(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i + 1 < bytes.len() {
        if bytes[i] == b'/' && bytes[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// `$tag$ ... $tag$`; a `$` that does not open a tag (like `$1`) is skipped.
fn skip_dollar_quoted(sql: &str, open: usize) -> usize {
    let rest = &sql[open + 1..];
    let tag_len = rest
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(rest.len());
    if rest.as_bytes().get(tag_len) != Some(&b'$')
        || rest[..tag_len].starts_with(|c: char| c.is_ascii_digit())
    {
        return open + 1;
    }
    let delimiter = &sql[open..open + tag_len + 2];
    let body = open + delimiter.len();
    sql[body..]
        .find(delimiter)
        .map_or(sql.len(), |p| body + p + delimiter.len())
}

/// `sql` with every comment replaced by one space (borrowed when it has
/// none), so that sluice's own grammars read `DROP/**/STREAM s` as the
/// server's does.
pub fn blank_comments(sql: &str) -> std::borrow::Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < sql.len() {
        match span_at(sql, i) {
            Some(Span::Quoted(end)) => i = end,
            Some(Span::Comment(end)) => {
                let text = out.get_or_insert_with(|| String::with_capacity(sql.len()));
                text.push_str(&sql[copied..i]);
                text.push(' ');
                i = end;
                copied = i;
            }
            None => i += 1,
        }
    }
    match out {
        Some(mut text) => {
            text.push_str(&sql[copied..]);
            std::borrow::Cow::Owned(text)
        }
        None => std::borrow::Cow::Borrowed(sql),
    }
}

/// The statement without leading comments and whitespace.
pub fn strip_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |p| &rest[p + 1..]);
        } else if s.starts_with("/*") {
            let end = skip_block_comment(s.as_bytes(), 0);
            s = &s[end..];
        } else {
            return s;
        }
    }
}

/// The first `n` words of a statement, upper-cased (for routing). A
/// comment separates words wherever it stands, as the server's grammar
/// reads it: `COPY/**/t` is `COPY t`, never one word that routes nowhere.
pub fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    let mut words = Vec::with_capacity(n);
    let mut rest = stmt;
    while words.len() < n {
        loop {
            let trimmed = strip_comments(rest).trim_start_matches(['(', ';']);
            if trimmed.len() == rest.len() {
                break;
            }
            rest = trimmed;
        }
        let end = rest
            .char_indices()
            .find(|&(i, c)| {
                c.is_whitespace()
                    || c == '('
                    || c == ';'
                    || rest[i..].starts_with("--")
                    || rest[i..].starts_with("/*")
            })
            .map_or(rest.len(), |(i, _)| i);
        if end == 0 {
            break;
        }
        words.push(rest[..end].to_ascii_uppercase());
        rest = &rest[end..];
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let sql = "SELECT 'a;b'; SELECT \"x;y\" FROM t -- c;d\n; /* e; /* f; */ g; */ SELECT $$h;i$$; SELECT $tag$ ; $tag$;;  ";
        let parts = split_statements(sql);
        assert_eq!(
            parts,
            vec![
                "SELECT 'a;b'",
                "SELECT \"x;y\" FROM t -- c;d",
                "/* e; /* f; */ g; */ SELECT $$h;i$$",
                "SELECT $tag$ ; $tag$"
            ]
        );
    }

    #[test]
    fn escapes_and_placeholders() {
        assert_eq!(
            split_statements("SELECT 'it''s;'; SELECT E'\\';'"),
            vec!["SELECT 'it''s;'", "SELECT E'\\';'"]
        );
        assert_eq!(
            split_statements("SELECT $1; SELECT $2"),
            vec!["SELECT $1", "SELECT $2"]
        );
        assert!(split_statements(" ; -- only a comment\n").is_empty());
    }

    #[test]
    fn leading_words_skip_comments() {
        assert_eq!(
            leading_words("-- hi\n /* x */ create   stream(a int)", 2),
            vec!["CREATE", "STREAM"]
        );
        assert_eq!(
            leading_words("COPY/**/clicks TO '/x'", 3),
            vec!["COPY", "CLICKS", "TO"]
        );
        assert_eq!(
            leading_words("drop--x\n/* a /* b */ */schema(public", 3),
            vec!["DROP", "SCHEMA", "PUBLIC"]
        );
        assert_eq!(leading_words("((select 1", 2), vec!["SELECT", "1"]);
        assert!(leading_words("  -- only\n", 1).is_empty());
    }

    #[test]
    fn comments_become_spaces_outside_quotes() {
        assert_eq!(
            blank_comments("drop/**/stream--x\ns /* a /* b */ */;"),
            "drop stream s  ;"
        );
        let quoted = "SELECT '/*', \"--\", $$--$$ FROM t";
        assert!(matches!(
            blank_comments(quoted),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
