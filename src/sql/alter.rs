//! `ALTER STREAM name ADD COLUMN … | ALTER COLUMN … TYPE … | DROP COLUMN …
//! | RENAME COLUMN …` (several, comma-separated, make one schema version)
//! and `ALTER STREAM name AS SELECT …` (a derived stream's new query):
//! parsed with sqlparser's `ALTER TABLE` grammar, checked against the
//! stream by the engine.

use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, DropBehavior, Expr, Statement,
    UnaryOperator, Value,
};

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{as_table_statement, ident_name, object_name, parse_one, strip_comments};
use crate::error::{Error, Result};
use crate::types::{ColumnDef, SqlType};

/// A parsed `ALTER STREAM`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlterStream {
    pub name: String,
    pub if_exists: bool,
    pub action: AlterAction,
    /// The statement as written, for `sluice.schemas`.
    pub statement: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AlterAction {
    /// Column changes, applied in order as one new schema version.
    Columns(Vec<ColumnChange>),
    /// A derived stream's new SELECT.
    AsSelect(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnChange {
    Add {
        column: ColumnDef,
        if_not_exists: bool,
    },
    SetType {
        column: String,
        sql_type: SqlType,
    },
    Drop {
        column: String,
        if_exists: bool,
        cascade: bool,
    },
    Rename {
        from: String,
        to: String,
    },
}

const SUPPORTED: &str = "ALTER STREAM supports ADD COLUMN, ALTER COLUMN … TYPE, DROP COLUMN, RENAME COLUMN and, for a derived stream, AS SELECT";

pub(super) fn parse_alter_stream(stmt: &str) -> Result<AlterStream> {
    let statement = strip_comments(stmt).trim().to_string();
    if let Some((name, select)) = split_as_select(&statement) {
        let name = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(name)
            .and_then(|mut p| p.parse_object_name(false))
            .map_err(|e| Error::Syntax(e.to_string().replace("sql parser error: ", "")))?;
        let name = object_name(&name)?;
        return Ok(AlterStream {
            name,
            if_exists: false,
            action: AlterAction::AsSelect(select.to_string()),
            statement,
        });
    }
    let Statement::AlterTable(alter) = parse_one(&as_table_statement(stmt))? else {
        return Err(Error::Syntax(SUPPORTED.into()));
    };
    let name = object_name(&alter.name)?;
    let changes = alter
        .operations
        .iter()
        .map(column_change)
        .collect::<Result<Vec<_>>>()?;
    if changes.is_empty() {
        return Err(Error::Syntax(SUPPORTED.into()));
    }
    Ok(AlterStream {
        name,
        if_exists: alter.if_exists,
        action: AlterAction::Columns(changes),
        statement,
    })
}

/// `ALTER STREAM name AS SELECT …` → (name, SELECT …).
fn split_as_select(statement: &str) -> Option<(&str, &str)> {
    let mut rest = statement;
    let mut words = Vec::with_capacity(4);
    for _ in 0..4 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        words.push(&rest[..end]);
        rest = &rest[end..];
    }
    words[3]
        .eq_ignore_ascii_case("AS")
        .then(|| (words[2], rest.trim_start()))
}

fn column_change(op: &AlterTableOperation) -> Result<ColumnChange> {
    Ok(match op {
        AlterTableOperation::AddColumn {
            if_not_exists,
            column_def,
            column_position: None,
            ..
        } => {
            let name = ident_name(&column_def.name);
            let mut column = ColumnDef::new(name, SqlType::from_sql(&column_def.data_type)?, true);
            for opt in &column_def.options {
                match &opt.option {
                    ColumnOption::NotNull => column.nullable = false,
                    ColumnOption::Null => column.nullable = true,
                    ColumnOption::Default(expr) => column.default = constant(expr, &column.name)?,
                    other => {
                        return Err(Error::FeatureNotSupported(format!(
                            "column option {other} on \"{}\" is not supported on streams; NOT NULL and a constant DEFAULT are",
                            column.name
                        )))
                    }
                }
            }
            ColumnChange::Add {
                column,
                if_not_exists: *if_not_exists,
            }
        }
        AlterTableOperation::AlterColumn {
            column_name,
            op:
                AlterColumnOperation::SetDataType {
                    data_type,
                    using: None,
                    ..
                },
        } => ColumnChange::SetType {
            column: ident_name(column_name),
            sql_type: SqlType::from_sql(data_type)?,
        },
        AlterTableOperation::AlterColumn {
            op: AlterColumnOperation::SetDataType { using: Some(_), .. },
            ..
        } => {
            return Err(Error::FeatureNotSupported(
                "ALTER COLUMN … TYPE … USING is not supported: old records are read in the new type as they are, so only widening changes are possible".into(),
            ))
        }
        AlterTableOperation::DropColumn {
            column_names,
            if_exists,
            drop_behavior,
            ..
        } => match column_names.as_slice() {
            [column] => ColumnChange::Drop {
                column: ident_name(column),
                if_exists: *if_exists,
                cascade: matches!(drop_behavior, Some(DropBehavior::Cascade)),
            },
            _ => {
                return Err(Error::Syntax(
                    "DROP COLUMN names one column; repeat DROP COLUMN for more".into(),
                ))
            }
        },
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => ColumnChange::Rename {
            from: ident_name(old_column_name),
            to: ident_name(new_column_name),
        },
        other => {
            return Err(Error::FeatureNotSupported(format!(
                "{other} is not supported; {SUPPORTED}"
            )))
        }
    })
}

/// A DEFAULT must be a constant: its text form (`NULL` → no default).
fn constant(expr: &Expr, column: &str) -> Result<Option<String>> {
    let refused = || {
        Error::FeatureNotSupported(format!(
            "DEFAULT of column \"{column}\" must be a constant (a number, a string or a boolean), not {expr}"
        ))
    };
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(None),
            Value::SingleQuotedString(s) => Ok(Some(s.clone())),
            Value::Number(n, _) => Ok(Some(n.clone())),
            Value::Boolean(b) => Ok(Some(b.to_string())),
            _ => Err(refused()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } => match inner.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Ok(Some(format!("-{n}"))),
                _ => Err(refused()),
            },
            _ => Err(refused()),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant(expr, column),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(sql: &str) -> Vec<ColumnChange> {
        match parse_alter_stream(sql).unwrap().action {
            AlterAction::Columns(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn column_changes() {
        let changes = columns(
            "ALTER STREAM clicks ADD COLUMN country TEXT DEFAULT 'unknown', ALTER COLUMN status TYPE BIGINT, DROP COLUMN email CASCADE",
        );
        let mut country = ColumnDef::new("country", SqlType::Text, true);
        country.default = Some("unknown".into());
        assert_eq!(
            changes,
            vec![
                ColumnChange::Add {
                    column: country,
                    if_not_exists: false
                },
                ColumnChange::SetType {
                    column: "status".into(),
                    sql_type: SqlType::BigInt
                },
                ColumnChange::Drop {
                    column: "email".into(),
                    if_exists: false,
                    cascade: true
                },
            ]
        );
        let changes = columns("alter stream \"Clicks\" add n int not null default -1");
        let ColumnChange::Add { column, .. } = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (column.nullable, column.default.as_deref()),
            (false, Some("-1"))
        );
    }

    #[test]
    fn as_select_keeps_the_query_text() {
        let alter = parse_alter_stream("ALTER STREAM clean AS SELECT a, b FROM clicks WHERE a > 1")
            .unwrap();
        assert_eq!(alter.name, "clean");
        assert_eq!(
            alter.action,
            AlterAction::AsSelect("SELECT a, b FROM clicks WHERE a > 1".into())
        );
    }

    #[test]
    fn refusals() {
        let err =
            parse_alter_stream("ALTER STREAM s ADD COLUMN t TIMESTAMP DEFAULT now()").unwrap_err();
        assert_eq!(err.sqlstate(), "0A000");
        let err = parse_alter_stream("ALTER STREAM s ALTER COLUMN a TYPE BIGINT USING a::bigint")
            .unwrap_err();
        assert_eq!(err.sqlstate(), "0A000");
        assert!(parse_alter_stream("ALTER STREAM s OWNER TO bob").is_err());
    }
}
