//! Login roles: created, re-passworded and dropped by an admin; the
//! catalog keeps each role's group and salted verifier.

use super::{DdlOutcome, Engine};
use crate::catalog::{RoleDef, RoleGroup};
use crate::clock::now_ms;
use crate::error::{Error, Result};

impl Engine {
    /// A role's group, if the role exists.
    pub fn role_group(&self, name: &str) -> Result<Option<RoleGroup>> {
        Ok(self.catalog.role(name)?.map(|r| r.group))
    }

    /// A role's salted SCRAM verifier `(salt, salted password)`.
    pub fn role_verifier(&self, name: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .catalog
            .role(name)?
            .map(|r| (r.salt, r.salted_password)))
    }

    pub fn create_role(
        &self,
        name: &str,
        group: RoleGroup,
        verifier: (Vec<u8>, Vec<u8>),
    ) -> Result<()> {
        self.catalog.create_role(&RoleDef {
            name: name.to_string(),
            group,
            salt: verifier.0,
            salted_password: verifier.1,
            created_at_ms: now_ms(),
        })
    }

    pub fn set_role_password(&self, name: &str, verifier: (Vec<u8>, Vec<u8>)) -> Result<()> {
        self.catalog.set_role_password(name, verifier.0, verifier.1)
    }

    pub fn drop_role(&self, name: &str, if_exists: bool) -> Result<DdlOutcome> {
        match self.catalog.drop_role(name) {
            Ok(()) => Ok(DdlOutcome::Done),
            Err(Error::UndefinedObject(_)) if if_exists => Ok(DdlOutcome::Skipped(format!(
                "role \"{name}\" does not exist, skipping"
            ))),
            Err(e) => Err(e),
        }
    }
}
