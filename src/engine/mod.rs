//! The shared state of a running sluice: catalog, open stream logs, the
//! template query session, and the DDL that changes them. Front ends
//! (pgwire, HTTP) call into this; it calls into `catalog` and `log`.

mod derived;
mod explain;
mod registry;
mod sinks;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::SessionContext;

pub use registry::{Registry, Relation, Stream, ERRORS_STREAM};

use crate::catalog::{Catalog, StreamDef};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ingest;
use crate::log::{LogOptions, StreamLog};
use crate::query;
use crate::sql::{CreateStream, DropStream};
use crate::storage::StoreRegistry;
use crate::types::arrow_schema;

/// What a DDL statement did, for the command tag and notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlOutcome {
    Done,
    /// IF [NOT] EXISTS turned the statement into a no-op; the notice text.
    Skipped(String),
}

pub struct Engine {
    pub config: Config,
    catalog: Arc<Catalog>,
    pub registry: Arc<Registry>,
    /// Object stores for sinks and tables (shared with the query engine).
    pub stores: Arc<StoreRegistry>,
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
            if stream.def.name == ERRORS_STREAM {
                registry.set_errors(stream);
            } else {
                registry.insert(stream);
            }
        }
        if registry.errors().is_none() {
            let def = catalog.create_stream(derived::errors_stream_def())?;
            registry.set_errors(open_stream(&config, def)?);
        }
        let known: Vec<String> = registry
            .list()
            .iter()
            .chain(registry.errors().iter())
            .map(|s| s.def.id.to_string())
            .collect();
        for entry in std::fs::read_dir(config.data_dir.join("streams"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing log of a dropped stream");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let stores = Arc::new(StoreRegistry::new(config.s3.clone()));
        let template = query::template_context(
            registry.clone(),
            stores.clone(),
            config.limits.max_statement_bytes,
        )?;
        Ok(Arc::new(Engine {
            config,
            catalog: Arc::new(catalog),
            registry,
            stores,
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
        if let Some(skipped) = self.name_taken(&create.name, create.if_not_exists)? {
            return Ok(skipped);
        }
        let def = StreamDef {
            shards: create.shards,
            partition_key: create.partition_key,
            retention: create.retention.map(|(text, _)| text),
            event_time: create.event_time,
            reject_unknown_fields: create.reject_unknown_fields,
            ..StreamDef::new(create.name, create.columns)
        };
        self.create_and_open(def)?;
        Ok(DdlOutcome::Done)
    }

    /// `Ok(Some(notice))` when `name` exists and IF NOT EXISTS was given;
    /// 42P07 when it exists without; `Ok(None)` when it is free.
    fn name_taken(&self, name: &str, if_not_exists: bool) -> Result<Option<DdlOutcome>> {
        match (self.registry.relation(name), if_not_exists) {
            (None, _) => Ok(None),
            (Some(_), true) => Ok(Some(DdlOutcome::Skipped(format!(
                "relation \"{name}\" already exists, skipping"
            )))),
            (Some(_), false) => Err(Error::DuplicateTable(name.to_string())),
        }
    }

    /// Records a new stream in the catalog, opens its log and registers it.
    fn create_and_open(&self, def: StreamDef) -> Result<Arc<Stream>> {
        let def = self.catalog.create_stream(def)?;
        let stream = match open_stream(&self.config, def.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Keep catalog and disk in agreement: undo the catalog entry.
                let _ = self.catalog.drop_stream(&def.name);
                return Err(e);
            }
        };
        self.registry.insert(stream.clone());
        Ok(stream)
    }

    pub async fn drop_stream(&self, drop: DropStream) -> Result<Vec<DdlOutcome>> {
        let _guard = self.ddl_lock.lock().await;
        // Check every name first, so a failing DROP a, b drops neither.
        let mut doomed: Vec<Arc<Stream>> = Vec::new();
        let mut outcomes = Vec::new();
        for name in &drop.names {
            let Some(stream) = self.registry.get(name) else {
                if self.registry.relation(name).is_some() {
                    return Err(sinks::wrong_kind(name, "stream"));
                }
                if !drop.if_exists {
                    return Err(Error::UndefinedTable(name.clone()));
                }
                outcomes.push(DdlOutcome::Skipped(format!(
                    "stream \"{name}\" does not exist, skipping"
                )));
                continue;
            };
            let dependents = self.registry.dependents(name);
            let sinks = self.registry.sinks_of(name);
            if (!dependents.is_empty() || !sinks.is_empty()) && !drop.cascade {
                let names: Vec<String> = dependents
                    .iter()
                    .map(|d| format!("stream {}", d.def.name))
                    .chain(sinks.iter().map(|s| format!("sink {}", s.name())))
                    .collect();
                return Err(Error::DependentObjects(format!(
                    "cannot drop stream {name} because other objects depend on it: {}; use DROP STREAM ... CASCADE to drop the dependent objects too",
                    names.join(", ")
                )));
            }
            self.collect_with_dependents(stream, &mut doomed);
            outcomes.push(DdlOutcome::Done);
        }
        // Dependents before what they read, so no pipeline outlives its source.
        for stream in doomed.iter().rev() {
            self.drop_one(stream).await?;
        }
        Ok(outcomes)
    }

    fn collect_with_dependents(&self, stream: Arc<Stream>, out: &mut Vec<Arc<Stream>>) {
        if out.iter().any(|s| s.def.name == stream.def.name) {
            return;
        }
        let name = stream.def.name.clone();
        out.push(stream);
        for dependent in self.registry.dependents(&name) {
            self.collect_with_dependents(dependent, out);
        }
    }

    async fn drop_one(&self, stream: &Arc<Stream>) -> Result<()> {
        let name = &stream.def.name;
        for sink in self.registry.sinks_of(name) {
            self.drop_sink_now(&sink).await?;
        }
        if let Some(pipeline) = self.registry.remove_pipeline(name) {
            pipeline.stop().await;
        }
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
        Ok(())
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

    /// Stops the pipelines, then every log writer after it commits what
    /// is queued.
    pub async fn close(&self) {
        for sink in self.registry.sinks() {
            sink.stop().await;
        }
        for pipeline in self.registry.pipelines() {
            pipeline.stop().await;
        }
        let registry = self.registry.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for stream in registry.list().iter().chain(registry.errors().iter()) {
                stream.log.close();
            }
        })
        .await;
    }
}

pub(crate) fn open_stream(config: &Config, def: StreamDef) -> Result<Arc<Stream>> {
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

#[cfg(test)]
mod tests;
