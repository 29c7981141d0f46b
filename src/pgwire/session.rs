//! One connection's state: its DataFusion session (with the hooks every
//! statement passes: privileges, cursors, SET/SHOW, transactions), the
//! parser of the extended protocol, its cursors, the COPY in progress,
//! and what cancels or times out its queries. Statements run in
//! `execute`; the pgwire traits are implemented in `handler`.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::DfSessionService;
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::error::PgWireError;

use super::connection::Activity;
use super::copy::PendingCopy;
use super::cursor::{CursorHook, Cursors};
use super::parser::RoutingParser;
use super::privilege::GuardHook;
use super::statement::Control;
use super::{into_error, to_pg_error};
use crate::engine::Engine;
use crate::query::explain_insert_error;

pub struct Session {
    pub(super) engine: Arc<Engine>,
    pub(super) ctx: Arc<SessionContext>,
    pub(super) df: Arc<DfSessionService>,
    pub(super) cursors: Arc<Cursors>,
    pub(super) parser: Arc<RoutingParser>,
    pub(super) copy: PendingCopy,
    /// Statements running now, for shutdown; the role logged in.
    pub(super) activity: Arc<Activity>,
    /// Cancel, statement timeout and disconnect for queries.
    pub(super) control: Arc<Control>,
}

impl Session {
    pub(super) fn new(engine: Arc<Engine>, activity: Arc<Activity>, control: Arc<Control>) -> Self {
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
        Session {
            parser: Arc::new(RoutingParser {
                df_parser: df.query_parser(),
                engine: engine.clone(),
                last_insert: Default::default(),
            }),
            engine,
            ctx,
            df,
            cursors,
            copy: PendingCopy::default(),
            activity,
            control,
        }
    }

    /// Maps a DataFusion failure to our error, naming the column a bad
    /// INSERT value was meant for.
    pub(super) fn explain(&self, stmt: &str, e: PgWireError) -> PgWireError {
        match into_error(e) {
            Ok(err) => to_pg_error(explain_insert_error(
                &self.engine.registry.streams,
                stmt,
                err,
            )),
            Err(other) => other,
        }
    }
}
