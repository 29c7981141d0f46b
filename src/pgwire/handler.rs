//! Per-connection pgwire handlers. Simple queries are split into
//! statements; sluice statements go to the engine, the rest to
//! `DfSessionService` (which brings SET/SHOW, transactions and psql's
//! pg_catalog queries). In the extended protocol a sluice statement is
//! stored as `(text, None)` and executed here; DataFusion statements are
//! prepared and executed by `DfSessionService`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::DfSessionService;
use futures::{Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::DEFAULT_NAME;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;

use super::auth::{Authenticator, Security};
use super::connection::Activity;
use super::copy::CopyState;
use super::cursor::{described_rows, CursorHook, Cursors};
use super::parser::{deallocate, RoutingParser};
use super::privilege::GuardHook;
use super::statement::{in_place, CancelRouter, Cancels, Control, HEAVY_STATEMENT_BYTES};
use super::{into_error, to_pg_error};
use crate::engine::{DdlOutcome, Engine};
use crate::error::Error;
use crate::ingest::Writer;
use crate::query::explain_insert_error;
use crate::sql::{self, Parsed};

pub(super) type DfStatement = (String, Option<(sqlparser::ast::Statement, LogicalPlan)>);

/// Everything one connection needs; built per accepted socket.
pub struct ConnectionHandlers {
    session: Arc<Session>,
    startup: Arc<Authenticator>,
    cancel: Arc<CancelRouter>,
}

impl ConnectionHandlers {
    pub fn new(
        engine: Arc<Engine>,
        connections: Arc<ConnectionManager>,
        cancels: Arc<Cancels>,
        peer: Option<std::net::TcpStream>,
        activity: Arc<Activity>,
        security: &Security,
    ) -> Self {
        let timeout_ms = engine.config.limits.statement_timeout_ms;
        let control = Control::new(
            cancels.clone(),
            peer,
            Some(std::time::Duration::from_millis(timeout_ms)),
        );
        let ctx = engine.new_session();
        ctx.register_udf(super::roles::session_user(activity.clone()));
        let ctx = Arc::new(ctx);
        let cursors = Arc::new(Cursors::default());
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(GuardHook::new(engine.clone(), activity.clone())),
            Arc::new(CursorHook {
                cursors: cursors.clone(),
            }),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let df = Arc::new(DfSessionService::new_with_hooks(ctx.clone(), hooks));
        ConnectionHandlers {
            session: Arc::new(Session {
                parser: Arc::new(RoutingParser {
                    df_parser: df.query_parser(),
                    engine: engine.clone(),
                    last_insert: Default::default(),
                }),
                engine,
                ctx,
                df,
                cursors,
                copy: tokio::sync::Mutex::new(None),
                activity: activity.clone(),
                control,
            }),
            startup: Arc::new(Authenticator::new(
                security,
                connections.clone(),
                activity.clone(),
            )),
            cancel: Arc::new(CancelRouter {
                cancels,
                manager: connections,
            }),
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.session.clone()
    }
}

pub struct Session {
    pub(super) engine: Arc<Engine>,
    pub(super) ctx: Arc<SessionContext>,
    df: Arc<DfSessionService>,
    cursors: Arc<Cursors>,
    parser: Arc<RoutingParser>,
    pub(super) copy: tokio::sync::Mutex<Option<CopyState>>,
    /// Statements running now, for shutdown.
    pub(super) activity: Arc<Activity>,
    /// Cancel, statement timeout and disconnect for queries.
    control: Arc<Control>,
}

impl Session {
    /// Runs what the engine executes itself (sluice statements, literal
    /// INSERTs into streams); `Ok(None)` if `parsed` is for DataFusion.
    async fn run_sluice<C>(&self, client: &mut C, parsed: Parsed) -> PgWireResult<Option<Response>>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.check_privilege(&parsed).map_err(to_pg_error)?;
        let (tag, outcomes) = match parsed {
            Parsed::CreateStream(create) => (
                "CREATE STREAM",
                vec![self
                    .engine
                    .create_stream(create)
                    .await
                    .map_err(to_pg_error)?],
            ),
            Parsed::CreateDerived(create) => (
                "CREATE STREAM",
                vec![self
                    .engine
                    .create_derived(create)
                    .await
                    .map_err(to_pg_error)?],
            ),
            Parsed::DropStream(drop) => (
                "DROP STREAM",
                self.engine.drop_stream(drop).await.map_err(to_pg_error)?,
            ),
            Parsed::AlterStream(alter) => (
                // The tag names what the client wrote (psql shows it).
                if sql::leading_words(&alter.statement, 2)
                    .get(1)
                    .map(String::as_str)
                    == Some("TABLE")
                {
                    "ALTER TABLE"
                } else {
                    "ALTER STREAM"
                },
                vec![self.engine.alter_stream(alter).await.map_err(to_pg_error)?],
            ),
            Parsed::CreateSink(create) => (
                "CREATE SINK",
                vec![self
                    .engine
                    .create_sink(*create)
                    .await
                    .map_err(to_pg_error)?],
            ),
            Parsed::DropSink(drop) => (
                "DROP SINK",
                self.engine.drop_sink(drop).await.map_err(to_pg_error)?,
            ),
            Parsed::FlushSink(name) => {
                self.engine.flush_sink(&name).await.map_err(to_pg_error)?;
                ("FLUSH SINK", Vec::new())
            }
            Parsed::CreateExternalTable(sql) => (
                "CREATE TABLE",
                vec![self
                    .engine
                    .create_external_table(&sql)
                    .await
                    .map_err(to_pg_error)?],
            ),
            Parsed::CreateTableAs(ctas) => {
                let (outcome, rows) = self
                    .engine
                    .create_table_as(ctas, &self.ctx)
                    .await
                    .map_err(to_pg_error)?;
                send_notices(client, vec![outcome]).await?;
                return Ok(Some(Response::Execution(
                    Tag::new("SELECT").with_rows(rows as usize),
                )));
            }
            Parsed::DropTable(drop) => (
                "DROP TABLE",
                self.engine.drop_table(drop).await.map_err(to_pg_error)?,
            ),
            Parsed::InsertValues { insert, .. } => {
                let Some(writer) = self.writer(&insert.table).map_err(to_pg_error)? else {
                    return Ok(None);
                };
                let rows = writer.insert_values(&insert).await.map_err(to_pg_error)?;
                return Ok(Some(Response::Execution(
                    Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
                )));
            }
            Parsed::Copy(copy) => {
                return self.start_copy(copy).await.map(Some).map_err(to_pg_error)
            }
            Parsed::Savepoint(savepoint) => {
                if let Some(notice) = savepoint.notice {
                    send_notice(client, notice).await?;
                }
                return Ok(Some(Response::Execution(Tag::new(savepoint.tag))));
            }
            Parsed::Role(role) => {
                let tag = role.tag();
                let outcome = self.run_role(role).map_err(to_pg_error)?;
                (tag, vec![outcome])
            }
            Parsed::Sql(_)
            | Parsed::ShowStreams
            | Parsed::ShowPipelines
            | Parsed::ShowSinks
            | Parsed::ExplainCreateDerived(_) => return Ok(None),
        };
        send_notices(client, outcomes).await?;
        Ok(Some(Response::Execution(Tag::new(tag))))
    }
}

/// A NOTICE per statement that IF [NOT] EXISTS turned into a no-op.
async fn send_notices<C>(client: &mut C, outcomes: Vec<DdlOutcome>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for outcome in outcomes {
        if let DdlOutcome::Skipped(msg) = outcome {
            send_notice(client, msg).await?;
        }
    }
    Ok(())
}

async fn send_notice<C>(client: &mut C, message: String) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), message);
    client
        .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
            notice,
        )))
        .await?;
    Ok(())
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let statements = sql::split_statements(query);
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for stmt in statements {
            // Like Postgres: results so far, then the error, then stop.
            match self.simple_statement(client, stmt).await {
                Ok(mut r) => responses.append(&mut r),
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

impl Session {
    async fn simple_statement<C>(&self, client: &mut C, stmt: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(response) = deallocate(client, stmt) {
            return Ok(vec![response]);
        }
        let parsed = sql::parse(stmt).map_err(to_pg_error)?;
        let text = parsed.as_query().unwrap_or_default();
        if let Some(response) = self.run_sluice(client, parsed).await? {
            return Ok(vec![response]);
        }
        // Only what DataFusion runs is stopped by cancel, timeout or a
        // lost client: a sluice statement is bounded, and an append cut
        // off after its request reached the log would still be stored.
        let watch = self.control.begin(client);
        let heavy = text.len() > HEAVY_STATEMENT_BYTES;
        let responses = in_place(
            heavy,
            watch.run(<DfSessionService as SimpleQueryHandler>::do_query(
                &self.df, client, &text,
            )),
        )
        .await
        .map_err(|e| self.explain(&text, e))?;
        Ok(watch.guard(responses, &self.activity))
    }

    /// Maps a DataFusion failure to our error, naming the column a bad
    /// INSERT value was meant for.
    fn explain(&self, stmt: &str, e: PgWireError) -> PgWireError {
        match into_error(e) {
            Ok(err) => to_pg_error(explain_insert_error(
                &self.engine.registry.streams,
                stmt,
                err,
            )),
            Err(other) => other,
        }
    }

    /// The writer of `table` when it names a stream; `Ok(None)` when it
    /// names something else (left to the query engine).
    pub(super) fn writer(&self, table: &str) -> Result<Option<Writer>, Error> {
        writer(&self.engine, table)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = DfStatement;
    type QueryParser = RoutingParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// Describe of a statement answers ParameterDescription, then
    /// RowDescription or, for a statement without rows (INSERT, DDL,
    /// DECLARE), NoData, as PostgreSQL does: pgwire sends an empty
    /// RowDescription there, which tells drivers (pgjdbc) that rows come
    /// back, and they then fail a successful INSERT. A FETCH (statement or
    /// portal) is described with its cursor's columns; other portals take
    /// pgwire's default.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let statement = if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => Some((stmt.clone(), true)),
                _ => None,
            }
        } else {
            match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => Some((portal.statement.clone(), false)),
                _ => None,
            }
        };
        if let Some((stmt, of_statement)) = statement {
            // A cursor is a portal too: psycopg describes it by its name.
            let cursor_rows = match self.cursors.fields(name) {
                Some(fields) if !of_statement => Some(Some(fields)),
                _ => described_rows(&stmt.statement.0, &self.cursors),
            };
            if of_statement || cursor_rows.is_some() {
                // One description of the statement serves both messages.
                let described = if of_statement {
                    Some(self.do_describe_statement(client, &stmt).await?)
                } else {
                    None
                };
                let fields = match (cursor_rows, &described) {
                    (Some(rows), _) => rows.map(|f| f.to_vec()).unwrap_or_default(),
                    (None, Some(described)) => described.fields.clone(),
                    (None, None) => Vec::new(),
                };
                if let Some(described) = &described {
                    let types = described.parameters.iter().map(|t| t.oid()).collect();
                    client
                        .feed(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(types),
                        ))
                        .await?;
                }
                let rows = if fields.is_empty() {
                    PgWireBackendMessage::NoData(NoData::new())
                } else {
                    PgWireBackendMessage::RowDescription(RowDescription::new(
                        fields.iter().map(Into::into).collect(),
                    ))
                };
                client.send(rows).await?;
                return Ok(());
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let (text, plan) = &portal.statement.statement;
        if plan.is_none() {
            let parsed = self.parser.parse_for_execute(text).map_err(to_pg_error)?;
            if let Some(response) = self.run_sluice(client, parsed).await? {
                return Ok(response);
            }
        }
        if let Some((statement, plan)) = plan {
            self.check_plan(statement, plan).map_err(to_pg_error)?;
        }
        let watch = self.control.begin(client);
        let response = watch
            .run(<DfSessionService as ExtendedQueryHandler>::do_query(
                &self.df, client, portal, max_rows,
            ))
            .await
            .map_err(|e| self.explain(text, e))?;
        Ok(watch.guard_one(response, &self.activity))
    }
}

/// The writer of `table` when it names a stream; `Ok(None)` otherwise.
pub(super) fn writer(engine: &Engine, table: &str) -> Result<Option<Writer>, Error> {
    engine
        .registry
        .get(table)
        .map(|stream| {
            Writer::new(
                stream,
                engine.registry.errors(),
                engine.config.limits.max_statement_bytes,
            )
        })
        .transpose()
}
