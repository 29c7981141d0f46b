//! Roles from a session's point of view: running CREATE/ALTER/DROP ROLE
//! (the verifier is computed here, the catalog keeps it) and
//! `session_user`, the role a connection logged in as.

use std::sync::Arc;

use super::auth::verifier;
use super::connection::Activity;
use crate::engine::{DdlOutcome, Engine};
use crate::error::Error;
use crate::sql::RoleStatement;

/// Runs CREATE ROLE, ALTER ROLE … PASSWORD or DROP ROLE.
pub(super) fn run_role(engine: &Engine, role: RoleStatement) -> Result<DdlOutcome, Error> {
    match role {
        RoleStatement::Create {
            name,
            group,
            password,
        } => {
            engine.create_role(&name, group, verifier(&password)?)?;
            Ok(DdlOutcome::Done)
        }
        RoleStatement::AlterPassword { name, password } => {
            engine.set_role_password(&name, verifier(&password)?)?;
            Ok(DdlOutcome::Done)
        }
        RoleStatement::Drop { name, if_exists } => engine.drop_role(&name, if_exists),
    }
}

/// `session_user` (psql's `current_user` and `user` are rewritten to it):
/// the role this connection logged in as.
pub(super) fn session_user(activity: Arc<Activity>) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    use datafusion::scalar::ScalarValue;
    datafusion::logical_expr::create_udf(
        "session_user",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            let user = activity.user().unwrap_or_default().to_string();
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user))))
        }),
    )
}
