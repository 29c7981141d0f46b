//! Rewrites of the catalog queries client tools send that the query
//! engine cannot run as written: literal fragments psql 15 emits, and
//! SQLAlchemy's column reflection. Nothing else changes.

/// The PostgreSQL version sluice answers as (`version()`, `SHOW
/// server_version`, the startup parameter), in the form client libraries
/// parse (SQLAlchemy, pgjdbc and psql read the major and minor number).
pub const SERVER_VERSION: &str = "16.6";
/// The same as `server_version_num` reports it (major × 10000 + minor).
pub const SERVER_VERSION_NUM: &str = "160006";

/// (fragment psql sends, replacement).
const REWRITES: &[(&str, &str)] = &[
    // `\d+`: table options. sluice tables have no reloptions and no TOAST.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
];

/// `\du`: a role's groups come from sluice's catalog, not from a
/// correlated ARRAY subquery over pg_auth_members.
const DU_MEMBER_OF: (&str, &str, &str) = (
    "ARRAY(SELECT b.rolname",
    ") as memberof",
    "sluice_member_of(r.rolname) as memberof",
);

/// SQLAlchemy's column reflection (the query that builds identity and
/// collation details with `json_build_object`) puts correlated scalar
/// subqueries inside CASE, which the engine cannot decorrelate. They ask
/// for column defaults, identity options and non-default collations,
/// none of which sluice has, so each becomes NULL (what PostgreSQL
/// answers for such a column). The pg_catalog layer does the same for
/// subqueries directly in a select list.
fn null_case_subqueries(sql: &str) -> Option<String> {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    if !sql.contains("json_build_object") || !sql.contains("pg_catalog") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |expr| {
        if matches!(expr, Expr::Case { .. }) {
            let _ = visit_expressions_mut(expr, |inner| {
                if matches!(inner, Expr::Subquery(_)) {
                    *inner = null_keeping_placeholders(inner);
                    changed = true;
                }
                ControlFlow::<()>::Continue(())
            });
        }
        ControlFlow::<()>::Continue(())
    });
    let text: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    changed.then(|| text.join("; "))
}

/// NULL, still naming the parameters `expr` used (`$n::type IS NULL AND
/// … THEN NULL`): the client binds every parameter it sent, and each must
/// keep its place and type.
fn null_keeping_placeholders(
    expr: &datafusion::sql::sqlparser::ast::Expr,
) -> datafusion::sql::sqlparser::ast::Expr {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{visit_expressions, Expr, Value};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    let placeholder = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(name) => Some(name.clone()),
            _ => None,
        },
        _ => None,
    };
    // Each parameter once, with its cast if it has one (a cast is visited
    // before the placeholder inside it).
    let mut named = std::collections::HashSet::new();
    let mut used = Vec::new();
    let _ = visit_expressions(expr, |e| {
        let found = match e {
            Expr::Cast { expr: inner, .. } => placeholder(inner).map(|name| (name, e.to_string())),
            e => placeholder(e).map(|name| (name.clone(), name)),
        };
        if let Some((name, text)) = found {
            if named.insert(name) {
                used.push(text);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let null = Expr::Value(Value::Null.into());
    if used.is_empty() {
        return null;
    }
    let text = format!(
        "CASE WHEN {} IS NULL THEN NULL END",
        used.join(" IS NULL AND ")
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or(null)
}

/// `generate_subscripts(a, 1)` (SQLAlchemy's key-column reflection pairs
/// it with `unnest(a)`) as `unnest(range(1, cardinality(a) + 1))`: the
/// engine has no such set-returning function, and two unnests in one
/// select list advance together, as PostgreSQL's set-returning functions
/// do.
fn generate_subscripts(sql: &str) -> Option<String> {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{
        visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    if !sql.contains("generate_subscripts") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |expr| {
        let Expr::Function(f) = expr else {
            return ControlFlow::<()>::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        if name != "generate_subscripts" && name != "pg_catalog.generate_subscripts" {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let (array, dim) = match (list.args.first(), list.args.get(1)) {
            (
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(a))),
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(d))),
            ) => (a.to_string(), d.to_string()),
            _ => return ControlFlow::Continue(()),
        };
        // The dimension stays in the text (it may be a bound parameter);
        // arrays here have one, so another dimension has no subscripts.
        let text = format!(
            "unnest(range(1, CASE WHEN CAST({dim} AS BIGINT) = 1 THEN CAST(cardinality({array}) AS BIGINT) + 1 ELSE 1 END))"
        );
        if let Ok(replacement) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
        {
            *expr = replacement;
            changed = true;
        }
        ControlFlow::Continue(())
    });
    let text: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    changed.then(|| text.join("; "))
}

/// `pg_table_is_visible(x)` as a condition of a WHERE clause (psql's
/// `\dt` and `\d`, SQLAlchemy's `get_table_names`) becomes `x IN (the
/// relations of public and pg_catalog)`: the pg_catalog layer's function
/// answers true for every relation, so the `sluice` and
/// `information_schema` relations showed up as if on the search path.
/// Elsewhere (a select list) it is left as it is.
fn table_visibility(sql: &str) -> Option<String> {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SetExpr,
        VisitMut, VisitorMut,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    struct Rewriter {
        changed: bool,
    }

    /// Rewrites the visibility calls among the AND-ed conditions of `expr`.
    fn conjuncts(expr: &mut Expr, changed: &mut bool) {
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conjuncts(left, changed);
                conjuncts(right, changed);
            }
            Expr::Nested(inner) => conjuncts(inner, changed),
            Expr::Function(f) => {
                let name = f.name.to_string().to_lowercase();
                if name != "pg_table_is_visible" && name != "pg_catalog.pg_table_is_visible" {
                    return;
                }
                let FunctionArguments::List(list) = &f.args else {
                    return;
                };
                let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(oid))) = list.args.first()
                else {
                    return;
                };
                let text = format!(
                    "{oid} IN (SELECT vis_c.oid FROM pg_catalog.pg_class vis_c \
                     JOIN pg_catalog.pg_namespace vis_n ON vis_n.oid = vis_c.relnamespace \
                     WHERE vis_n.nspname IN ('public', 'pg_catalog'))"
                );
                if let Ok(replacement) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&text)
                    .and_then(|mut p| p.parse_expr())
                {
                    *expr = replacement;
                    *changed = true;
                }
            }
            _ => {}
        }
    }

    impl VisitorMut for Rewriter {
        type Break = ();

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                if let Some(selection) = select.selection.as_mut() {
                    conjuncts(selection, &mut self.changed);
                }
            }
            ControlFlow::Continue(())
        }
    }

    if !sql.contains("pg_table_is_visible") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut rewriter = Rewriter { changed: false };
    let _ = statements.visit(&mut rewriter);
    let text: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    rewriter.changed.then(|| text.join("; "))
}

