//! The front parser: splits what a client sent into statements and
//! recognises sluice's own (`CREATE STREAM`, `DROP STREAM`, `SHOW STREAMS`);
//! everything else is DataFusion SQL and is passed on as text. Parsing only:
//! nothing here executes.

mod alter;
mod copy;
mod depth;
mod insert;
mod insert_scan;
mod pg_names;
mod psql_compat;
mod role;
mod session;
mod sink;
mod sink_options;
mod split;
mod statement;
mod stream;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Statement, Value};
use datafusion::sql::sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::Parser;

pub use alter::{AlterAction, AlterStream, ColumnChange};
pub use copy::{parse_copy, CopyFormat, CopyOptions, CopySource, CopyStatement};
pub use depth::MAX_EXPRESSION_DEPTH;
pub use insert::{insert_shape, parse_insert_values, InsertShape};
pub use psql_compat::{SERVER_VERSION, SERVER_VERSION_NUM};
pub use role::RoleStatement;
pub use session::{parse_deallocate, Deallocate, Savepoint};
pub use sink::{CreateSink, CreateTableAs};
pub use sink_options::{parse_size_bytes, SinkOptions, COMPRESSIONS};
pub use split::{blank_comments, leading_words, split_statements, strip_comments};
pub use statement::{CreateDerived, CreateStream, DropStream, InsertValues, Parsed};

use crate::error::{Error, Result};

pub const MAX_SHARDS: u32 = 1024;

/// The query `SHOW PIPELINES` runs.
pub const SHOW_PIPELINES_SQL: &str =
    "SELECT name, source, state, processed, errors, lag_records FROM sluice.pipelines ORDER BY name";

/// The query `SHOW SINKS` runs.
pub const SHOW_SINKS_SQL: &str =
    "SELECT name, source, location, state, files, bytes, lag_records FROM sluice.sinks ORDER BY name";

/// The query `SHOW STREAMS` runs.
pub const SHOW_STREAMS_SQL: &str =
    "SELECT name, shards, partition_key, retention, records, bytes FROM sluice.streams ORDER BY name";

impl Parsed {
    /// The DataFusion SQL that answers this statement, if DataFusion does.
    pub fn as_query(&self) -> Option<String> {
        match self {
            Parsed::Sql(text) | Parsed::InsertValues { text, .. } => Some(text.clone()),
            Parsed::ShowStreams => Some(SHOW_STREAMS_SQL.to_string()),
            Parsed::ShowPipelines => Some(SHOW_PIPELINES_SQL.to_string()),
            Parsed::ShowSinks => Some(SHOW_SINKS_SQL.to_string()),
            Parsed::ExplainCreateDerived(c) => Some(format!("EXPLAIN {}", c.select)),
            Parsed::CreateStream(_)
            | Parsed::CreateDerived(_)
            | Parsed::DropStream(_)
            | Parsed::AlterStream(_)
            | Parsed::Copy(_)
            | Parsed::CreateSink(_)
            | Parsed::DropSink(_)
            | Parsed::FlushSink(_)
            | Parsed::CreateExternalTable(_)
            | Parsed::Role(_)
            | Parsed::Savepoint(_)
            | Parsed::CreateTableAs(_)
            | Parsed::DropTable(_) => None,
        }
    }
}

