//! Password authentication on pgwire: SCRAM-SHA-256 (pgwire's SASL
//! handler) against salted verifiers built at start, never the password
//! itself; today the one role is the superuser `sluice`, whose password
//! comes from `[auth] password_file`. Without a password file, connections
//! are accepted without one, and the server serves loopback only (see
//! `Config::check_exposure`).

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::connection::Activity;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The superuser every password file sets.
pub const SUPERUSER: &str = "sluice";

/// Salted SCRAM verifiers: the superuser's from the password file, the
/// other roles' from the catalog (looked up at each login, so a new or
/// re-passworded role logs in at once).
pub struct Verifiers {
    roles: HashMap<String, (Vec<u8>, Vec<u8>)>,
    engine: std::sync::OnceLock<Arc<Engine>>,
}

impl Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifiers")
    }
}

/// A fresh salt and the SCRAM salted password of `password` (what the
/// catalog keeps instead of the password).
pub fn verifier(password: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut salt = vec![0u8; 16];
    getrandom02::getrandom(&mut salt)
        .map_err(|e| Error::Internal(format!("no randomness for a salt: {e}")))?;
    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    Ok((salt, salted))
}

impl Verifiers {
    /// The superuser's verifier from `password_file`, which must not be
    /// readable by others (a secret any local user can read is none).
    pub fn from_password_file(path: &Path) -> Result<Verifiers> {
        let password = crate::config::read_secret_file(path, "password file")?;
        Ok(Verifiers {
            roles: HashMap::from([(SUPERUSER.to_string(), verifier(&password)?)]),
            engine: std::sync::OnceLock::new(),
        })
    }

    /// Where the other roles are found (the engine opens after the
    /// password file is checked).
    pub fn attach(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }
}

#[async_trait]
impl AuthSource for Verifiers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let found = match self.roles.get(user) {
            Some(v) => Some(v.clone()),
            None => match self.engine.get() {
                Some(engine) => engine
                    .role_verifier(user)
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?,
                None => None,
            },
        };
        match found {
            Some((salt, salted)) => Ok(Password::new(Some(salt), salted)),
            // The same answer as a wrong password: whether a role exists is
            // not told to someone who cannot log in.
            None => Err(PgWireError::InvalidPassword(user.to_string())),
        }
    }
}

/// What a connection must present: a password (SCRAM) if verifiers are
/// configured, TLS if required.
#[derive(Clone, Default)]
pub struct Security {
    pub verifiers: Option<Arc<Verifiers>>,
    pub tls: Option<Arc<crate::tls::Certificates>>,
}

/// How a connection starts: without authentication (loopback, no password
/// file) or with SCRAM-SHA-256; plaintext refused when TLS is required.
pub struct Authenticator {
    method: Method,
    require_tls: bool,
}

enum Method {
    Open(Startup),
    Scram {
        handler: Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
        activity: Arc<Activity>,
    },
}

impl Authenticator {
    pub fn new(
        security: &Security,
        connections: Arc<ConnectionManager>,
        activity: Arc<Activity>,
    ) -> Authenticator {
        let method = match security.verifiers.clone() {
            None => Method::Open(Startup::new(connections, activity)),
            Some(verifiers) => {
                let mut scram = ScramAuth::new(verifiers);
                scram.set_iterations(SCRAM_ITERATIONS);
                let mut parameters = DefaultServerParameterProvider::default();
                parameters.server_version = crate::sql::SERVER_VERSION.to_string();
                let handler = SASLAuthStartupHandler::new(Arc::new(parameters))
                    .with_scram(scram)
                    .with_connection_manager(connections);
                Method::Scram {
                    handler: Box::new(handler),
                    activity,
                }
            }
        };
        Authenticator {
            method,
            require_tls: security.tls.as_ref().is_some_and(|t| t.required()),
        }
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for Authenticator {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls && !client.is_secure() {
            return Err(fatal(
                "28000",
                "this server requires TLS: connect with sslmode=require (or verify-full); plaintext is refused".into(),
            ));
        }
        match &self.method {
            Method::Open(startup) => startup.on_startup(client, message).await,
            Method::Scram { handler, activity } => {
                handler
                    .on_startup(client, message)
                    .await
                    .map_err(|e| match e {
                        // PostgreSQL's words, with the role the client
                        // named (the proof check does not know it).
                        PgWireError::InvalidPassword(_) => {
                            let user = client.metadata().get("user").cloned().unwrap_or_default();
                            fatal(
                                "28P01",
                                format!("password authentication failed for user \"{user}\""),
                            )
                        }
                        other => other,
                    })?;
                if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    activity.start(&user);
                }
                Ok(())
            }
        }
    }
}

/// The startup of a connection without a password (loopback, trust):
/// pgwire's no-auth handler, which also registers the connection for
/// cancel requests and marks the session started as the role it names.
pub struct Startup {
    connections: Arc<ConnectionManager>,
    activity: Arc<Activity>,
}

impl Startup {
    pub fn new(connections: Arc<ConnectionManager>, activity: Arc<Activity>) -> Startup {
        Startup {
            connections,
            activity,
        }
    }
}

#[async_trait]
impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }

    async fn post_startup<C>(
        &self,
        client: &mut C,
        _message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        self.activity.start(&user);
        Ok(())
    }
}
