//! What a statement the query engine runs may do, decided from what it
//! will execute, never from how it is spelled: its parsed tree (every
//! statement kind, unknown kinds needing the admin group) and its logical
//! plan (every node, subqueries, EXPLAIN ANALYZE and PREPARE inputs
//! included).
//!
//! Some statements no session may run, whatever its role: COPY to or from
//! a file (the server's files are not SQL's), schema and database DDL
//! (the catalog is shared: one session's DROP SCHEMA would hide every
//! stream from every other), views, functions and `SELECT … INTO` (shared
//! the same way), and settings that move the server's files or resources
//! (`datafusion.runtime.*`: spill directory, memory pool).

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement as PlanStatement, WriteOp};
use datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectType, Query, Reset, Set, SetExpr, Statement,
};

use crate::catalog::RoleGroup;
use crate::error::{Error, Result};

/// The group a statement needs and how to name what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub group: RoleGroup,
    pub action: String,
}

impl Need {
    fn read() -> Need {
        Need {
            group: RoleGroup::Reader,
            action: "read".into(),
        }
    }

    fn write(action: impl Into<String>) -> Need {
        Need {
            group: RoleGroup::Writer,
            action: action.into(),
        }
    }

    fn admin(action: impl Into<String>) -> Need {
        Need {
            group: RoleGroup::Admin,
            action: action.into(),
        }
    }

    /// The stronger of two needs (the first named on a tie).
    fn max(self, other: Need) -> Need {
        if other.group > self.group {
            other
        } else {
            self
        }
    }
}

fn copy_refused() -> Error {
    Error::InsufficientPrivilege(
        "COPY … TO or FROM a file is not allowed: the server's files are not SQL's; use COPY … TO STDOUT or FROM STDIN (psql: \\copy)".into(),
    )
}

fn schema_refused() -> Error {
    Error::InsufficientPrivilege(
        "schemas \"public\" and \"sluice\" are fixed: they are shared by every session and cannot be created, altered or dropped".into(),
    )
}

fn shared_object_refused(what: &str) -> Error {
    Error::InsufficientPrivilege(format!(
        "{what} would be shared by every session; create a stream (CREATE STREAM … AS SELECT) or a table (CREATE TABLE … AS SELECT)"
    ))
}

/// PostgreSQL's bound on a select list (and a VALUES row): wider ones
/// get 54011. The planner's work grows with the square of the width.
pub const MAX_TARGET_LIST_ENTRIES: usize = 1664;

/// Refuses (54011) a statement with a select list or VALUES row wider
/// than [`MAX_TARGET_LIST_ENTRIES`], before it is planned.
pub fn check_width(stmt: &Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::Visit;
    struct Width;
    impl datafusion::sql::sqlparser::ast::Visitor for Width {
        type Break = usize;
        fn pre_visit_query(&mut self, query: &Query) -> std::ops::ControlFlow<usize> {
            match widest(&query.body) {
                w if w > MAX_TARGET_LIST_ENTRIES => std::ops::ControlFlow::Break(w),
                _ => std::ops::ControlFlow::Continue(()),
            }
        }
    }
    match stmt.visit(&mut Width) {
        std::ops::ControlFlow::Break(width) => Err(Error::TooManyColumns(format!(
            "target lists can have at most {MAX_TARGET_LIST_ENTRIES} entries (this one has {width})"
        ))),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// The widest select list or VALUES row of `body` (nested queries are
/// visited on their own).
fn widest(body: &SetExpr) -> usize {
    match body {
        SetExpr::Select(select) => select.projection.len(),
        SetExpr::Values(values) => values
            .rows
            .iter()
            .map(|row| row.content.len())
            .max()
            .unwrap_or(0),
        SetExpr::SetOperation { left, right, .. } => widest(left).max(widest(right)),
        _ => 0,
    }
}

/// What `stmt` needs; an error if no session may run it.
pub fn statement_need(stmt: &Statement) -> Result<Need> {
    Ok(match stmt {
        Statement::Query(query) => query_need(query)?,
        Statement::Insert(_) => Need::write("INSERT"),
        Statement::Update(_) => Need::write("UPDATE"),
        Statement::Delete(_) => Need::write("DELETE"),
        Statement::Merge(_) => Need::write("MERGE"),
        Statement::Truncate(_) => Need::write("TRUNCATE"),
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            statement_need(statement)?
        }
        Statement::Declare { stmts } => {
            let mut need = Need::read();
            for query in stmts.iter().filter_map(|d| d.for_query.as_deref()) {
                need = need.max(query_need(query)?);
            }
            need
        }
        Statement::Set(set) => set_need(set)?,
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => Need::read(),
            Reset::ConfigurationParameter(name) => setting_need(&object_text(name))?,
        },
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowViews { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. } => Need::read(),
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => return Err(copy_refused()),
        Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::AlterSchema(_)
        | Statement::AttachDatabase { .. }
        | Statement::AttachDuckDBDatabase { .. }
        | Statement::DetachDuckDBDatabase { .. }
        | Statement::Use(_) => return Err(schema_refused()),
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Schema | ObjectType::Database => return Err(schema_refused()),
            ObjectType::View | ObjectType::MaterializedView => {
                return Err(shared_object_refused("views"))
            }
            _ => Need::admin("run DDL"),
        },
        Statement::CreateView(_)
        | Statement::AlterView { .. }
        | Statement::CreateFunction(_)
        | Statement::DropFunction(_)
        | Statement::CreateMacro { .. } => {
            return Err(shared_object_refused("views and functions"))
        }
        _ => Need::admin("run DDL"),
    })
}

