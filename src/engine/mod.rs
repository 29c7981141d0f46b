//! The shared state of a running sluice: catalog, open stream logs, the
//! template query session, and the DDL that changes them. Front ends
//! (pgwire, HTTP) call into this; it calls into `catalog` and `log`.

mod explain;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;

use crate::catalog::{Catalog, StreamDef};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ingest;
use crate::log::{LogOptions, StreamLog};
use crate::query;
use crate::sql::{CreateStream, DropStream};
use crate::types::arrow_schema;

/// An open stream: its declaration and its log.
#[derive(Debug)]
pub struct Stream {
    pub def: StreamDef,
    pub schema: SchemaRef,
    pub log: Arc<StreamLog>,
}

/// The streams that exist now, by name.
#[derive(Debug, Default)]
pub struct Registry {
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().ok()?.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.streams
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&self, stream: Arc<Stream>) {
        if let Ok(mut s) = self.streams.write() {
            s.insert(stream.def.name.clone(), stream);
        }
    }

    fn remove(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.write().ok()?.remove(name)
    }
}

/// What a DDL statement did, for the command tag and notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlOutcome {
    Done,
    /// IF [NOT] EXISTS turned the statement into a no-op; the notice text.
    Skipped(String),
}

pub struct Engine {
    pub config: Config,
    catalog: Catalog,
    pub registry: Arc<Registry>,
    template: SessionContext,
    /// Serialises DDL so catalog and registry change together.
    ddl_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

impl Engine {
    /// Opens the data dir: catalog, then every stream's log (recovering
    /// torn tails), then removes log directories the catalog does not list
    /// (a crash between a DROP's commit and its file deletion).
    pub fn open(config: Config) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(config.data_dir.join("streams"))?;
        let catalog = Catalog::open(&config.data_dir.join("catalog.redb"))?;
        let registry = Arc::new(Registry::default());
        for def in catalog.streams()? {
            let stream = open_stream(&config, def)?;
            registry.insert(stream);
        }
        let known: Vec<String> = registry
            .list()
            .iter()
            .map(|s| s.def.id.to_string())
            .collect();
        for entry in std::fs::read_dir(config.data_dir.join("streams"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing log of a dropped stream");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let template =
            query::template_context(registry.clone(), config.limits.max_statement_bytes)?;
        Ok(Arc::new(Engine {
            config,
            catalog,
            registry,
            template,
            ddl_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// A session for one connection.
    pub fn new_session(&self) -> SessionContext {
        query::new_session(&self.template)
    }

    pub async fn create_stream(&self, create: CreateStream) -> Result<DdlOutcome> {
        let _guard = self.ddl_lock.lock().await;
        if self.registry.get(&create.name).is_some() {
            return if create.if_not_exists {
                Ok(DdlOutcome::Skipped(format!(
                    "relation \"{}\" already exists, skipping",
                    create.name
                )))
            } else {
                Err(Error::DuplicateTable(create.name))
            };
        }
        let def = StreamDef {
            name: create.name,
            id: 0,
            columns: create.columns,
            shards: create.shards,
            partition_key: create.partition_key,
            retention: create.retention.map(|(text, _)| text),
            event_time: create.event_time,
            schema_version: 1,
            created_at_ms: now_ms(),
        };
        let def = self.catalog.create_stream(def)?;
        let stream = match open_stream(&self.config, def.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Keep catalog and disk in agreement: undo the catalog entry.
                let _ = self.catalog.drop_stream(&def.name);
                return Err(e);
            }
        };
        self.registry.insert(stream);
        Ok(DdlOutcome::Done)
    }

    pub async fn drop_stream(&self, drop: DropStream) -> Result<Vec<DdlOutcome>> {
        let _guard = self.ddl_lock.lock().await;
        // Check all names first, so a failing DROP a, b drops neither.
        for name in &drop.names {
            if self.registry.get(name).is_none() && !drop.if_exists {
                return Err(Error::UndefinedTable(name.clone()));
            }
        }
        let mut outcomes = Vec::new();
        for name in &drop.names {
            let Some(stream) = self.registry.get(name) else {
                outcomes.push(DdlOutcome::Skipped(format!(
                    "stream \"{name}\" does not exist, skipping"
                )));
                continue;
            };
            self.catalog.drop_stream(name)?;
            self.registry.remove(name);
            stream.log.close();
            let dir: PathBuf = stream.log.dir().to_path_buf();
            // Deleting data is off the statement's critical path; a crash
            // before it finishes is cleaned up at the next start.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove dropped stream's log");
                }
            });
            outcomes.push(DdlOutcome::Done);
        }
        Ok(outcomes)
    }

    /// Runs `INSERT … VALUES` of literals into a stream without the query
    /// engine; `Ok(None)` if `stmt` is not such a statement.
    pub async fn try_insert_values(&self, stmt: &str) -> Result<Option<u64>> {
        let Some(insert) = ingest::plan_values_insert(&self.registry, stmt)? else {
            return Ok(None);
        };
        let batch = insert.to_batch()?;
        let bytes = batch.get_array_memory_size() as u64;
        if bytes > self.config.limits.max_statement_bytes {
            return Err(Error::ProgramLimit(format!(
                "INSERT of {bytes} bytes exceeds max_statement_bytes ({}); split it or use COPY",
                self.config.limits.max_statement_bytes
            )));
        }
        let ack = insert.stream.log.append(batch).await?;
        Ok(Some(ack.records()))
    }

    /// Whether `stmt` is an INSERT the engine runs itself (see
    /// [`Engine::try_insert_values`]); errors found while parsing it are
    /// reported now, as Postgres does at Parse time.
    pub fn is_values_insert(&self, stmt: &str) -> Result<bool> {
        Ok(ingest::plan_values_insert(&self.registry, stmt)?.is_some())
    }

    /// Rewrites a query-engine error about statement `stmt` into the
    /// Postgres message users expect (naming column and relation).
    pub fn explain_error(&self, stmt: &str, err: Error) -> Error {
        explain::explain(&self.registry, stmt, err)
    }

    /// Deletes expired segments of every stream; returns how many.
    pub fn enforce_retention(&self) -> u64 {
        let now = now_ms();
        self.registry
            .list()
            .iter()
            .map(|s| {
                s.log.enforce_retention(now).unwrap_or_else(|e| {
                    tracing::warn!(stream = %s.def.name, error = %e, "retention failed");
                    0
                })
            })
            .sum()
    }

    /// Stops every log writer after it commits what is queued.
    pub fn close(&self) {
        for stream in self.registry.list() {
            stream.log.close();
        }
    }
}

fn open_stream(config: &Config, def: StreamDef) -> Result<Arc<Stream>> {
    let schema = arrow_schema(&def.columns);
    let partition_key = def
        .partition_key
        .as_ref()
        .and_then(|k| def.columns.iter().position(|c| &c.name == k));
    let retention = def
        .retention
        .as_deref()
        .and_then(|r| humantime::parse_duration(r).ok());
    let log = StreamLog::open(
        &config.data_dir.join("streams").join(def.id.to_string()),
        schema.clone(),
        LogOptions {
            shards: def.shards,
            partition_key,
            segment_size_bytes: config.limits.segment_size_bytes,
            append_queue_depth: config.limits.append_queue_depth,
            retention,
        },
    )?;
    Ok(Arc::new(Stream { def, schema, log }))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