/// `sql` with unplannable catalog fragments replaced (borrowed when none).
pub fn rewrite(sql: &str) -> std::borrow::Cow<'_, str> {
    let mut out = match null_case_subqueries(sql) {
        Some(rewritten) => std::borrow::Cow::Owned(rewritten),
        None => std::borrow::Cow::Borrowed(sql),
    };
    if let Some(rewritten) = generate_subscripts(&out) {
        out = std::borrow::Cow::Owned(rewritten);
    }
    if let Some(rewritten) = table_visibility(&out) {
        out = std::borrow::Cow::Owned(rewritten);
    }
    let (start, end, with) = DU_MEMBER_OF;
    if let Some(from) = out.find(start) {
        if let Some(len) = out[from..].find(end) {
            let replaced = format!("{}{with}{}", &out[..from], &out[from + len + end.len()..]);
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    for (from, to) in REWRITES {
        if out.contains(from) {
            out = std::borrow::Cow::Owned(out.replace(from, to));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    /// SQLAlchemy's CASE subqueries become NULL, each bound parameter
    /// still named once, `$1` apart from `$10`.
    #[test]
    fn case_subqueries_become_null_keeping_every_parameter() {
        let sql = "SELECT json_build_object('a', 1), CASE WHEN x THEN \
                   (SELECT y FROM pg_catalog.t WHERE t.a = $10::VARCHAR AND t.b = $1) ELSE NULL END FROM pg_catalog.u";
        let out = rewrite(sql).into_owned();
        assert!(!out.contains("SELECT y"), "{out}");
        assert!(out.contains("$10::VARCHAR IS NULL"), "{out}");
        assert!(out.contains("$1 IS NULL"), "{out}");
    }

    /// `generate_subscripts` becomes an unnest that advances with the
    /// array's own unnest, keeping its dimension parameter.
    #[test]
    fn generate_subscripts_becomes_an_unnest_of_a_range() {
        let sql = "SELECT unnest(c.conkey) AS attnum, generate_subscripts(c.conkey, $2::INTEGER) AS ord FROM pg_catalog.pg_constraint AS c";
        let out = rewrite(sql).into_owned();
        assert!(!out.contains("generate_subscripts"), "{out}");
        assert!(out.contains("cardinality(c.conkey)"), "{out}");
        assert!(out.contains("$2::INTEGER"), "{out}");
    }

    /// Visibility in a WHERE clause becomes a membership test; in a
    /// select list it stays.
    #[test]
    fn table_visibility_in_where_clauses_follows_the_search_path() {
        let sql =
            "SELECT c.relname, pg_catalog.pg_table_is_visible(c.oid) FROM pg_catalog.pg_class c \
                   WHERE c.relkind = 'r' AND pg_catalog.pg_table_is_visible(c.oid)";
        let out = rewrite(sql).into_owned();
        assert!(out.contains("c.oid IN (SELECT vis_c.oid"), "{out}");
        assert!(out.contains("('public', 'pg_catalog')"), "{out}");
        assert_eq!(out.matches("pg_table_is_visible").count(), 1, "{out}");
    }
}
