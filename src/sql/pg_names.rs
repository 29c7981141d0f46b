//! What PostgreSQL calls and types the columns of a query, where clients
//! see it: an unaliased `count(*)` is `count` (DataFusion: `count(*)`), a
//! cast `x::int` is `x`, a literal `?column?`, a lone integer literal is
//! int4 (node-postgres returns int8 as a string, so `SELECT 1` would
//! come back as `"1"`). Applied to the select list of a top-level query
//! by rewriting its text; a name that would repeat (DataFusion refuses
//! duplicate output names) keeps DataFusion's.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, SelectItem, SetExpr, Statement, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `sql` with PostgreSQL's column names and integer literal type, if any
/// select item needed them; `None` leaves the text as written.
pub fn rewrite(sql: &str) -> Option<String> {
    // Catalog queries are left as written: the pg_catalog layer
    // recognises some (psql's) by their text.
    if sql.contains("pg_catalog") || sql.contains("information_schema") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let items = &mut select.projection;
    let mut names: Vec<Option<String>> = Vec::with_capacity(items.len());
    for item in items.iter() {
        names.push(match item {
            SelectItem::UnnamedExpr(expr) => Some(column_name(expr)),
            SelectItem::ExprWithAlias { alias, .. } => Some(alias_name(alias)),
            // What a wildcard expands to is not known here.
            _ => return None,
        });
    }
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in names.iter().flatten() {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    let mut changed = false;
    for (item, name) in items.iter_mut().zip(&names) {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        let Some(name) = name else { continue };
        if is_column(expr) || uses.get(name.as_str()) != Some(&1) {
            continue;
        }
        let expr = match int4_literal(expr) {
            Some(cast) => cast,
            None => expr.clone(),
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', name.clone()),
        };
        changed = true;
    }
    changed.then(|| statements[0].to_string())
}

/// PostgreSQL's name for an unaliased select item (FigureColname).
fn column_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(ident) => alias_name(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map(alias_name).unwrap_or_default(),
        Expr::Nested(inner) => column_name(inner),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .map(alias_name)
            .unwrap_or_else(|| "?column?".into()),
        Expr::Cast {
            expr, data_type, ..
        } => match column_name(expr) {
            name if name != "?column?" => name,
            _ => type_name(data_type),
        },
        Expr::TypedString(typed) => type_name(&typed.data_type),
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        _ => "?column?".into(),
    }
}

fn is_column(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_column(inner),
        _ => false,
    }
}

/// An identifier as PostgreSQL folds it: quoted as written, else lower.
fn alias_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The internal name PostgreSQL gives a cast's column (`x::int` of a
/// literal is `int4`).
fn type_name(data_type: &DataType) -> String {
    let text = data_type.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or_default().trim();
    match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float8" | "float" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "decimal" | "numeric" => "numeric",
        other => other,
    }
    .to_string()
}

/// `CAST(n AS INTEGER)` for an integer literal that fits int4, as
/// PostgreSQL types it.
fn int4_literal(expr: &Expr) -> Option<Expr> {
    let (negative, value) = match expr {
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => (true, expr.as_ref()),
        other => (false, other),
    };
    let Expr::Value(v) = value else { return None };
    let Value::Number(digits, _) = &v.value else {
        return None;
    };
    let text = if negative {
        format!("-{digits}")
    } else {
        digits.clone()
    };
    text.parse::<i32>().ok()?;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("CAST({text} AS INTEGER)"))
        .ok()?
        .parse_expr()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn names_and_literal_types_follow_postgres() {
        assert_eq!(
            rewrite("SELECT count(*), sum(t.x), id FROM t").as_deref(),
            Some("SELECT count(*) AS \"count\", sum(t.x) AS \"sum\", id FROM t")
        );
        assert_eq!(
            rewrite("select 1").as_deref(),
            Some("SELECT CAST(1 AS INTEGER) AS \"?column?\"")
        );
        assert_eq!(
            rewrite("SELECT x::text FROM t").as_deref(),
            Some("SELECT x::TEXT AS \"x\" FROM t")
        );
        assert_eq!(
            rewrite("SELECT 2147483648").as_deref(),
            Some("SELECT 2147483648 AS \"?column?\"")
        );
        // Unchanged: aliased, plain columns, wildcards, repeated names.
        assert_eq!(rewrite("SELECT count(*) AS n, id FROM t"), None);
        assert_eq!(rewrite("SELECT *, count(*) FROM t"), None);
        assert_eq!(rewrite("SELECT 1, 2"), None);
        assert_eq!(rewrite("INSERT INTO t VALUES (1)"), None);
        assert_eq!(rewrite("SELECT pg_catalog.format_type(1, 2)"), None);
    }
}
