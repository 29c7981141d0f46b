//! Splits a simple-query string into statements at top-level semicolons,
//! honouring quotes, comments and dollar quoting, so that sluice statements
//! and DataFusion SQL can be mixed in one message.

/// Statements of `sql` in order, trimmed, empty ones dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => i = skip_quoted(bytes, i, b'\'', backslash_escapes(bytes, i)),
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' => i = skip_dollar_quoted(sql, i),
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

/// The first `n` words of a statement, upper-cased (for routing).
pub fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    strip_comments(stmt)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect()
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
    }
}
