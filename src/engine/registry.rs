//! What is open now: streams by name, the `sluice.errors` stream, the
//! running pipelines and sinks, and tables over files.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;

use crate::catalog::StreamDef;
use crate::cq::Pipeline;
use crate::error::{Error, Result};
use crate::log::StreamLog;
use crate::sink::Sink;

/// The catalog name of the dead-letter stream (schema `sluice`).
pub const ERRORS_STREAM: &str = "sluice.errors";

/// An open stream: its declaration and its log.
#[derive(Debug)]
pub struct Stream {
    pub def: StreamDef,
    pub schema: SchemaRef,
    pub log: Arc<StreamLog>,
}

impl Stream {
    /// Users write only to declared streams: a derived stream is written
    /// by its pipeline, `sluice.errors` by the server.
    pub fn accepts_inserts(&self) -> bool {
        self.def.pipeline.is_none() && self.def.name != ERRORS_STREAM
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

#[derive(Debug, Default)]
pub struct Registry {
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    errors: OnceLock<Arc<Stream>>,
    pipelines: RwLock<BTreeMap<String, Arc<Pipeline>>>,
    sinks: RwLock<BTreeMap<String, Arc<Sink>>>,
    tables: RwLock<BTreeMap<String, Arc<dyn TableProvider>>>,
}

/// What a name in schema `public` is.
pub enum Relation {
    Stream(Arc<Stream>),
    Sink(Arc<Sink>),
    Table(Arc<dyn TableProvider>),
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

    /// The dead-letter stream; present once the engine is open.
    pub fn errors(&self) -> Option<Arc<Stream>> {
        self.errors.get().cloned()
    }

    /// `sluice.errors` for a consumer that writes to it (opened at start,
    /// before any consumer).
    pub fn require_errors(&self) -> Result<Arc<Stream>> {
        self.errors()
            .ok_or_else(|| Error::Internal("sluice.errors is not open".into()))
    }

    /// Records in `sluice.errors` per stream (over what it retains), read
    /// from its `stream` column.
    pub fn dead_letter_counts(&self) -> std::collections::HashMap<String, u64> {
        use datafusion::arrow::array::AsArray;
        let mut counts = std::collections::HashMap::new();
        let Some(errors) = self.errors() else {
            return counts;
        };
        let Some(column) = errors.def.columns.iter().position(|c| c.name == "stream") else {
            return counts;
        };
        for shard in 0..errors.log.shard_count() {
            for (file, frame) in errors.log.frames_from(shard, 0, u64::MAX) {
                let Ok(batch) = crate::log::read_frame(&file, &frame, Some(&[column]), 0) else {
                    continue;
                };
                for name in batch.column(0).as_string::<i32>().iter().flatten() {
                    *counts.entry(name.to_string()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// The stream, sink or table called `name`.
    pub fn relation(&self, name: &str) -> Option<Relation> {
        if let Some(s) = self.get(name) {
            return Some(Relation::Stream(s));
        }
        if let Some(s) = self.sink(name) {
            return Some(Relation::Sink(s));
        }
        self.table(name).map(Relation::Table)
    }

    /// Every name in schema `public`.
    pub fn relation_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.list().iter().map(|s| s.def.name.clone()).collect();
        names.extend(self.sinks().iter().map(|s| s.name().to_string()));
        if let Ok(tables) = self.tables.read() {
            names.extend(tables.keys().cloned());
        }
        names
    }

    pub fn sink(&self, name: &str) -> Option<Arc<Sink>> {
        self.sinks.read().ok()?.get(name).cloned()
    }

    pub fn sinks(&self) -> Vec<Arc<Sink>> {
        self.sinks
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Sinks that deliver `source`.
    pub fn sinks_of(&self, source: &str) -> Vec<Arc<Sink>> {
        self.sinks()
            .into_iter()
            .filter(|s| s.core.def.source == source)
            .collect()
    }

    pub fn table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.read().ok()?.get(name).cloned()
    }

    pub(super) fn insert_sink(&self, sink: Arc<Sink>) {
        if let Ok(mut s) = self.sinks.write() {
            s.insert(sink.name().to_string(), sink);
        }
    }

    pub(super) fn remove_sink(&self, name: &str) -> Option<Arc<Sink>> {
        self.sinks.write().ok()?.remove(name)
    }

    pub(super) fn insert_table(&self, name: &str, table: Arc<dyn TableProvider>) {
        if let Ok(mut t) = self.tables.write() {
            t.insert(name.to_string(), table);
        }
    }

    pub(super) fn remove_table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.write().ok()?.remove(name)
    }

    pub fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Streams whose pipeline reads `source`.
    pub fn dependents(&self, source: &str) -> Vec<Arc<Stream>> {
        self.list()
            .into_iter()
            .filter(|s| s.def.pipeline.as_ref().is_some_and(|p| p.source == source))
            .collect()
    }

    pub(super) fn set_errors(&self, stream: Arc<Stream>) {
        let _ = self.errors.set(stream);
    }

    pub(super) fn insert(&self, stream: Arc<Stream>) {
        if let Ok(mut s) = self.streams.write() {
            s.insert(stream.def.name.clone(), stream);
        }
    }

    pub(super) fn remove(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.write().ok()?.remove(name)
    }

    pub(super) fn insert_pipeline(&self, pipeline: Arc<Pipeline>) {
        if let Ok(mut p) = self.pipelines.write() {
            p.insert(pipeline.name.clone(), pipeline);
        }
    }

    pub(super) fn remove_pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.write().ok()?.remove(name)
    }
}
