//! The shared state of a running sluice: catalog, open stream logs, the
//! template query session, and the DDL that changes them. Front ends
//! (pgwire, HTTP) call into this; it calls into `catalog` and `log`.

mod alter;
mod derived;
mod parquet_schema;
mod roles;
mod sinks;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::catalog::{Catalog, StreamDef};
use crate::clock::now_ms;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ingest::Writer;
use crate::query::{self, Registry};
use crate::runtime::dead_letters::errors_stream_def;
use crate::runtime::Stream;
use crate::runtime::ERRORS_STREAM;
use crate::sql::{CreateStream, DropStream};
use crate::storage::{LocationPolicy, StoreRegistry};

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
    /// torn tails), then removes the log directories of streams the
    /// catalog records as dropped (a crash between a DROP's commit and its
    /// file deletion) and moves any other directory it does not list to
    /// `quarantine/` (a lost or replaced catalog must not cost the data).
    pub fn open(config: Config) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(config.data_dir.join("streams"))?;
        let catalog = Catalog::open(&config.data_dir.join("catalog.redb"))?;
        let registry = Arc::new(Registry::default());
        for def in catalog.streams()? {
            let versions = catalog.schema_versions(&def)?;
            let stream = Stream::open(&config, def, &versions)?;
            if stream.def.name == ERRORS_STREAM {
                registry.streams.set_errors(stream);
            } else {
                registry.streams.insert(stream);
            }
        }
        if registry.errors().is_none() {
            let def = catalog.create_stream(errors_stream_def())?;
            registry
                .streams
                .set_errors(Stream::open(&config, def, &[])?);
        }
        let known: Vec<String> = registry
            .streams
            .all()
            .iter()
            .map(|s| s.def.id.to_string())
            .collect();
        let dropped = catalog.dropped_streams()?;
        for entry in std::fs::read_dir(config.data_dir.join("streams"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if known.contains(&name) {
                continue;
            }
            match name.parse::<u64>().ok().filter(|id| dropped.contains(id)) {
                // A DROP committed, then the process died before the
                // directory was gone.
                Some(id) => {
                    tracing::info!(dir = %entry.path().display(), "removing log of a dropped stream");
                    std::fs::remove_dir_all(entry.path())?;
                    catalog.forget_dropped_stream(id)?;
                }
                None => quarantine(&config, &entry.path())?,
            }
        }
        registry.set_quarantined(quarantined(&config)?);
        let policy = LocationPolicy::new(
            &config.data_dir,
            &config.auth.allowed_locations,
            &config.secret_files(),
        )?;
        let stores = Arc::new(StoreRegistry::new(config.s3.clone(), policy));
        let catalog = Arc::new(catalog);
        let template = query::template_context(
            registry.clone(),
            &catalog,
            stores.clone(),
            &config.limits,
            &config.data_dir.join("tmp").join("spill"),
        )?;
        Ok(Arc::new(Engine {
            config,
            catalog,
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

    /// An ingest writer into `table` when it names a stream (rejected
    /// records go to `sluice.errors`); `Ok(None)` when it names something
    /// else, left to the query engine.
    pub fn writer(&self, table: &str) -> Result<Option<Writer>> {
        self.registry
            .get(table)
            .map(|stream| {
                Writer::new(
                    stream,
                    self.registry.errors(),
                    self.config.limits.max_statement_bytes,
                )
            })
            .transpose()
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
        let stream = match Stream::open(&self.config, def.clone(), &[]) {
            Ok(s) => s,
            Err(e) => {
                // Keep catalog and disk in agreement: undo the catalog entry.
                let _ = self.catalog.drop_stream(&def.name);
                return Err(e);
            }
        };
        self.registry.streams.insert(stream.clone());
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
            let dependents = self.registry.streams.dependents(name);
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
        for dependent in self.registry.streams.dependents(&name) {
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
        self.registry.streams.remove(name);
        stream.log.close();
        let dir: PathBuf = stream.log.dir().to_path_buf();
        // Deleting data is off the statement's critical path; a crash
        // before it finishes is cleaned up at the next start.
        let (catalog, id) = (self.catalog.clone(), stream.def.id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                if let Err(e) = catalog.forget_dropped_stream(id) {
                    tracing::warn!(error = %e, "could not forget a dropped stream");
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove dropped stream's log")
            }
        });
        Ok(())
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
            for stream in registry.streams.all() {
                stream.log.close();
            }
        })
        .await;
    }
}

/// Moves a log directory the catalog does not know to
/// `<data-dir>/quarantine/streams/`, where an operator can inspect or
/// restore it; sluice never deletes data it cannot prove it abandoned.
fn quarantine(config: &Config, dir: &std::path::Path) -> Result<()> {
    let aside = config.data_dir.join("quarantine").join("streams");
    std::fs::create_dir_all(&aside)?;
    let name = dir.file_name().map_or_else(
        || "unnamed".to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    let target = aside.join(format!("{name}-{}", now_ms()));
    std::fs::rename(dir, &target)?;
    tracing::warn!(
        dir = %dir.display(),
        moved_to = %target.display(),
        "a stream log directory the catalog does not list was moved to quarantine, not deleted"
    );
    Ok(())
}

/// Every directory in quarantine (this start's and earlier ones'), until
/// an operator restores or removes it.
fn quarantined(config: &Config) -> Result<Vec<query::Quarantined>> {
    let aside = config.data_dir.join("quarantine").join("streams");
    let Ok(entries) = std::fs::read_dir(&aside) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let moved_at_ms = name
            .rsplit_once('-')
            .and_then(|(_, ms)| ms.parse().ok())
            .unwrap_or(0);
        let (mut shards, mut segments, mut bytes) = (0u32, 0u64, 0u64);
        for shard in std::fs::read_dir(entry.path())?.flatten() {
            if !shard.file_name().to_string_lossy().starts_with("shard-") {
                continue;
            }
            shards += 1;
            for segment in std::fs::read_dir(shard.path())?.flatten() {
                segments += 1;
                bytes += segment.metadata().map_or(0, |m| m.len());
            }
        }
        out.push(query::Quarantined {
            dir: format!("quarantine/streams/{name}"),
            moved_at_ms,
            shards,
            segments,
            bytes,
        });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

#[cfg(test)]
mod tests;
