//! Turns DataFusion's positional INSERT errors ("Cannot cast string 'abc'
//! to value of Int32 type", "Column 'column1' ... non-nullable") into
//! Postgres messages that name the column and the relation.

use datafusion::sql::sqlparser::ast::{Expr, SetExpr, Statement, TableObject, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::Registry;
use crate::error::Error;
use crate::sql::object_name;
use crate::types::ColumnDef;

/// The target stream's columns as the INSERT lists them, and its VALUES rows.
struct InsertShape {
    relation: String,
    columns: Vec<ColumnDef>,
    rows: Vec<Vec<Expr>>,
}

fn insert_shape(registry: &Registry, stmt: &str) -> Option<InsertShape> {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, stmt).ok()?;
    let Some(Statement::Insert(insert)) = parsed.into_iter().next() else {
        return None;
    };
    let TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let relation = object_name(name).ok()?;
    let stream = registry.get(&relation)?;
    let columns = if insert.columns.is_empty() {
        stream.def.columns.clone()
    } else {
        insert
            .columns
            .iter()
            .map(|column| {
                let name = object_name(column).ok()?;
                stream.def.columns.iter().find(|c| c.name == name).cloned()
            })
            .collect::<Option<Vec<_>>>()?
    };
    let rows = match insert.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(values)) => values.rows.iter().map(|r| r.content.clone()).collect(),
        _ => Vec::new(),
    };
    Some(InsertShape {
        relation,
        columns,
        rows,
    })
}

pub(super) fn explain(registry: &Registry, stmt: &str, err: Error) -> Error {
    let message = err.to_string();
    if err.sqlstate() != "22P02" && !message.contains("non-nullable") {
        return err;
    }
    let Some(shape) = insert_shape(registry, stmt) else {
        return err;
    };
    let null_column = message
        .split("Column 'column")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| message.contains("non-nullable"));
    if let Some(col) = null_column.and_then(|i| shape.columns.get(i.saturating_sub(1))) {
        return Error::not_null(&col.name, &shape.relation);
    }
    // "Cannot cast string 'abc' to value of Int32 type",
    // "Error parsing timestamp from 'x': error parsing date"
    let Some(bad) = ["Cannot cast string '", "from '"]
        .iter()
        .find_map(|prefix| {
            let rest = message.split(prefix).nth(1)?;
            let end = rest.rfind("' to value of").or_else(|| rest.find("':"))?;
            Some(rest[..end].to_string())
        })
    else {
        return err;
    };
    let position = shape.rows.iter().find_map(|row| {
        row.iter().position(|e| {
            matches!(e, Expr::Value(v) if matches!(&v.value, Value::SingleQuotedString(s) if *s == bad))
        })
    });
    match position.and_then(|p| shape.columns.get(p)) {
        Some(col) => Error::InvalidText(format!(
            "invalid input syntax for type {}: \"{bad}\" (column \"{}\" of relation \"{}\")",
            col.sql_type.pg_name(),
            col.name,
            shape.relation
        )),
        None => Error::InvalidText(format!(
            "invalid input syntax: \"{bad}\" does not convert to its column's type in relation \"{}\"",
            shape.relation
        )),
    }
}
