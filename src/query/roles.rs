//! Roles as `pg_catalog.pg_roles` shows them (psql's `\du`, DBeaver's
//! role list): the superuser `sluice`, the three group roles (which
//! cannot log in) and every login role of the catalog with its group in
//! `sluice_member_of(name)`, the `{group}` array text `\du` prints.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{
    PgCatalogContextProvider, Role,
};

use crate::catalog::{Catalog, RoleGroup};

/// The superuser role of a password file.
const SUPERUSER: &str = "sluice";
const GROUPS: [RoleGroup; 3] = [RoleGroup::Admin, RoleGroup::Reader, RoleGroup::Writer];

/// Holds the catalog weakly: DataFusion's pg_catalog keeps providers
/// alive past the engine, and the catalog's file lock must be released
/// when the engine closes (a reopen in the same process needs it).
#[derive(Clone)]
pub struct Roles {
    catalog: Weak<Catalog>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Roles")
    }
}

impl Roles {
    pub fn new(catalog: &Arc<Catalog>) -> Roles {
        Roles {
            catalog: Arc::downgrade(catalog),
        }
    }

    fn login_role(&self, name: &str) -> Option<crate::catalog::RoleDef> {
        self.catalog.upgrade()?.role(name).ok().flatten()
    }

    /// The group a role belongs to, as `\du`'s "Member of" prints it.
    fn member_of(&self, name: &str) -> String {
        match self.login_role(name) {
            Some(role) => format!("{{{}}}", role.group.name()),
            None => "{}".to_string(),
        }
    }
}

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        let mut names: Vec<String> = std::iter::once(SUPERUSER.to_string())
            .chain(GROUPS.iter().map(|g| g.name().to_string()))
            .collect();
        match self.catalog.upgrade().map(|c| c.roles()) {
            Some(Ok(roles)) => names.extend(roles.into_iter().map(|r| r.name)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pg_roles: the catalog's roles are unreadable")
            }
            None => {}
        }
        names
    }

    /// Always a role: pg_roles asks for every name `roles` gave, and one
    /// dropped in between shows as a role that cannot log in.
    async fn role(&self, name: &str) -> Option<Role> {
        let superuser = name == SUPERUSER;
        let login = superuser || self.login_role(name).is_some();
        Some(Role {
            name: name.to_string(),
            is_superuser: superuser,
            can_login: login,
            can_create_db: superuser,
            can_create_role: superuser || RoleGroup::from_name(name) == Some(RoleGroup::Admin),
            can_create_user: superuser,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// `sluice_member_of(role)`: `{group}` of a login role, `{}` otherwise.
pub fn member_of_udf(roles: Roles) -> ScalarUDF {
    datafusion::logical_expr::create_udf(
        "sluice_member_of",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = names[0]
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(
                        "sluice_member_of takes text".into(),
                    )
                })?;
            let groups: StringArray = (0..names.len())
                .map(|i| (!names.is_null(i)).then(|| roles.member_of(names.value(i))))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(groups)))
        }),
    )
}
