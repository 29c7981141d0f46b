//! The pgwire traits of a connection, on its [`Session`]. Simple queries
//! are split into statements; sluice statements run in `execute`, the
//! rest in `DfSessionService` (which brings SET/SHOW, transactions and
//! psql's pg_catalog queries). In the extended protocol a sluice statement
//! is stored as `(text, None)` and executed at Execute; DataFusion
//! statements are prepared and executed by `DfSessionService`. COPY's
//! messages go to the session's pending COPY.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
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
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::PgWireBackendMessage;

use super::auth::{Authenticator, Security};
use super::connection::Activity;
use super::cursor::described_rows;
use super::parser::{deallocate, DfStatement, RoutingParser};
use super::privilege::check_prepared;
use super::session::Session;
use super::statement::{in_place, CancelRouter, Cancels, Control, HEAVY_STATEMENT_BYTES};
use super::to_pg_error;
use crate::engine::Engine;
use crate::sql;

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
        ConnectionHandlers {
            session: Arc::new(Session::new(engine, activity.clone(), control)),
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
            check_prepared(&self.engine, &self.activity, statement, plan).map_err(to_pg_error)?;
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

#[async_trait]
impl CopyHandler for Session {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.push(copy_data.data).await;
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let rows = self.copy.done().await.map_err(to_pg_error)?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        to_pg_error(self.copy.fail(&fail.message).await)
    }
}