/// Routes one statement (as split by [`split_statements`]).
pub fn parse(stmt: &str) -> Result<Parsed> {
    if let Some(savepoint) = session::parse_savepoint(stmt) {
        return savepoint.map(Parsed::Savepoint);
    }
    let words = leading_words(stmt, 3);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    if w.first() == Some(&"INSERT") {
        // The literal fast path scans without recursing; only what it
        // does not take is parsed as a tree.
        if let Some(insert) = insert_scan::scan_insert(stmt) {
            return Ok(Parsed::InsertValues {
                insert,
                text: psql_compat::rewrite(stmt).into_owned(),
            });
        }
    }
    depth::check(stmt)?;
    let stmt = &*blank_comments(stmt);
    match w.as_slice() {
        ["CREATE", "STREAM", ..] => stream::parse_create_stream(stmt),
        ["EXPLAIN", "CREATE", "STREAM"] => {
            let body = strip_comments(stmt);
            match stream::parse_create_stream(body["EXPLAIN".len()..].trim_start())? {
                Parsed::CreateDerived(c) => Ok(Parsed::ExplainCreateDerived(c)),
                _ => Err(Error::Syntax(
                    "EXPLAIN CREATE STREAM needs AS SELECT …".into(),
                )),
            }
        }
        ["DROP", "STREAM", ..] => parse_drop(stmt, "STREAM").map(Parsed::DropStream),
        ["ALTER", "STREAM" | "TABLE", ..] => {
            alter::parse_alter_stream(stmt).map(Parsed::AlterStream)
        }
        ["SHOW", "STREAMS"] => Ok(Parsed::ShowStreams),
        ["SHOW", "PIPELINES"] => Ok(Parsed::ShowPipelines),
        ["SHOW", "SINKS"] => Ok(Parsed::ShowSinks),
        ["SHOW", "SERVER_VERSION"] => Ok(Parsed::Sql(format!(
            "SELECT '{SERVER_VERSION}' AS server_version"
        ))),
        ["SHOW", "SERVER_VERSION_NUM"] => Ok(Parsed::Sql(format!(
            "SELECT '{SERVER_VERSION_NUM}' AS server_version_num"
        ))),
        ["CREATE", "SINK", ..] => {
            sink::parse_create_sink(stmt).map(|c| Parsed::CreateSink(Box::new(c)))
        }
        ["DROP", "SINK", ..] => parse_drop(stmt, "SINK").map(Parsed::DropSink),
        ["DROP", "TABLE", ..] => parse_drop(stmt, "TABLE").map(Parsed::DropTable),
        ["FLUSH", "SINK", ..] => sink::parse_flush_sink(stmt).map(Parsed::FlushSink),
        ["CREATE", "EXTERNAL", "TABLE"] | ["CREATE", "UNBOUNDED", "EXTERNAL"] => Ok(
            Parsed::CreateExternalTable(strip_comments(stmt).to_string()),
        ),
        ["CREATE", "TABLE", ..] => sink::parse_create_table(stmt).map(Parsed::CreateTableAs),
        ["COPY", ..] => parse_copy(stmt).map(Parsed::Copy),
        ["CREATE" | "ALTER" | "DROP", "ROLE" | "USER", ..] => role::parse(stmt).map(Parsed::Role),
        // The scanner already passed on it (above).
        ["INSERT", ..] => Ok(match insert::parse_literal_tree(stmt) {
            Some(insert) => Parsed::InsertValues {
                insert,
                text: psql_compat::rewrite(stmt).into_owned(),
            },
            None => Parsed::Sql(psql_compat::rewrite(stmt).into_owned()),
        }),
        ["SELECT" | "WITH", ..] => {
            let text = psql_compat::rewrite(stmt);
            Ok(Parsed::Sql(
                pg_names::rewrite(&text).unwrap_or_else(|| text.into_owned()),
            ))
        }
        _ => Ok(Parsed::Sql(psql_compat::rewrite(stmt).into_owned())),
    }
}

/// Replaces the second word of a statement (`STREAM`) by `TABLE`, so the
/// rest can be parsed by sqlparser's Postgres grammar.
fn as_table_statement(stmt: &str) -> String {
    let body = strip_comments(stmt);
    let first_end = body.find(char::is_whitespace).unwrap_or(body.len());
    let rest = body[first_end..].trim_start();
    let second_end = rest
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(rest.len());
    format!("{} TABLE {}", &body[..first_end], &rest[second_end..])
}

fn parse_one(sql: &str) -> Result<Statement> {
    // Postgres grammar first; the generic one knows `SELECT * EXCEPT (…)`.
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .or_else(|e| Parser::parse_sql(&GenericDialect {}, sql).map_err(|_| e))
        .map_err(|e| Error::Syntax(e.to_string().replace("sql parser error: ", "")))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        _ => Err(Error::Syntax("expected exactly one statement".into())),
    }
}

/// Normalises a possibly schema-qualified name like Postgres does: unquoted
/// identifiers fold to lower case; only the `public` schema holds streams.
pub fn object_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p.as_ident() {
            Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
            Some(ident) => ident.value.to_lowercase(),
            None => p.to_string(),
        })
        .collect();
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == "public" => Ok(name.clone()),
        _ => Err(Error::InvalidParameter(format!(
            "streams live in schema \"public\"; \"{name}\" names another schema"
        ))),
    }
}

fn ident_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// An option value as text: `'x'`, `x`, `4` and `"x"` all give `x`.
fn option_text(value: &Expr) -> Option<String> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::Identifier(ident) => Some(ident_name(ident)),
        Expr::UnaryOp { .. } => Some(value.to_string()),
        _ => None,
    }
}

/// `DROP STREAM|SINK|TABLE [IF EXISTS] names [CASCADE]`, parsed as a DROP TABLE.
fn parse_drop(stmt: &str, what: &str) -> Result<DropStream> {
    match parse_one(&as_table_statement(stmt))? {
        Statement::Drop {
            if_exists,
            names,
            cascade,
            ..
        } => Ok(DropStream {
            names: names.iter().map(object_name).collect::<Result<_>>()?,
            if_exists,
            cascade,
        }),
        _ => Err(Error::Syntax(format!(
            "expected DROP {what} [IF EXISTS] name [CASCADE]"
        ))),
    }
}

#[cfg(test)]
mod tests;
