//! SQL cursors (`DECLARE … CURSOR FOR query`, `FETCH`, `CLOSE`), as
//! psycopg's server-side cursors and pgjdbc's fetch size use them.
//! datafusion-postgres keeps a declared cursor as a pgwire portal and
//! fetches from it; this hook adds what clients need on top: DECLARE's
//! query is planned at Parse, so its parameters are described and bound
//! (`DECLARE c CURSOR FOR SELECT … WHERE x = $1`), and each cursor's row
//! description is kept, so a FETCH is described with the columns it
//! returns (a client told "no columns" and then sent rows crashes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{DeclareType, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::PortalStore;
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use super::to_pg_error;
use crate::error::Error;
use crate::query::guard::plan_read_only;

/// Cursors of one connection: their row descriptions by name.
#[derive(Default)]
pub struct Cursors {
    fields: Mutex<HashMap<String, Arc<Vec<FieldInfo>>>>,
}

impl Cursors {
    /// The columns a FETCH from `name` returns, if it is a cursor.
    pub fn fields(&self, name: &str) -> Option<Arc<Vec<FieldInfo>>> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<FieldInfo>>>> {
        self.fields.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What Describe answers for a cursor statement: `Some(None)` for
/// DECLARE (NoData), `Some(Some(columns))` for a FETCH from a known
/// cursor; `None` for any other statement.
pub fn described_rows(text: &str, cursors: &Cursors) -> Option<Option<Arc<Vec<FieldInfo>>>> {
    match cursor_statement(text)? {
        ("DECLARE", _) => Some(None),
        (_, name) => Some(cursors.fields(&name)),
    }
}

/// The cursor name of `DECLARE name …` or `FETCH … name`.
fn cursor_statement(text: &str) -> Option<(&'static str, String)> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    let first = crate::sql::leading_words(text, 1);
    if !matches!(first.first().map(String::as_str), Some("DECLARE" | "FETCH")) {
        return None;
    }
    let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, text)
        .ok()?
        .pop()?;
    match parsed {
        Statement::Declare { stmts } => {
            Some(("DECLARE", stmts.first()?.names.first()?.value.clone()))
        }
        Statement::Fetch { name, .. } => Some(("FETCH", name.value)),
        _ => None,
    }
}

pub struct CursorHook {
    pub cursors: Arc<Cursors>,
}

impl CursorHook {
    async fn declare(
        &self,
        statement: &Statement,
        plan: Option<&LogicalPlan>,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> PgWireResult<Response> {
        let Statement::Declare { stmts } = statement else {
            return Err(to_pg_error(Error::Internal("not a DECLARE".into())));
        };
        let [declare] = stmts.as_slice() else {
            return Err(to_pg_error(Error::Syntax(
                "DECLARE one cursor at a time".into(),
            )));
        };
        let (Some(DeclareType::Cursor), Some(name), Some(query)) = (
            &declare.declare_type,
            declare.names.first(),
            &declare.for_query,
        ) else {
            return Err(to_pg_error(Error::Syntax(
                "expected DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query"
                    .into(),
            )));
        };
        let plan = match plan {
            Some(plan) => bind(plan, params)?,
            None => plan_read_only(&ctx.state(), &query.to_string())
                .await
                .map_err(to_pg_error)?,
        };
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| to_pg_error(Error::from_datafusion(e)))?;
        let response = encode_dataframe(df, &Format::UnifiedText, None).await?;
        self.cursors
            .lock()
            .insert(name.value.clone(), response.row_schema());
        let stored = Arc::new(StoredStatement::new(
            name.value.clone(),
            (query.to_string(), None),
            vec![],
        ));
        let portal = Portal::new_cursor(name.value.clone(), stored);
        portal.start(response).await;
        client.portal_store().put_portal(Arc::new(portal));
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }
}

/// The plan with the bound parameters, each cast to the type the plan
/// inferred for it (a client may send int2 for a bigint comparison).
fn bind(plan: &LogicalPlan, params: &ParamValues) -> PgWireResult<LogicalPlan> {
    let error = |e: datafusion::error::DataFusionError| to_pg_error(Error::from_datafusion(e));
    let types = plan.get_parameter_types().map_err(error)?;
    let params = match params {
        ParamValues::List(values) => ParamValues::List(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let wanted = types.get(&format!("${}", i + 1)).cloned().flatten();
                    match wanted {
                        Some(t) if v.value.data_type() != t => v.value.cast_to(&t).map(Into::into),
                        _ => Ok(v.clone()),
                    }
                })
                .collect::<datafusion::error::Result<_>>()
                .map_err(error)?,
        ),
        named => named.clone(),
    };
    plan.clone()
        .replace_params_with_values(&params)
        .map_err(error)
}

#[async_trait]
impl QueryHook for CursorHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Declare { .. } => Some(
                self.declare(statement, None, &ParamValues::List(vec![]), ctx, client)
                    .await,
            ),
            Statement::Close { .. } => {
                self.forget(statement);
                CursorStatementHook
                    .handle_simple_query(statement, ctx, client)
                    .await
            }
            _ => fetch_answer(
                statement,
                CursorStatementHook
                    .handle_simple_query(statement, ctx, client)
                    .await,
            ),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // DECLARE is planned as its query: Describe then reports (and Bind
        // decodes) the query's parameters; its rows are answered NoData.
        if let Statement::Declare { stmts } = statement {
            let query = stmts.first().and_then(|d| d.for_query.as_ref())?;
            return Some(
                plan_read_only(&ctx.state(), &query.to_string())
                    .await
                    .map_err(to_pg_error),
            );
        }
        CursorStatementHook
            .handle_extended_parse_query(statement, ctx, client)
            .await
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Declare { .. } => Some(
                self.declare(statement, Some(plan), params, ctx, client)
                    .await,
            ),
            Statement::Close { .. } => {
                self.forget(statement);
                CursorStatementHook
                    .handle_extended_query(statement, plan, params, ctx, client)
                    .await
            }
            _ => fetch_answer(
                statement,
                CursorStatementHook
                    .handle_extended_query(statement, plan, params, ctx, client)
                    .await,
            ),
        }
    }
}

/// A FETCH through datafusion-postgres's cursor hook, answered as
/// PostgreSQL does: tag `FETCH n`, and 55000 for a backward scan of a
/// forward-only cursor.
fn fetch_answer(
    statement: &Statement,
    answer: Option<PgWireResult<Response>>,
) -> Option<PgWireResult<Response>> {
    use datafusion::sql::sqlparser::ast::FetchDirection as D;
    let Statement::Fetch { direction, .. } = statement else {
        return answer;
    };
    if !matches!(
        direction,
        D::Next | D::Forward { .. } | D::ForwardAll | D::Count { .. } | D::All
    ) {
        return Some(Err(to_pg_error(Error::ObjectNotInPrerequisiteState(
            "cursor can only scan forward (sluice's cursors are NO SCROLL)".into(),
        ))));
    }
    match answer? {
        Ok(Response::Query(mut rows)) => {
            rows.command_tag = "FETCH".into();
            Some(Ok(Response::Query(rows)))
        }
        other => Some(other),
    }
}

impl CursorHook {
    fn forget(&self, statement: &Statement) {
        use datafusion::sql::sqlparser::ast::CloseCursor;
        if let Statement::Close { cursor } = statement {
            match cursor {
                CloseCursor::All => self.cursors.lock().clear(),
                CloseCursor::Specific { name } => {
                    self.cursors.lock().remove(&name.value);
                }
            }
        }
    }
}
