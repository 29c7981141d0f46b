//! INSERT statements, parsed once here for every user: the literal
//! `INSERT … VALUES` fast path (the scanner in [`super::insert_scan`], then
//! sqlparser for what it does not take), and the shape of any INSERT for
//! naming the column of a value the query engine could not convert.

use datafusion::sql::sqlparser::ast::{
    Expr, Insert, SetExpr, Statement, TableObject, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::insert_scan::scan_insert;
use super::object_name;
use super::statement::InsertValues;

/// Recognises an INSERT whose rows are all literals; `None` for anything
/// else (expressions, placeholders, SELECT sources, ON CONFLICT …).
pub fn parse_insert_values(stmt: &str) -> Option<InsertValues> {
    scan_insert(stmt).or_else(|| parse_literal_tree(stmt))
}

/// [`parse_insert_values`] for a statement the scanner did not take (its
/// literals spelled in ways only sqlparser reads): parsed as a tree.
pub(super) fn parse_literal_tree(stmt: &str) -> Option<InsertValues> {
    let insert = parse_insert(stmt)?;
    if insert.on.is_some()
        || insert.returning.is_some()
        || insert.overwrite
        || !insert.assignments.is_empty()
    {
        return None;
    }
    let rows = values_rows(&insert)?
        .iter()
        .map(|row| row.iter().map(literal_text).collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()?;
    Some(InsertValues {
        table: table_name(&insert)?,
        columns: column_names(&insert)?,
        rows,
    })
}

/// An INSERT's target, its column list and, per VALUES row and position,
/// the text of a single-quoted string literal there (`None` for other
/// expressions): enough to say which column a bad string was meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertShape {
    pub table: String,
    pub columns: Option<Vec<String>>,
    pub quoted: Vec<Vec<Option<String>>>,
}

/// The [`InsertShape`] of any INSERT that parses; `None` otherwise.
pub fn insert_shape(stmt: &str) -> Option<InsertShape> {
    let insert = parse_insert(stmt)?;
    let quoted = values_rows(&insert)
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.iter()
                        .map(|e| match e {
                            Expr::Value(v) => match &v.value {
                                Value::SingleQuotedString(s) => Some(s.clone()),
                                _ => None,
                            },
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    Some(InsertShape {
        table: table_name(&insert)?,
        columns: column_names(&insert)?,
        quoted,
    })
}

fn parse_insert(stmt: &str) -> Option<Insert> {
    let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, stmt).ok()?;
    if parsed.len() != 1 {
        return None;
    }
    match parsed.pop() {
        Some(Statement::Insert(insert)) => Some(insert),
        _ => None,
    }
}

fn table_name(insert: &Insert) -> Option<String> {
    match &insert.table {
        TableObject::TableName(name) => object_name(name).ok(),
        _ => None,
    }
}

/// `Some(None)` when the INSERT names no columns.
fn column_names(insert: &Insert) -> Option<Option<Vec<String>>> {
    let columns = insert
        .columns
        .iter()
        .map(|c| object_name(c).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((!columns.is_empty()).then_some(columns))
}

fn values_rows(insert: &Insert) -> Option<Vec<&Vec<Expr>>> {
    match insert.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(values)) => Some(values.rows.iter().map(|r| &r.content).collect()),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_takes_what_the_scanner_leaves() {
        let v = parse_insert_values("INSERT INTO t (a, b) VALUES (E'x\\ny', -- c\n 2)").unwrap();
        assert_eq!(v.table, "t");
        assert_eq!(v.columns, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            v.rows,
            vec![vec![Some("x\ny".to_string()), Some("2".to_string())]]
        );
        assert!(parse_insert_values("INSERT INTO t VALUES (now())").is_none());
        assert!(parse_insert_values("INSERT INTO t SELECT 1").is_none());
    }

    #[test]
    fn shapes_name_the_quoted_strings() {
        let shape = insert_shape("INSERT INTO t (a, b) VALUES (1 + 1, 'abc')").unwrap();
        assert_eq!(shape.quoted, vec![vec![None, Some("abc".to_string())]]);
        assert!(insert_shape("SELECT 1").is_none());
    }
}