fn query_need(query: &Query) -> Result<Need> {
    let mut need = set_expr_need(&query.body)?;
    for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
        need = need.max(query_need(&cte.query)?);
    }
    Ok(need)
}

fn set_expr_need(body: &SetExpr) -> Result<Need> {
    Ok(match body {
        SetExpr::Select(select) if select.into.is_some() => {
            return Err(shared_object_refused("a table made by SELECT … INTO"))
        }
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => Need::read(),
        SetExpr::Query(query) => query_need(query)?,
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_need(left)?.max(set_expr_need(right)?)
        }
        SetExpr::Insert(stmt)
        | SetExpr::Update(stmt)
        | SetExpr::Delete(stmt)
        | SetExpr::Merge(stmt) => statement_need(stmt)?,
    })
}

fn set_need(set: &Set) -> Result<Need> {
    match set {
        Set::SingleAssignment { variable, .. } => setting_need(&object_text(variable)),
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().try_fold(Need::read(), |need, v| {
                Ok(need.max(setting_need(&object_text(v))?))
            })
        }
        Set::MultipleAssignments { assignments } => {
            assignments.iter().try_fold(Need::read(), |need, a| {
                Ok(need.max(setting_need(&object_text(&a.name))?))
            })
        }
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => Err(Error::InsufficientPrivilege(
            "a session keeps the role it logged in as; connect as another role instead".into(),
        )),
        // Time zone, names, transaction characteristics: the session's own.
        _ => Ok(Need::read()),
    }
}

fn object_text(name: &ObjectName) -> String {
    name.to_string().to_ascii_lowercase()
}

/// What changing the setting `name` needs: the query engine's settings
/// are the admin's; those that move files or swap the shared memory pool
/// are nobody's.
fn setting_need(name: &str) -> Result<Need> {
    let name = name.trim_matches('"');
    if name.starts_with("datafusion.runtime.") {
        return Err(Error::CantChangeSetting(format!(
            "parameter \"{name}\" cannot be changed: it sets the server's files or memory (query_memory_bytes and the data directory in sluice.toml do)"
        )));
    }
    if name.starts_with("datafusion.") {
        return Ok(Need::admin(format!("set \"{name}\"")));
    }
    Ok(Need::read())
}

/// What running `plan` needs, from every node it holds; an error if no
/// session may run it.
pub fn plan_need(plan: &LogicalPlan) -> Result<Need> {
    let mut need = Need::read();
    let mut refused = None;
    let walked = plan.apply_with_subqueries(|node| {
        let found = match node {
            LogicalPlan::Dml(dml) => Ok(match &dml.op {
                WriteOp::Insert(_) => Need::write(format!("INSERT into \"{}\"", dml.table_name)),
                WriteOp::Ctas => Need::admin("run DDL"),
                op => Need::write(format!(
                    "{} \"{}\"",
                    op.name().to_ascii_uppercase(),
                    dml.table_name
                )),
            }),
            LogicalPlan::Copy(_) => Err(copy_refused()),
            LogicalPlan::Ddl(ddl) => match ddl {
                DdlStatement::CreateCatalogSchema(_)
                | DdlStatement::DropCatalogSchema(_)
                | DdlStatement::CreateCatalog(_) => Err(schema_refused()),
                DdlStatement::CreateView(_)
                | DdlStatement::DropView(_)
                | DdlStatement::CreateFunction(_)
                | DdlStatement::DropFunction(_) => {
                    Err(shared_object_refused("views and functions"))
                }
                _ => Ok(Need::admin("run DDL")),
            },
            LogicalPlan::Statement(PlanStatement::SetVariable(set)) => setting_need(&set.variable),
            LogicalPlan::Statement(PlanStatement::ResetVariable(reset)) => {
                setting_need(&reset.variable)
            }
            _ => Ok(Need::read()),
        };
        match found {
            Ok(found) => {
                need = std::mem::replace(&mut need, Need::read()).max(found);
                Ok(TreeNodeRecursion::Continue)
            }
            Err(e) => {
                refused = Some(e);
                Ok(TreeNodeRecursion::Stop)
            }
        }
    });
    if let Some(e) = refused {
        return Err(e);
    }
    walked.map_err(Error::from)?;
    Ok(need)
}

/// Plans `sql`, which must only read (`COPY (query) TO STDOUT`, a
/// cursor's query, `CREATE TABLE … AS` and the like): anything that
/// writes, defines or sets is refused before it runs.
pub async fn plan_read_only(state: &SessionState, sql: &str) -> Result<LogicalPlan> {
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    if let datafusion::sql::parser::Statement::Statement(parsed) = &statement {
        check_width(parsed)?;
    }
    let plan = state.statement_to_plan(statement).await?;
    let need = plan_need(&plan)?;
    if need.group != RoleGroup::Reader {
        return Err(Error::Syntax(format!(
            "expected a query (SELECT, VALUES, WITH …), not a statement that would {}",
            need.action
        )));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
