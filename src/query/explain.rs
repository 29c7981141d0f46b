//! Turns DataFusion's positional INSERT errors ("Cannot cast string 'abc'
//! to value of Int32 type", "Column 'column1' ... non-nullable") into
//! Postgres messages that name the column and the relation.

use crate::error::{Error, ErrorKind};
use crate::runtime::Streams;
use crate::sql::insert_shape;
use crate::types::ColumnDef;

/// The target stream's columns as the INSERT lists them, and per VALUES
/// row and position the string literal there.
struct InsertShape {
    relation: String,
    columns: Vec<ColumnDef>,
    quoted: Vec<Vec<Option<String>>>,
}

fn stream_insert_shape(streams: &Streams, stmt: &str) -> Option<InsertShape> {
    let shape = insert_shape(stmt)?;
    let stream = streams.get(&shape.table)?;
    let columns = match &shape.columns {
        None => stream.def.columns.clone(),
        Some(names) => names
            .iter()
            .map(|name| stream.def.columns.iter().find(|c| &c.name == name).cloned())
            .collect::<Option<Vec<_>>>()?,
    };
    Some(InsertShape {
        relation: shape.table,
        columns,
        quoted: shape.quoted,
    })
}

/// Rewrites a query-engine error about statement `stmt` into the Postgres
/// message users expect (naming column and relation).
pub fn explain_insert_error(streams: &Streams, stmt: &str, err: Error) -> Error {
    let message = err.to_string();
    // DataFusion names a NULL in a NOT NULL column only in its message.
    if err.kind() != ErrorKind::InvalidText && !message.contains("non-nullable") {
        return err;
    }
    let Some(shape) = stream_insert_shape(streams, stmt) else {
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
    let position = shape
        .quoted
        .iter()
        .find_map(|row| row.iter().position(|s| s.as_deref() == Some(bad.as_str())));
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
