//! What a session's role may run. With a password file, the superuser
//! `sluice` may do everything and other roles what their group allows
//! (readers query, writers also insert and copy in, admins also run DDL);
//! without one (loopback, trust) every session may. A refusal is 42501
//! naming the role, its group and what it tried.
//!
//! sluice's own statements are checked by their parsed form here. What
//! the query engine runs is checked by [`GuardHook`], which
//! datafusion-postgres calls with each statement it parsed, before any
//! other hook or the planner sees it, and by the session with the plan
//! at Execute ([`crate::query::guard`] decides both): no spelling
//! (comments, case, EXPLAIN ANALYZE, PREPARE, CTEs) changes what a
//! statement needs.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::results::Response;
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use super::auth::SUPERUSER;
use super::connection::Activity;
use super::to_pg_error;
use crate::catalog::RoleGroup;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::query::guard::{check_width, plan_need, statement_need, Need};
use crate::sql::{CopySource, Parsed};

/// The group a sluice statement needs, and how to name what it does.
fn needs(parsed: &Parsed) -> Need {
    let (group, action) = match parsed {
        Parsed::InsertValues { insert, .. } => (
            RoleGroup::Writer,
            format!("INSERT into \"{}\"", insert.table),
        ),
        Parsed::Copy(copy) if copy.from_stdin => {
            let target = match &copy.source {
                CopySource::Table { name, .. } => name.as_str(),
                CopySource::Query(_) => "a query",
            };
            (RoleGroup::Writer, format!("COPY into \"{target}\""))
        }
        // What DataFusion runs is checked from its parse and plan.
        Parsed::Sql(_)
        | Parsed::Copy(_)
        | Parsed::ShowStreams
        | Parsed::ShowPipelines
        | Parsed::ShowSinks
        | Parsed::Savepoint(_)
        | Parsed::ExplainCreateDerived(_) => (RoleGroup::Reader, "read".into()),
        Parsed::CreateStream(_)
        | Parsed::CreateDerived(_)
        | Parsed::DropStream(_)
        | Parsed::AlterStream(_)
        | Parsed::CreateSink(_)
        | Parsed::DropSink(_)
        | Parsed::FlushSink(_)
        | Parsed::CreateExternalTable(_)
        | Parsed::CreateTableAs(_)
        | Parsed::DropTable(_) => (RoleGroup::Admin, "run DDL".into()),
        Parsed::Role(role) => (RoleGroup::Admin, format!("run {}", role.tag())),
    };
    Need { group, action }
}

/// Refuses `need` if the role logged in to `activity` may not meet it;
/// an `Err` need is refused for every role.
fn check(engine: &Engine, activity: &Activity, need: Result<Need>) -> Result<()> {
    let need = need?;
    if engine.config.auth.password_file.is_none() {
        return Ok(());
    }
    let user = activity.user().unwrap_or_default();
    if user == SUPERUSER {
        return Ok(());
    }
    let group = engine.role_group(user)?;
    if group.is_some_and(|g| g >= need.group) {
        return Ok(());
    }
    let has = group.map_or("no group".to_string(), |g| g.name().to_string());
    Err(Error::InsufficientPrivilege(format!(
        "permission denied: role \"{user}\" ({has}) may not {}; that needs {}",
        need.action,
        need.group.name()
    )))
}

/// Refuses `parsed` if the session's role may not run it.
pub(super) fn check_parsed(engine: &Engine, activity: &Activity, parsed: &Parsed) -> Result<()> {
    check(engine, activity, Ok(needs(parsed)))
}

/// Refuses a prepared statement of the query engine at Execute, from its
/// parse and its plan.
pub(super) fn check_prepared(
    engine: &Engine,
    activity: &Activity,
    statement: &Statement,
    plan: &LogicalPlan,
) -> Result<()> {
    check(engine, activity, statement_need(statement))?;
    check(engine, activity, plan_need(plan))
}

/// The first hook of every session: refuses a statement before the other
/// hooks (SET, cursors, transactions) or the planner see it.
pub(super) struct GuardHook {
    engine: Arc<Engine>,
    activity: Arc<Activity>,
}

impl GuardHook {
    pub(super) fn new(engine: Arc<Engine>, activity: Arc<Activity>) -> GuardHook {
        GuardHook { engine, activity }
    }

    /// Why `statement` may not run in this session, if it may not: too
    /// wide to plan, or beyond the role's group.
    fn refusal(&self, statement: &Statement) -> Option<pgwire::error::PgWireError> {
        check_width(statement)
            .and_then(|()| check(&self.engine, &self.activity, statement_need(statement)))
            .err()
            .map(to_pg_error)
    }
}

#[async_trait]
impl QueryHook for GuardHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.refusal(statement).map(Err)
    }

    /// A refusal at Parse spares the planning; Execute checks the
    /// statement again with its plan.
    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.refusal(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Checked by the session before datafusion-postgres calls hooks.
        None
    }
}
