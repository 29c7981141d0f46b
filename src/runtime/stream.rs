//! An open stream (its declaration, Arrow schema and log) and the set of
//! open streams by name, which every layer above the log looks names up in.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;

use crate::catalog::{SchemaVersion, StreamDef};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::{LogOptions, ReadSchema, StreamLog, Versions};
use crate::types::{arrow_schema, ColumnDef};

/// The catalog name of the dead-letter stream (schema `sluice`).
pub const ERRORS_STREAM: &str = "sluice.errors";

/// An open stream at one schema version: its declaration and its log.
/// `ALTER STREAM` replaces the `Stream` (same log) in [`Streams`]; a
/// holder of the old one keeps a consistent view of its version, and
/// what it appends is written, and read back, as that version.
#[derive(Debug)]
pub struct Stream {
    pub def: StreamDef,
    pub schema: SchemaRef,
    /// Each column's DEFAULT as a value (parsed once per version), what
    /// ingest writes and readers of older frames see where it is missing.
    pub defaults: Vec<Option<ScalarValue>>,
    pub log: Arc<StreamLog>,
}

impl Stream {
    /// Opens (recovering) the log of `def` under the data directory;
    /// `versions` are its schema versions, oldest first.
    pub fn open(
        config: &Config,
        def: StreamDef,
        versions: &[SchemaVersion],
    ) -> Result<Arc<Stream>> {
        let schema = arrow_schema(&def.columns);
        let defaults = column_defaults(&def.columns)?;
        let mut by_number: std::collections::BTreeMap<u32, SchemaRef> = versions
            .iter()
            .map(|v| (v.version, arrow_schema(&v.columns)))
            .collect();
        by_number.insert(def.schema_version, schema.clone());
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
            Versions::new(by_number)?,
            LogOptions {
                shards: def.shards,
                partition_key,
                segment_size_bytes: config.limits.segment_size_bytes,
                append_queue_depth: config.limits.append_queue_depth,
                retention,
            },
        )?;
        Ok(Arc::new(Stream {
            def,
            schema,
            defaults,
            log,
        }))
    }

    /// The same log at a newer schema version (`ALTER STREAM`): the log
    /// accepts and shows the version from now on.
    pub fn evolved(&self, def: StreamDef) -> Result<Arc<Stream>> {
        let schema = arrow_schema(&def.columns);
        let defaults = column_defaults(&def.columns)?;
        self.log.evolve(def.schema_version, schema.clone());
        Ok(Arc::new(Stream {
            def,
            schema,
            defaults,
            log: self.log.clone(),
        }))
    }

    /// How to read this stream's frames (of any version) in its schema,
    /// only the columns `projection` names (`None`: all).
    pub fn read_schema(&self, projection: Option<&[usize]>) -> Result<ReadSchema> {
        let all: Vec<usize> = (0..self.def.columns.len()).collect();
        let indices = projection.unwrap_or(&all);
        let schema = Arc::new(self.schema.project(indices)?);
        let defaults = indices
            .iter()
            .map(|i| self.defaults.get(*i).cloned().flatten())
            .collect();
        Ok(ReadSchema::new(schema, defaults))
    }

    /// Users write only to declared streams: a derived stream is written
    /// by its pipeline, `sluice.errors` by the server.
    pub fn accepts_inserts(&self) -> bool {
        self.def.pipeline.is_none() && self.def.name != ERRORS_STREAM
    }

    /// [`Stream::accepts_inserts`] as the error every write path returns
    /// (42809, naming who writes the stream instead).
    pub fn check_insertable(&self) -> Result<()> {
        if self.accepts_inserts() {
            return Ok(());
        }
        Err(Error::WrongObjectType(format!(
            "cannot insert into \"{}\": it is written by {}",
            self.def.name,
            match &self.def.pipeline {
                Some(p) => format!("its continuous query over \"{}\"", p.source),
                None => "the server".to_string(),
            }
        )))
    }

    /// Where a new consumer starts per shard: the first retained record
    /// (`start = 'earliest'`) or the end now (`'latest'`).
    pub fn start_offsets(&self, earliest: bool) -> Vec<u64> {
        if earliest {
            self.log.shard_stats().iter().map(|s| s.first_seq).collect()
        } else {
            self.log.end_offsets()
        }
    }
}

/// The DEFAULT of each column as a value.
fn column_defaults(columns: &[ColumnDef]) -> Result<Vec<Option<ScalarValue>>> {
    columns.iter().map(ColumnDef::default_value).collect()
}

/// The open streams by name, and `sluice.errors` (kept apart: it is not
/// in schema `public`).
#[derive(Debug, Default)]
pub struct Streams {
    by_name: RwLock<BTreeMap<String, Arc<Stream>>>,
    errors: OnceLock<Arc<Stream>>,
}

impl Streams {
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.by_name.read().ok()?.get(name).cloned()
    }

    /// The stream `name`, or 42P01.
    pub fn require(&self, name: &str) -> Result<Arc<Stream>> {
        self.get(name)
            .ok_or_else(|| Error::UndefinedTable(name.to_string()))
    }

    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.by_name
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every open log, `sluice.errors` included.
    pub fn all(&self) -> Vec<Arc<Stream>> {
        let mut all = self.list();
        all.extend(self.errors());
        all
    }

    /// The dead-letter stream; present once the engine is open.
    pub fn errors(&self) -> Option<Arc<Stream>> {
        self.errors.get().cloned()
    }

    /// `sluice.errors` for a writer of dead letters (opened at start,
    /// before any consumer).
    pub fn require_errors(&self) -> Result<Arc<Stream>> {
        self.errors()
            .ok_or_else(|| Error::Internal("sluice.errors is not open".into()))
    }

    /// Streams whose pipeline reads `source`.
    pub fn dependents(&self, source: &str) -> Vec<Arc<Stream>> {
        self.list()
            .into_iter()
            .filter(|s| s.def.pipeline.as_ref().is_some_and(|p| p.source == source))
            .collect()
    }

    pub fn set_errors(&self, stream: Arc<Stream>) {
        let _ = self.errors.set(stream);
    }

    pub fn insert(&self, stream: Arc<Stream>) {
        if let Ok(mut s) = self.by_name.write() {
            s.insert(stream.def.name.clone(), stream);
        }
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Stream>> {
        self.by_name.write().ok()?.remove(name)
    }
}
