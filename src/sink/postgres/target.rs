//! The PostgreSQL database a sink writes to: connecting (the password read
//! from the environment or a file at each connect, never from SQL text),
//! matching the stream's columns to the target table's by name, and the
//! table of delivered offsets that makes delivery exactly once.
//!
//! The offsets table (`sluice_sink_offsets`, in the target table's schema)
//! has one row per (sink, source shard): the next source offset not yet in
//! the target. It is written in the same transaction as the rows, so after
//! any crash or lost connection it says exactly what the target holds.

use std::collections::HashMap;
use std::time::Duration;

use datafusion::arrow::datatypes::Schema;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{Client, Config, Connection, NoTls};

use super::copy::{ColumnPlan, PgType};
use crate::catalog::{PostgresDef, SinkDef};
use crate::error::{Error, Result};
use crate::types::SqlType;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const OFFSETS_TABLE: &str = "sluice_sink_offsets";

/// How the target's rows are written: the COPY statement and, per target
/// column, where its values come from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub copy: String,
    pub columns: Vec<ColumnPlan>,
    /// Stream columns the target table lacks, not delivered (a running
    /// sink's stream gained them by ALTER STREAM … ADD COLUMN).
    pub skipped: Vec<String>,
    /// The offsets table, schema-qualified and quoted.
    pub offsets: String,
}

#[derive(Debug, Clone)]
pub struct Target {
    config: Config,
    /// `sslmode` asks for TLS (require, verify-ca, verify-full).
    tls: bool,
    def: PostgresDef,
    /// The location as written (it carries no password), for messages.
    location: String,
    /// This sink's rows in the offsets table: its name and creation time,
    /// so a sink dropped and created again under the same name starts over.
    pub key: String,
}

