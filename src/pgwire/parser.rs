//! The extended protocol's Parse: sluice statements are kept as
//! `(text, None)` and executed by the session; the rest is planned by
//! DataFusion (datafusion-postgres's parser). Also `DEALLOCATE` of
//! statements prepared this way.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::PgWireResult;

use super::statement::{in_place, HEAVY_STATEMENT_BYTES};
use super::{map_pg_error, to_pg_error};
use crate::engine::Engine;
use crate::error::Error;
use crate::sql::{self, Parsed};

/// A prepared statement: its text and, for DataFusion's, its parse and
/// plan (`None` for a sluice statement, run by the session).
pub(super) type DfStatement = (
    String,
    Option<(
        datafusion::sql::sqlparser::ast::Statement,
        datafusion::logical_expr::LogicalPlan,
    )>,
);

/// `DEALLOCATE` of a statement prepared with the protocol's Parse (as
/// psycopg and pgjdbc send it) frees it; `ALL` is accepted and frees them
/// at disconnect (a Parse of a name in use replaces it). Other names are
/// SQL-level PREPAREs, left to the query engine.
pub(super) fn deallocate<C: ClientPortalStore>(client: &C, stmt: &str) -> Option<Response>
where
    C::PortalStore: PortalStore,
{
    match sql::parse_deallocate(stmt)? {
        sql::Deallocate::All => Some(Response::Execution(Tag::new("DEALLOCATE ALL"))),
        sql::Deallocate::Named(name) => {
            client.portal_store().get_statement(&name)?;
            client.portal_store().rm_statement(&name);
            Some(Response::Execution(Tag::new("DEALLOCATE")))
        }
    }
}

/// Parses for the extended protocol: sluice statements become
/// `(text, None)`, executed by [`Session`]; the rest is DataFusion's.
/// One per connection.
pub struct RoutingParser {
    pub(super) df_parser: Arc<datafusion_postgres::Parser>,
    pub(super) engine: Arc<Engine>,
    /// The literal INSERT parsed by the last Parse, for the Execute that
    /// usually follows it (drivers prepare an unnamed statement per
    /// INSERT): parsing is syntax only, so its result stands for the same
    /// text whatever happened in between.
    pub(super) last_insert: Mutex<Option<(String, Parsed)>>,
}

impl RoutingParser {
    /// The parse of `text`: the one kept from its Parse, or a new one.
    pub(super) fn parse_for_execute(&self, text: &str) -> Result<Parsed, Error> {
        let kept = self
            .last_insert
            .lock()
            .ok()
            .and_then(|mut last| match last.take() {
                Some((kept_text, parsed)) if kept_text == text => Some(parsed),
                other => {
                    *last = other;
                    None
                }
            });
        match kept {
            Some(parsed) => Ok(parsed),
            None => sql::parse(text),
        }
    }
}

#[async_trait]
impl QueryParser for RoutingParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        text: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = sql::split_statements(text);
        if statements.len() > 1 {
            return Err(to_pg_error(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            )));
        }
        let Some(stmt) = statements.pop() else {
            return Ok(None);
        };
        let parsed = sql::parse(stmt).map_err(to_pg_error)?;
        if let Parsed::InsertValues { insert, .. } = &parsed {
            // Errors found in a literal INSERT are reported at Parse, as
            // Postgres does; it then runs without the query engine.
            if let Some(writer) = self.engine.writer(&insert.table).map_err(to_pg_error)? {
                writer.check_values(insert).map_err(to_pg_error)?;
                if let Ok(mut last) = self.last_insert.lock() {
                    *last = Some((stmt.to_string(), parsed));
                }
                return Ok(Some((stmt.to_string(), None)));
            }
        }
        match parsed.as_query() {
            Some(query) => in_place(
                query.len() > HEAVY_STATEMENT_BYTES,
                self.df_parser.parse_sql(client, &query, types),
            )
            .await
            .map_err(map_pg_error),
            None => Ok(Some((stmt.to_string(), None))),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.df_parser
            .get_parameter_types(stmt)
            .map_err(map_pg_error)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.df_parser
            .get_result_schema(stmt, column_format)
            .map_err(map_pg_error)
    }
}
