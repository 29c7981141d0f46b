//! `CREATE STREAM name (columns) WITH (…)` and the derived form
//! `CREATE STREAM name [WITH (…)] AS SELECT …`: parsed with sqlparser's
//! `CREATE TABLE` grammar, options checked here.

use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTableOptions, Expr, SqlOption, Statement,
};

use super::{
    as_table_statement, ident_name, object_name, option_text, parse_one, CreateDerived,
    CreateStream, Parsed, MAX_SHARDS,
};
use crate::error::{Error, Result};
use crate::types::{ColumnDef, SqlType};

const STREAM_OPTIONS: &str = "shards, partition_key, retention, event_time, unknown_fields";

pub(super) fn parse_create_stream(stmt: &str) -> Result<Parsed> {
    let Statement::CreateTable(ct) = parse_one(&as_table_statement(stmt))? else {
        return Err(Error::Syntax(
            "expected CREATE STREAM name (columns) [WITH (...)]".into(),
        ));
    };
    let name = object_name(&ct.name)?;
    if name.contains('.') {
        return Err(Error::InvalidParameter(format!(
            "stream name \"{name}\" must not contain a dot"
        )));
    }
    let options = match &ct.table_options {
        CreateTableOptions::None => Vec::new(),
        CreateTableOptions::With(opts) => opts.clone(),
        _ => {
            return Err(Error::Syntax(format!(
                "stream options go in WITH (...); valid options: {STREAM_OPTIONS}"
            )))
        }
    };
    if let Some(query) = &ct.query {
        if !ct.columns.is_empty() {
            return Err(Error::Syntax(format!(
                "a derived stream takes its columns from the query; drop the column list of \"{name}\""
            )));
        }
        let mut derived = CreateDerived {
            name,
            if_not_exists: ct.if_not_exists,
            select: query.to_string(),
            from_earliest: true,
            shards: None,
            partition_key: None,
        };
        for opt in &options {
            apply_derived_option(&mut derived, opt)?;
        }
        return Ok(Parsed::CreateDerived(derived));
    }
    if ct.columns.is_empty() {
        return Err(Error::Syntax(format!(
            "stream \"{name}\" needs at least one column"
        )));
    }
    if !ct.constraints.is_empty() {
        return Err(Error::FeatureNotSupported(
            "table constraints (PRIMARY KEY, UNIQUE, ...) are not supported on streams; NOT NULL is".into(),
        ));
    }
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(ct.columns.len());
    for col in &ct.columns {
        let col_name = ident_name(&col.name);
        if columns.iter().any(|c| c.name == col_name) {
            return Err(Error::Syntax(format!(
                "column \"{col_name}\" specified more than once"
            )));
        }
        let mut nullable = true;
        for opt in &col.options {
            match &opt.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => nullable = true,
                other => {
                    return Err(Error::FeatureNotSupported(format!(
                        "column option {other} on \"{col_name}\" is not supported on streams"
                    )))
                }
            }
        }
        columns.push(ColumnDef {
            sql_type: SqlType::from_sql(&col.data_type)?,
            name: col_name,
            nullable,
            default: None,
        });
    }
    let mut create = CreateStream {
        name,
        if_not_exists: ct.if_not_exists,
        columns,
        shards: 1,
        partition_key: None,
        retention: None,
        event_time: None,
        reject_unknown_fields: false,
    };
    for opt in &options {
        apply_option(&mut create, opt)?;
    }
    Ok(Parsed::CreateStream(create))
}

const DERIVED_OPTIONS: &str = "start, shards, partition_key";

fn apply_derived_option(derived: &mut CreateDerived, opt: &SqlOption) -> Result<()> {
    let SqlOption::KeyValue { key, value } = opt else {
        return Err(Error::Syntax(format!(
            "stream option {opt} must be written key = value; valid options: {DERIVED_OPTIONS}"
        )));
    };
    match key.value.to_lowercase().as_str() {
        "start" => {
            let start = option_text(value).unwrap_or_default().to_lowercase();
            derived.from_earliest = match start.as_str() {
                "earliest" => true,
                "latest" => false,
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "start must be 'earliest' or 'latest', got '{other}'"
                    )))
                }
            }
        }
        "shards" => derived.shards = Some(parse_shards(value)?),
        "partition_key" => derived.partition_key = option_text(value),
        "retention" | "event_time" => {
            return Err(Error::FeatureNotSupported(format!(
                "option \"{}\" is not supported on derived streams yet; valid options: {DERIVED_OPTIONS}",
                key.value
            )))
        }
        other => {
            return Err(Error::Syntax(format!(
                "unknown option \"{other}\" for a derived stream; valid options: {DERIVED_OPTIONS}"
            )))
        }
    }
    Ok(())
}

fn apply_option(create: &mut CreateStream, opt: &SqlOption) -> Result<()> {
    let SqlOption::KeyValue { key, value } = opt else {
        return Err(Error::Syntax(format!(
            "stream option {opt} must be written key = value; valid options: {STREAM_OPTIONS}"
        )));
    };
    let key = key.value.to_lowercase();
    let text = option_text(value);
    let column = |create: &CreateStream, what: &str| -> Result<String> {
        let name = text.clone().unwrap_or_default();
        create
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.name.clone())
            .ok_or_else(|| {
                Error::UndefinedColumn(format!(
                    "{what} \"{name}\" is not a column of stream \"{}\"",
                    create.name
                ))
            })
    };
    match key.as_str() {
        "shards" => create.shards = parse_shards(value)?,
        "unknown_fields" => {
            create.reject_unknown_fields = match text.as_deref().map(str::to_lowercase).as_deref() {
                Some("ignore") => false,
                Some("error") => true,
                _ => {
                    return Err(Error::InvalidParameter(format!(
                        "unknown_fields must be 'ignore' or 'error', got {value}"
                    )))
                }
            }
        }
        "partition_key" => create.partition_key = Some(column(create, "partition_key")?),
        "event_time" => {
            let name = column(create, "event_time")?;
            let is_time = create.columns.iter().any(|c| {
                c.name == name && matches!(c.sql_type, SqlType::Timestamp | SqlType::TimestampTz)
            });
            if !is_time {
                return Err(Error::DatatypeMismatch(format!(
                    "event_time column \"{name}\" must be a timestamp or timestamptz"
                )));
            }
            create.event_time = Some(name);
        }
        "retention" => {
            let raw = text.unwrap_or_default();
            create.retention = match raw.to_lowercase().as_str() {
                "infinite" | "forever" | "none" => None,
                _ => {
                    let d = humantime::parse_duration(&raw)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            Error::InvalidParameter(format!(
                                "retention must be a positive duration like '7 days' or '12h', or 'infinite'; got '{raw}'"
                            ))
                        })?;
                    Some((raw, d))
                }
            };
        }
        other => {
            return Err(Error::Syntax(format!(
                "unknown stream option \"{other}\"; valid options: {STREAM_OPTIONS}"
            )))
        }
    }
    Ok(())
}

fn parse_shards(value: &Expr) -> Result<u32> {
    option_text(value)
        .and_then(|t| t.parse::<u32>().ok())
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| {
            Error::InvalidParameter(format!(
                "shards must be an integer from 1 to {MAX_SHARDS}, got {value}"
            ))
        })
}