impl Target {
    pub fn new(sink: &SinkDef) -> Result<Target> {
        let def = sink
            .postgres
            .clone()
            .ok_or_else(|| Error::Internal("a PostgreSQL sink without its settings".into()))?;
        let (url, tls) = tls_settings(&sink.location)?;
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::InvalidParameter(format!("location '{}': {e}", sink.location)))?;
        if config.get_user().is_none() {
            return Err(Error::InvalidParameter(format!(
                "location '{}' names no user: write postgresql://user@host:port/database",
                sink.location
            )));
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name(format!("sluice sink {}", sink.name));
        Ok(Target {
            config,
            tls,
            def,
            location: sink.location.clone(),
            key: format!("{}@{}", sink.name, sink.created_at_ms),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// A new connection (its I/O runs on its own task until dropped).
    pub async fn connect(&self) -> Result<Client> {
        let mut config = self.config.clone();
        if let Some(password) = self.password()? {
            config.password(password);
        }
        if self.tls {
            let tls = super::tls::Rustls::new(self.def.root_cert.as_deref())?;
            self.finish_connect(config.connect(tls)).await
        } else {
            self.finish_connect(config.connect(NoTls)).await
        }
    }

    /// Waits for `connecting` (bounded) and runs the connection's I/O on
    /// its own task.
    async fn finish_connect<S, T>(
        &self,
        connecting: impl std::future::Future<
            Output = std::result::Result<(Client, Connection<S, T>), tokio_postgres::Error>,
        >,
    ) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.connect_error(&e)),
            Err(_) => {
                return Err(Error::ConnectionFailure(format!(
                    "could not connect to {}: timed out after {} s",
                    self.location,
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target = %location, error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        match e.as_db_error() {
            // The server answered: a wrong password, an unknown database.
            Some(db) => Error::ConnectionFailure(format!(
                "could not connect to {}: {} (SQLSTATE {})",
                self.location,
                db.message(),
                db.code().code()
            )),
            None => Error::ConnectionFailure(format!(
                "could not connect to {}: {}",
                self.location,
                with_causes(e)
            )),
        }
    }

    fn password(&self) -> Result<Option<String>> {
        if let Some(path) = &self.def.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::ConnectionFailure(format!("password_file '{path}' cannot be read: {e}"))
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        let var = self.def.password_env.as_deref().unwrap_or("PGPASSWORD");
        match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(_) if self.def.password_env.is_none() => Ok(None),
            Err(_) => Err(Error::ConnectionFailure(format!(
                "password_env: the server's environment has no {var}"
            ))),
        }
    }

    /// Checks the target table against the stream's columns and creates
    /// the offsets table beside it: every stream column needs a target
    /// column of the same name (42703) and a type that holds its values
    /// (42804); target columns the stream lacks need a default or NULLs
    /// (23502). Unless `strict` (at CREATE SINK), a nullable stream column
    /// the target lacks is left out instead (a column the stream gained
    /// later, delivered once the target has it too).
    pub async fn plan(
        &self,
        client: &Client,
        source: &Schema,
        stream: &str,
        strict: bool,
    ) -> Result<Plan> {
        let table = &self.def.table;
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text, a.attname::text, t.typname::text,
                        a.attnotnull, a.atthasdef
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_type t ON t.oid = a.atttypid
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[table],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) if db.code().code() == "42P01" || db.code().code() == "3F000" => {
                    Error::UndefinedTable(format!("{table}\" on \"{}", self.location))
                }
                _ => self.query_error(&e),
            })?;
        let Some(first) = rows.first() else {
            return Err(Error::UndefinedTable(format!(
                "{table}\" on \"{}",
                self.location
            )));
        };
        let schema: String = first.get(0);
        let relname: String = first.get(1);
        let target: HashMap<String, (String, bool, bool)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(2), (r.get(3), r.get(4), r.get(5))))
            .collect();
        let mut columns = Vec::new();
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        for (i, field) in source.fields().iter().enumerate() {
            let Some((typname, _, _)) = target.get(field.name()) else {
                if !strict && field.is_nullable() {
                    skipped.push(field.name().clone());
                    continue;
                }
                return Err(Error::UndefinedColumn(format!(
                    "column \"{}\" of stream \"{stream}\" does not exist in table \"{table}\" on {}; add it there (or deliver a stream without it)",
                    field.name(),
                    self.location
                )));
            };
            let accepted = PgType::from_typname(typname).filter(|t| t.accepts(field.data_type()));
            let Some(pg) = accepted else {
                return Err(Error::DatatypeMismatch(format!(
                    "column \"{}\" is {} in stream \"{stream}\" but {typname} in table \"{table}\" on {}; the target column needs the same or a wider type",
                    field.name(),
                    SqlType::from_arrow(field.data_type())
                        .map(SqlType::pg_name)
                        .unwrap_or_else(|| field.data_type().to_string()),
                    self.location
                )));
            };
            columns.push(ColumnPlan {
                source: i,
                target: pg,
            });
            names.push(quote_ident(field.name()));
        }
        for (name, (_, not_null, has_default)) in &target {
            if *not_null && !*has_default && source.field_with_name(name).is_err() {
                return Err(Error::NotNull(format!(
                    "column \"{name}\" of table \"{table}\" on {} is NOT NULL without a default, and stream \"{stream}\" has no such column",
                    self.location
                )));
            }
        }
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&relname));
        let offsets = format!("{}.{}", quote_ident(&schema), OFFSETS_TABLE);
        self.create_offsets_table(client, &offsets).await?;
        Ok(Plan {
            copy: format!(
                "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
                names.join(", ")
            ),
            columns,
            skipped,
            offsets,
        })
    }

    async fn create_offsets_table(&self, client: &Client, offsets: &str) -> Result<()> {
        let created = client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {offsets} (
                    sink text NOT NULL,
                    shard integer NOT NULL,
                    next_offset bigint NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (sink, shard))"
            ))
            .await;
        match created {
            Ok(()) => Ok(()),
            // Two shards creating it at once: one wins, which is all we need.
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| matches!(d.code().code(), "23505" | "42P07")) =>
            {
                Ok(())
            }
            Err(e) => Err(self.query_error(&e)),
        }
    }

    /// The next undelivered offset per shard, as the target knows it.
    pub async fn offsets(&self, client: &Client, plan: &Plan) -> Result<HashMap<u32, u64>> {
        let rows = client
            .query(
                &format!(
                    "SELECT shard, next_offset FROM {} WHERE sink = $1",
                    plan.offsets
                ),
                &[&self.key],
            )
            .await
            .map_err(|e| self.query_error(&e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let shard = u32::try_from(r.get::<_, i32>(0)).ok()?;
                let next = u64::try_from(r.get::<_, i64>(1)).ok()?;
                Some((shard, next))
            })
            .collect())
    }

    /// A failed statement on the target, with its SQLSTATE in the message.
    pub fn query_error(&self, e: &tokio_postgres::Error) -> Error {
        match e.as_db_error() {
            Some(db) => Error::Storage(format!(
                "{}: {} (SQLSTATE {})",
                self.location,
                db.message(),
                db.code().code()
            )),
            None if e.is_closed() => {
                Error::ConnectionFailure(format!("{}: the connection was closed", self.location))
            }
            None => Error::ConnectionFailure(format!("{}: {e}", self.location)),
        }
    }
}

/// Whether a failed COPY was refused for its rows (a value the target's
/// type or constraints reject), not for the connection or the server:
/// classes 22 (data exception) and 23 (integrity constraint).
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| matches!(&d.code().code()[..2], "22" | "23"))
}

/// The location as tokio-postgres reads it, and whether it asks for TLS:
/// libpq's `sslmode=verify-ca|verify-full` become `require` (sluice
/// always verifies) and `sslrootcert` is taken out (the sink's settings
/// hold it, confined and absolute).
fn tls_settings(location: &str) -> Result<(String, bool)> {
    let mut url = url::Url::parse(location)
        .map_err(|e| Error::InvalidParameter(format!("location '{location}': {e}")))?;
    let mut tls = false;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslrootcert")
        .map(|(k, v)| {
            if k == "sslmode" && matches!(v.as_ref(), "require" | "verify-ca" | "verify-full") {
                tls = true;
                (k.into_owned(), "require".to_string())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok((url.to_string(), tls))
}

/// An error and what caused it (a TLS handshake's reason, a refused
/// connection's errno), which the error's own text leaves out.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// An identifier as PostgreSQL needs it quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
