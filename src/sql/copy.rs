//! Parsing `COPY`: `COPY t [(cols)] FROM STDIN [WITH] (options)`,
//! `COPY t [(cols)] TO STDOUT …` and `COPY (query) TO STDOUT …`, with the
//! modern option list and the pre-9.0 words (`CSV`, `HEADER`, `DELIMITER
//! 'x'`, `NULL 'x'`) that psql's `\copy` passes through.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    /// Postgres's binary COPY format (FROM STDIN only).
    Binary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub header: bool,
    pub delimiter: u8,
    pub null: String,
    pub quote: u8,
    pub escape: u8,
    /// `ON_ERROR 'dead_letter'`: bad rows go to `sluice.errors`, the rest is kept.
    pub dead_letter: bool,
    /// Columns whose quoted empty string also means NULL (CSV).
    pub force_null: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    Table {
        name: String,
        columns: Option<Vec<String>>,
    },
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStatement {
    pub source: CopySource,
    /// `FROM STDIN` (true) or `TO STDOUT` (false).
    pub from_stdin: bool,
    pub options: CopyOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Str(String),
    Punct(char),
}

fn tokenize(s: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            // Comments separate tokens, as in the server's grammar.
            i = chars[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(chars.len(), |p| i + p + 1);
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i = skip_block_comment(&chars, i);
        } else if c == '\'' || ((c == 'E' || c == 'e') && chars.get(i + 1) == Some(&'\'')) {
            let escapes = c != '\'';
            i += if escapes { 2 } else { 1 };
            let mut text = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(Error::Syntax("unterminated quoted string in COPY".into()));
                };
                if escapes && ch == '\\' {
                    let next = chars.get(i + 1).copied().unwrap_or('\\');
                    text.push(match next {
                        't' => '\t',
                        'n' => '\n',
                        'r' => '\r',
                        other => other,
                    });
                    i += 2;
                } else if ch == '\'' && chars.get(i + 1) == Some(&'\'') {
                    text.push('\'');
                    i += 2;
                } else if ch == '\'' {
                    i += 1;
                    break;
                } else {
                    text.push(ch);
                    i += 1;
                }
            }
            out.push(Token::Str(text));
        } else if c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == '"')
                .ok_or_else(|| Error::Syntax("unterminated quoted identifier in COPY".into()))?;
            out.push(Token::Quoted(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

/// Parses a COPY statement (the caller has seen that it starts with COPY).
pub fn parse_copy(stmt: &str) -> Result<CopyStatement> {
    let body = super::strip_comments(stmt).trim_end_matches(';');
    let after_copy = super::strip_comments(&body[4..]);
    // `COPY (query) TO STDOUT`: take the query text up to the matching paren.
    let (source, rest) = if after_copy.starts_with('(') {
        let end = matching_paren(after_copy)?;
        (
            CopySource::Query(after_copy[1..end].trim().to_string()),
            &after_copy[end + 1..],
        )
    } else {
        (
            CopySource::Table {
                name: String::new(),
                columns: None,
            },
            after_copy,
        )
    };
    let tokens = tokenize(rest)?;
    let mut t = tokens.iter().peekable();
    let source = match source {
        CopySource::Query(q) => CopySource::Query(q),
        CopySource::Table { .. } => {
            let name = match t.next() {
                Some(Token::Word(w)) => {
                    let w = w.to_lowercase();
                    w.strip_prefix("public.").map(str::to_string).unwrap_or(w)
                }
                Some(Token::Quoted(q)) => q.clone(),
                _ => return Err(Error::Syntax("COPY needs a table name or a (query)".into())),
            };
            let mut columns = None;
            if t.peek() == Some(&&Token::Punct('(')) {
                t.next();
                let mut cols = Vec::new();
                loop {
                    match t.next() {
                        Some(Token::Word(w)) => cols.push(w.to_lowercase()),
                        Some(Token::Quoted(q)) => cols.push(q.clone()),
                        Some(Token::Punct(',')) => {}
                        Some(Token::Punct(')')) => break,
                        _ => return Err(Error::Syntax("malformed column list in COPY".into())),
                    }
                }
                columns = Some(cols);
            }
            CopySource::Table { name, columns }
        }
    };
    let word = |tok: Option<&Token>| match tok {
        Some(Token::Word(w)) => w.to_uppercase(),
        _ => String::new(),
    };
    let from_stdin = match (word(t.next()).as_str(), word(t.next()).as_str()) {
        ("FROM", "STDIN") => true,
        ("TO", "STDOUT") => false,
        // As PostgreSQL answers a role that may not reach server files.
        ("FROM", _) | ("TO", _) => return Err(Error::InsufficientPrivilege(
            "COPY to or from a file is not allowed: the server's files are not SQL's; COPY reads only FROM STDIN and writes only TO STDOUT (use psql's \\copy for files)"
                .into(),
        )),
        _ => return Err(Error::Syntax("COPY needs FROM STDIN or TO STDOUT".into())),
    };
    if from_stdin && matches!(source, CopySource::Query(_)) {
        return Err(Error::Syntax("COPY (query) works only TO STDOUT".into()));
    }
    let mut raw: Vec<(String, Option<String>)> = Vec::new();
    if matches!(t.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("WITH")) {
        t.next();
    }
    if t.peek() == Some(&&Token::Punct('(')) {
        t.next();
        loop {
            let key = match t.next() {
                Some(Token::Word(w)) => w.to_lowercase(),
                Some(Token::Punct(')')) => break,
                Some(Token::Punct(',')) => continue,
                other => {
                    return Err(Error::Syntax(format!(
                        "unexpected {other:?} in COPY options"
                    )))
                }
            };
            let value = match t.peek() {
                Some(Token::Word(w)) => Some(w.clone()),
                Some(Token::Str(s)) => Some(s.clone()),
                Some(Token::Quoted(q)) => Some(q.clone()),
                Some(Token::Punct('(')) => {
                    t.next();
                    let mut cols = Vec::new();
                    for tok in t.by_ref() {
                        match tok {
                            Token::Punct(')') => break,
                            Token::Word(w) => cols.push(w.to_lowercase()),
                            Token::Quoted(q) => cols.push(q.clone()),
                            _ => {}
                        }
                    }
                    raw.push((key, Some(cols.join(","))));
                    continue;
                }
                _ => None,
            };
            if value.is_some() {
                t.next();
            }
            raw.push((key, value));
        }
    } else {
        // Pre-9.0 words: CSV, HEADER, BINARY, DELIMITER [AS] 'x', NULL [AS] 'x'.
        while let Some(tok) = t.next() {
            let w = word(Some(tok)).to_lowercase();
            match w.as_str() {
                "csv" => raw.push(("format".into(), Some("csv".into()))),
                "binary" => raw.push(("format".into(), Some("binary".into()))),
                "header" => raw.push(("header".into(), None)),
                "delimiter" | "null" | "quote" | "escape" => {
                    if matches!(t.peek(), Some(Token::Word(a)) if a.eq_ignore_ascii_case("AS")) {
                        t.next();
                    }
                    match t.next() {
                        Some(Token::Str(s)) => raw.push((w, Some(s.clone()))),
                        _ => {
                            return Err(Error::Syntax(format!(
                                "COPY option {w} needs a quoted value"
                            )))
                        }
                    }
                }
                _ => return Err(Error::Syntax(format!("unexpected {tok:?} in COPY"))),
            }
        }
    }
    Ok(CopyStatement {
        source,
        from_stdin,
        options: options_from(&raw)?,
    })
}

/// Index just past a (nested) block comment opening at `open`.
fn skip_block_comment(chars: &[char], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

fn matching_paren(s: &str) -> Result<usize> {
    let mut depth = 0;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(Error::Syntax("unbalanced parentheses in COPY".into()))
}

const COPY_OPTIONS: &str = "format, header, delimiter, null, quote, escape, force_null, on_error";

fn options_from(raw: &[(String, Option<String>)]) -> Result<CopyOptions> {
    let format = match raw
        .iter()
        .find(|(k, _)| k == "format")
        .and_then(|(_, v)| v.as_deref())
    {
        None => CopyFormat::Text,
        Some(f) if f.eq_ignore_ascii_case("text") => CopyFormat::Text,
        Some(f) if f.eq_ignore_ascii_case("csv") => CopyFormat::Csv,
        Some(f) if f.eq_ignore_ascii_case("binary") => CopyFormat::Binary,
        Some(f) => {
            return Err(Error::FeatureNotSupported(format!(
                "COPY format \"{f}\" is not supported; use text, csv or binary"
            )))
        }
    };
    let mut options = CopyOptions {
        format,
        header: false,
        delimiter: if format == CopyFormat::Csv {
            b','
        } else {
            b'\t'
        },
        null: if format == CopyFormat::Csv {
            String::new()
        } else {
            "\\N".into()
        },
        quote: b'"',
        escape: b'"',
        dead_letter: false,
        force_null: Vec::new(),
    };
    let mut escape_set = false;
    let single_byte = |key: &str, v: &Option<String>| -> Result<u8> {
        match v.as_deref().map(str::as_bytes) {
            Some([b]) if b.is_ascii() => Ok(*b),
            _ => Err(Error::InvalidParameter(format!(
                "COPY {key} must be a single one-byte character"
            ))),
        }
    };
    for (key, value) in raw {
        match key.as_str() {
            "format" => {}
            "header" => {
                options.header = match value.as_deref().map(str::to_lowercase).as_deref() {
                    None | Some("true") | Some("on") | Some("1") => true,
                    Some("false") | Some("off") | Some("0") => false,
                    Some(other) => {
                        return Err(Error::InvalidParameter(format!(
                            "header requires a Boolean value, got \"{other}\""
                        )))
                    }
                }
            }
            "delimiter" => options.delimiter = single_byte("delimiter", value)?,
            "null" => options.null = value.clone().unwrap_or_default(),
            "quote" => options.quote = single_byte("quote", value)?,
            "escape" => {
                options.escape = single_byte("escape", value)?;
                escape_set = true;
            }
            "force_null" => {
                options.force_null = value
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "on_error" => {
                options.dead_letter = match value.as_deref().map(str::to_lowercase).as_deref() {
                    Some("stop") => false,
                    Some("dead_letter") | Some("ignore") => true,
                    other => {
                        return Err(Error::InvalidParameter(format!(
                            "ON_ERROR must be 'stop' or 'dead_letter', got {other:?}"
                        )))
                    }
                }
            }
            other => {
                return Err(Error::Syntax(format!(
                    "option \"{other}\" not recognized; valid COPY options: {COPY_OPTIONS}"
                )))
            }
        }
    }
    if !escape_set {
        options.escape = options.quote;
    }
    if options.format == CopyFormat::Text && options.header && options.delimiter == b'\t' {
        // Postgres allows HEADER with text format since 15; nothing to adjust.
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_and_legacy_options() {
        let c = parse_copy("COPY clicks (a, \"B\") FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', NULL 'NA', ON_ERROR 'dead_letter')").unwrap();
        assert_eq!(
            c.source,
            CopySource::Table {
                name: "clicks".into(),
                columns: Some(vec!["a".into(), "B".into()])
            }
        );
        assert!(c.from_stdin);
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header && c.options.dead_letter);
        assert_eq!(c.options.delimiter, b';');
        assert_eq!(c.options.null, "NA");
        let legacy = parse_copy("copy public.t from stdin csv header delimiter as '|'").unwrap();
        assert_eq!(legacy.options.format, CopyFormat::Csv);
        assert!(legacy.options.header);
        assert_eq!(legacy.options.delimiter, b'|');
        let text = parse_copy("COPY t FROM STDIN;").unwrap();
        assert_eq!(text.options.delimiter, b'\t');
        assert_eq!(text.options.null, "\\N");
        let out =
            parse_copy("COPY (SELECT a FROM t WHERE b = ')') TO STDOUT WITH CSV HEADER").unwrap();
        assert_eq!(
            out.source,
            CopySource::Query("SELECT a FROM t WHERE b = ')'".into())
        );
        assert!(!out.from_stdin);
    }

    #[test]
    fn bad_copy_statements() {
        assert_eq!(
            parse_copy("COPY t FROM '/etc/passwd'")
                .unwrap_err()
                .sqlstate(),
            "42501"
        );
        assert_eq!(
            parse_copy("COPY t FROM STDIN (FORMAT parquet)")
                .unwrap_err()
                .sqlstate(),
            "0A000"
        );
        assert_eq!(
            parse_copy("COPY t FROM STDIN (FORMT csv)")
                .unwrap_err()
                .sqlstate(),
            "42601"
        );
        assert_eq!(
            parse_copy("COPY t FROM STDIN (DELIMITER 'ab')")
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
        assert_eq!(
            parse_copy("COPY (SELECT 1) FROM STDIN")
                .unwrap_err()
                .sqlstate(),
            "42601"
        );
    }
}
