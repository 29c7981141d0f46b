//! `CREATE ROLE name [WITH] LOGIN PASSWORD '…' IN ROLE sluice_reader |
//! sluice_writer | sluice_admin`, `ALTER ROLE name [WITH] PASSWORD '…'`,
//! `DROP ROLE [IF EXISTS] name`. The superuser `sluice` takes its
//! password from the password file, so SQL neither alters nor drops it.

use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, ObjectType, Password, RoleOption, Statement,
};

use super::{option_text, parse_one, strip_comments};
use crate::catalog::RoleGroup;
use crate::error::{Error, Result};

const SUPERUSER: &str = "sluice";

#[derive(Debug, Clone, PartialEq)]
pub enum RoleStatement {
    Create {
        name: String,
        group: RoleGroup,
        password: String,
    },
    AlterPassword {
        name: String,
        password: String,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
}

impl RoleStatement {
    pub fn tag(&self) -> &'static str {
        match self {
            RoleStatement::Create { .. } => "CREATE ROLE",
            RoleStatement::AlterPassword { .. } => "ALTER ROLE",
            RoleStatement::Drop { .. } => "DROP ROLE",
        }
    }
}

fn password_of(password: Option<&Password>) -> Result<String> {
    match password {
        Some(Password::Password(expr)) => option_text(expr)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Syntax("PASSWORD takes a non-empty string literal".into())),
        _ => Err(Error::Syntax(
            "a role needs PASSWORD '…' (it logs in with SCRAM-SHA-256)".into(),
        )),
    }
}

fn not_superuser(name: &str) -> Result<()> {
    if name == SUPERUSER {
        return Err(Error::InsufficientPrivilege(format!(
            "role \"{SUPERUSER}\" is defined by the password file, not by SQL"
        )));
    }
    Ok(())
}

pub(super) fn parse(stmt: &str) -> Result<RoleStatement> {
    // The parser's message quotes the token it stopped at, which can be
    // the password: say where the grammar is, never what was written.
    let parsed = parse_one(strip_comments(stmt)).map_err(|e| match e {
        Error::Syntax(_) => Error::Syntax(
            "syntax error in a role statement (its text is not repeated: it may hold a password); \
             expected CREATE ROLE name [WITH] LOGIN PASSWORD '…' IN ROLE group, ALTER ROLE name \
             [WITH] PASSWORD '…' or DROP ROLE [IF EXISTS] name"
                .into(),
        ),
        other => other,
    })?;
    match parsed {
        Statement::CreateRole(create) => {
            let [name] = create.names.as_slice() else {
                return Err(Error::Syntax("CREATE ROLE takes one name".into()));
            };
            let name = super::object_name(name)?;
            not_superuser(&name)?;
            if create.login == Some(false) {
                return Err(Error::FeatureNotSupported(
                    "roles without LOGIN are not supported; the groups are sluice_reader, sluice_writer and sluice_admin".into(),
                ));
            }
            let groups: Vec<&str> = create
                .in_role
                .iter()
                .chain(&create.in_group)
                .map(|i| i.value.as_str())
                .collect();
            let group = match groups.as_slice() {
                [one] => RoleGroup::from_name(one).ok_or_else(|| {
                    Error::UndefinedObject(format!(
                        "role \"{one}\" does not exist; IN ROLE takes sluice_reader, sluice_writer or sluice_admin"
                    ))
                })?,
                _ => {
                    return Err(Error::Syntax(
                        "CREATE ROLE needs IN ROLE sluice_reader, sluice_writer or sluice_admin (one)".into(),
                    ))
                }
            };
            let password = password_of(create.password.as_ref())?;
            Ok(RoleStatement::Create {
                name,
                group,
                password,
            })
        }
        Statement::AlterRole { name, operation } => {
            not_superuser(&name.value)?;
            let AlterRoleOperation::WithOptions { options } = operation else {
                return Err(Error::FeatureNotSupported(
                    "ALTER ROLE supports only [WITH] PASSWORD '…'".into(),
                ));
            };
            let passwords: Vec<&Password> = options
                .iter()
                .filter_map(|o| match o {
                    RoleOption::Password(p) => Some(p),
                    _ => None,
                })
                .collect();
            if passwords.len() != options.len() || passwords.len() != 1 {
                return Err(Error::FeatureNotSupported(
                    "ALTER ROLE supports only [WITH] PASSWORD '…'".into(),
                ));
            }
            Ok(RoleStatement::AlterPassword {
                name: name.value.clone(),
                password: password_of(passwords.first().copied())?,
            })
        }
        Statement::Drop {
            object_type: ObjectType::Role,
            if_exists,
            names,
            ..
        } => {
            let [name] = names.as_slice() else {
                return Err(Error::Syntax("DROP ROLE takes one name".into()));
            };
            let name = super::object_name(name)?;
            not_superuser(&name)?;
            Ok(RoleStatement::Drop { name, if_exists })
        }
        _ => Err(Error::Syntax("expected CREATE, ALTER or DROP ROLE".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_statements_parse() {
        assert_eq!(
            parse("CREATE ROLE bob WITH LOGIN PASSWORD 's3cret' IN ROLE sluice_writer").unwrap(),
            RoleStatement::Create {
                name: "bob".into(),
                group: RoleGroup::Writer,
                password: "s3cret".into()
            }
        );
        assert_eq!(
            parse("ALTER ROLE bob PASSWORD 'n3w'").unwrap(),
            RoleStatement::AlterPassword {
                name: "bob".into(),
                password: "n3w".into()
            }
        );
        assert_eq!(
            parse("DROP ROLE IF EXISTS bob").unwrap(),
            RoleStatement::Drop {
                name: "bob".into(),
                if_exists: true
            }
        );
        for (bad, code) in [
            ("CREATE ROLE bob LOGIN PASSWORD 'x'", "42601"),
            ("CREATE ROLE bob LOGIN PASSWORD 'x' IN ROLE admins", "42704"),
            (
                "CREATE ROLE bob LOGIN PASSWORD hunter2 IN ROLE sluice_reader",
                "42601",
            ),
            (
                "CREATE ROLE bob LOGIN PASSWORD 'hunter2' IN ROLE sluice_reader junk",
                "42601",
            ),
            (
                "CREATE ROLE sluice LOGIN PASSWORD 'x' IN ROLE sluice_admin",
                "42501",
            ),
            ("DROP ROLE sluice", "42501"),
            ("ALTER ROLE bob RENAME TO carol", "0A000"),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.sqlstate(), code, "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
