//! Sink and table statements: `CREATE SINK … FROM … WITH (…)`,
//! `FLUSH SINK`, `DROP SINK|TABLE`, and `CREATE TABLE … AS SELECT`.
//! Options are validated as they are parsed (`sink_options`), so a bad
//! one fails before anything exists.

use datafusion::sql::sqlparser::ast::{CreateTableOptions, ObjectName, SqlOption, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::sink_options::{apply_sink_option, postgres_options, SinkOptions, MAX_HTTP_BATCH_ROWS};
use super::{object_name, option_text, parse_one, strip_comments};
use crate::error::{Error, Result};

/// A validated `CREATE SINK`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    /// The stream it delivers: a name in `public`, or `sluice.errors`.
    pub source: String,
    pub options: SinkOptions,
}

/// A validated `CREATE TABLE … AS SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTableAs {
    pub name: String,
    pub if_not_exists: bool,
    pub query: String,
    /// `WITH (location = …)`; default `<data-dir>/warehouse/<name>/`.
    pub location: Option<String>,
}

fn syntax(e: impl std::fmt::Display) -> Error {
    Error::Syntax(e.to_string().replace("sql parser error: ", ""))
}

/// A source relation name: a stream in `public`, or `sluice.errors`.
fn source_name(name: &ObjectName) -> Result<String> {
    let text = name.to_string().to_lowercase();
    if text == "sluice.errors" {
        return Ok(text);
    }
    object_name(name)
}

pub(super) fn parse_create_sink(stmt: &str) -> Result<CreateSink> {
    let mut p = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(strip_comments(stmt))
        .map_err(syntax)?;
    p.expect_keyword(Keyword::CREATE).map_err(syntax)?;
    p.next_token(); // SINK, checked by the router
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false).map_err(syntax)?)?;
    if name.contains('.') {
        return Err(Error::InvalidParameter(format!(
            "sink name \"{name}\" must not contain a dot"
        )));
    }
    p.expect_keyword(Keyword::FROM).map_err(|_| {
        Error::Syntax(format!(
            "expected CREATE SINK {name} FROM stream WITH (location = '…', …)"
        ))
    })?;
    let source = source_name(&p.parse_object_name(false).map_err(syntax)?)?;
    let options = p.parse_options(Keyword::WITH).map_err(syntax)?;
    if p.peek_token().token != Token::EOF {
        return Err(Error::Syntax(format!(
            "unexpected {} after CREATE SINK … WITH (…)",
            p.peek_token().token
        )));
    }
    let mut parsed = SinkOptions::default();
    for opt in &options {
        apply_sink_option(&mut parsed, opt)?;
    }
    if parsed.location.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "sink \"{name}\" needs WITH (location = 's3://bucket/prefix/' | 'file:///dir' | 'dir')"
        )));
    }
    let lower = parsed.location.to_lowercase();
    let given = |key: &str| {
        options
            .iter()
            .any(|o| matches!(o, SqlOption::KeyValue { key: k, .. } if k.value.eq_ignore_ascii_case(key)))
    };
    if lower.starts_with("postgresql://") || lower.starts_with("postgres://") {
        postgres_options(&mut parsed, given("format"), &given)?;
    } else if given("table") || given("password_env") || given("password_file") {
        return Err(Error::InvalidParameter(
            "table, password_env and password_file are options of PostgreSQL sinks (location = 'postgresql://user@host:port/db')".into(),
        ));
    }
    if parsed.format.is_http() && parsed.endpoint.batch_rows > MAX_HTTP_BATCH_ROWS {
        return Err(Error::InvalidParameter(format!(
            "batch_rows: an HTTP request carries at most {MAX_HTTP_BATCH_ROWS} records"
        )));
    }
    let http = lower.starts_with("http://") || lower.starts_with("https://");
    match (http, parsed.format.is_http()) {
        (true, false) => {
            return Err(Error::InvalidParameter(format!(
                "location '{}' is an HTTP endpoint: add format = 'firehose' (Firehose's HTTP endpoint protocol) or 'ndjson'",
                parsed.location
            )))
        }
        (false, true) => {
            return Err(Error::InvalidParameter(format!(
                "format = '{}' delivers to an HTTP endpoint: location must be http:// or https://",
                parsed.format.name()
            )))
        }
        _ => {}
    }
    parsed.endpoint.gzip = parsed.compression == "gzip";
    Ok(CreateSink {
        name,
        if_not_exists,
        source,
        options: parsed,
    })
}

/// `FLUSH SINK name`.
pub(super) fn parse_flush_sink(stmt: &str) -> Result<String> {
    let mut p = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(strip_comments(stmt))
        .map_err(syntax)?;
    p.next_token(); // FLUSH
    p.next_token(); // SINK
    let name = object_name(&p.parse_object_name(false).map_err(syntax)?)?;
    if p.peek_token().token != Token::EOF {
        return Err(Error::Syntax("expected FLUSH SINK name".into()));
    }
    Ok(name)
}

/// `CREATE TABLE name [WITH (location = …)] AS SELECT …`; a plain CREATE
/// TABLE is refused with what to use instead.
pub(super) fn parse_create_table(stmt: &str) -> Result<CreateTableAs> {
    let Statement::CreateTable(ct) = parse_one(strip_comments(stmt))? else {
        return Err(Error::Syntax(
            "expected CREATE TABLE name AS SELECT …".into(),
        ));
    };
    let name = object_name(&ct.name)?;
    let Some(query) = &ct.query else {
        return Err(Error::FeatureNotSupported(format!(
            "CREATE TABLE \"{name}\" without AS SELECT is not supported: use CREATE STREAM for data you write, CREATE TABLE … AS SELECT for a Parquet copy, or CREATE EXTERNAL TABLE over existing files"
        )));
    };
    if !ct.columns.is_empty() {
        return Err(Error::Syntax(format!(
            "CREATE TABLE \"{name}\" AS SELECT takes its columns from the query; drop the column list"
        )));
    }
    let mut location = None;
    // Hive's `LOCATION '…'` clause means the same as the option; taking it
    // (rather than ignoring it) keeps the statement's meaning and its
    // location checked.
    if let Some(hive) = ct.hive_formats.as_ref().and_then(|h| h.location.clone()) {
        location = Some(hive);
    }
    let options = match &ct.table_options {
        CreateTableOptions::With(opts) => opts.clone(),
        CreateTableOptions::None => Vec::new(),
        _ => {
            return Err(Error::Syntax(
                "table options go in WITH (location = '…')".into(),
            ))
        }
    };
    for opt in &options {
        match opt {
            SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case("location") => {
                location = option_text(value)
            }
            other => {
                return Err(Error::Syntax(format!(
                    "unknown table option {other}; valid options: location"
                )))
            }
        }
    }
    Ok(CreateTableAs {
        name,
        if_not_exists: ct.if_not_exists,
        query: query.to_string(),
        location,
    })
}
