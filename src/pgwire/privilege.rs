//! What a session's role may run. With a password file, the superuser
//! `sluice` may do everything and other roles what their group allows
//! (readers query, writers also insert and copy in, admins also run DDL);
//! without one (loopback, trust) every session may. A refusal is 42501
//! naming the role, its group and what it tried.

use crate::catalog::RoleGroup;
use crate::error::{Error, Result};
use crate::sql::{leading_words, CopySource, Parsed};

use super::auth::SUPERUSER;
use super::handler::Session;

/// The group a statement needs, and how to name what it does.
fn needs(parsed: &Parsed) -> (RoleGroup, String) {
    match parsed {
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
        Parsed::Copy(_)
        | Parsed::ShowStreams
        | Parsed::ShowPipelines
        | Parsed::ShowSinks
        | Parsed::Savepoint(_)
        | Parsed::ExplainCreateDerived(_) => (RoleGroup::Reader, "read".into()),
        Parsed::Sql(text) => match leading_words(text, 1).first().map(String::as_str) {
            Some("INSERT") => (RoleGroup::Writer, "INSERT".into()),
            _ => (RoleGroup::Reader, "read".into()),
        },
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
    }
}

impl Session {
    /// Refuses `parsed` if the session's role may not run it.
    pub(super) fn check_privilege(&self, parsed: &Parsed) -> Result<()> {
        if self.engine.config.auth.password_file.is_none() {
            return Ok(());
        }
        let user = self.activity.user().unwrap_or_default();
        if user == SUPERUSER {
            return Ok(());
        }
        let (needed, action) = needs(parsed);
        let group = self.engine.role_group(user)?;
        if group.is_some_and(|g| g >= needed) {
            return Ok(());
        }
        let has = group.map_or("no group".to_string(), |g| g.name().to_string());
        Err(Error::InsufficientPrivilege(format!(
            "permission denied: role \"{user}\" ({has}) may not {action}; that needs {}",
            needed.name()
        )))
    }
}
