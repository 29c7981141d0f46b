//! `INSERT INTO stream [(cols)] VALUES (literal, …), …` straight to a
//! RecordBatch: literals are collected per column as text and cast once per
//! column to the declared type, like Postgres coerces untyped literals.
//! Anything else (expressions, placeholders, SELECT sources) returns `None`
//! and goes through the query engine instead.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    Expr, SetExpr, Statement, TableObject, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::engine::{Registry, Stream};
use crate::error::{Error, Result};
use crate::sql::{leading_words, object_name};

use super::rows::{build_batch, resolve_targets, OnError};
use super::scan::{scan_insert, ScannedInsert};

/// A parsed literal INSERT: the target and its rows, not yet converted.
pub struct ValuesInsert {
    pub stream: Arc<Stream>,
    /// For each VALUES position, the stream column it fills.
    targets: Vec<usize>,
    /// Row-major literal text; `None` is SQL NULL.
    rows: Vec<Vec<Option<String>>>,
}

/// Recognises a literal-only INSERT into a stream; `Ok(None)` when the
/// statement is something else (left to the query engine).
pub fn plan_values_insert(registry: &Registry, stmt: &str) -> Result<Option<ValuesInsert>> {
    let words = leading_words(stmt, 2);
    if words.first().map(String::as_str) != Some("INSERT") {
        return Ok(None);
    }
    let Some(scanned) = scan_insert(stmt).or_else(|| parse_insert(stmt)) else {
        return Ok(None);
    };
    let Some(stream) = registry.get(&scanned.table) else {
        return Ok(None);
    };
    if !stream.accepts_inserts() {
        return Err(crate::query::not_insertable(&stream));
    }
    let targets = resolve_targets(&stream, scanned.columns.as_deref())?;
    let rows = scanned.rows;
    for row in &rows {
        if row.len() > targets.len() {
            return Err(Error::Syntax(
                "INSERT has more expressions than target columns".into(),
            ));
        }
        if row.len() < targets.len() && scanned.columns.is_some() {
            return Err(Error::Syntax(
                "INSERT has more target columns than expressions".into(),
            ));
        }
    }
    Ok(Some(ValuesInsert {
        stream,
        targets,
        rows,
    }))
}

/// The same as [`scan_insert`], through the full SQL parser, for literal
/// INSERTs the scanner does not take (comments, `E'…'` strings).
fn parse_insert(stmt: &str) -> Option<ScannedInsert> {
    let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, stmt).ok()?;
    let Some(Statement::Insert(insert)) = parsed.pop() else {
        return None;
    };
    if insert.on.is_some()
        || insert.returning.is_some()
        || insert.overwrite
        || !insert.assignments.is_empty()
    {
        return None;
    }
    let TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let table = object_name(name).ok()?;
    let Some(SetExpr::Values(values)) = insert.source.as_deref().map(|q| q.body.as_ref()) else {
        return None;
    };
    let rows = values
        .rows
        .iter()
        .map(|row| {
            row.content
                .iter()
                .map(literal_text)
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    let columns = insert
        .columns
        .iter()
        .map(|c| object_name(c).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(ScannedInsert {
        table,
        columns: (!columns.is_empty()).then_some(columns),
        rows,
    })
}

/// The text of a literal (`'x'`, `42`, `-1.5`, `true`, `NULL`), or `None`
/// for anything that needs evaluation.
fn literal_text(expr: &Expr) -> Option<Option<String>> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(None),
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(Some(s.clone())),
            Value::Number(n, _) => Some(Some(n.clone())),
            Value::Boolean(b) => Some(Some(b.to_string())),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Some(format!("-{n}"))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

impl ValuesInsert {
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Converts the literals to a batch of the stream's schema; the error
    /// names the first bad value, its column and the relation.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        build_batch(&self.stream, &self.targets, &self.rows, OnError::Abort)
            .map(|(batch, _)| batch)
            .map_err(|e| e.error)
    }
}
