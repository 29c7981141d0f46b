//! What SQL can name now: the open streams (shared with the lower layers
//! as [`Streams`]), the running pipelines and sinks, and tables over
//! files. The owner (`engine`) changes it under its DDL lock; the query
//! catalog and the system relations read it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use datafusion::catalog::TableProvider;

use crate::cq::Pipeline;
use crate::runtime::{dead_letters, Stream, Streams};
use crate::sink::Sink;

use super::read_only::ReadOnlyTable;
use super::SinkTable;

#[derive(Debug, Default)]
pub struct Registry {
    pub streams: Arc<Streams>,
    pipelines: RwLock<BTreeMap<String, Arc<Pipeline>>>,
    sinks: RwLock<BTreeMap<String, Arc<Sink>>>,
    /// Each sink's table, kept with the sink so its scan inputs are built
    /// once per committed file set, not per query.
    sink_tables: RwLock<BTreeMap<String, Arc<SinkTable>>>,
    tables: RwLock<BTreeMap<String, Arc<dyn TableProvider>>>,
    /// Log directories start-up moved aside (see `sluice.streams`).
    quarantined: RwLock<Vec<Quarantined>>,
}

/// A stream log directory in `<data-dir>/quarantine/streams/`.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Relative to the data directory.
    pub dir: String,
    pub moved_at_ms: i64,
    pub shards: u32,
    pub segments: u64,
    pub bytes: u64,
}

/// What a name in schema `public` is.
pub enum Relation {
    Stream(Arc<Stream>),
    Sink(Arc<Sink>),
    Table(Arc<dyn TableProvider>),
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.get(name)
    }

    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.streams.list()
    }

    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantined
            .read()
            .map(|q| q.clone())
            .unwrap_or_default()
    }

    pub fn set_quarantined(&self, dirs: Vec<Quarantined>) {
        if let Ok(mut q) = self.quarantined.write() {
            *q = dirs;
        }
    }

    /// The dead-letter stream; present once the engine is open.
    pub fn errors(&self) -> Option<Arc<Stream>> {
        self.streams.errors()
    }

    /// Records in `sluice.errors` per stream.
    pub fn dead_letter_counts(&self) -> HashMap<String, u64> {
        self.errors()
            .map(|errors| dead_letters::counts_by_stream(&errors))
            .unwrap_or_default()
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

    /// The table over a sink's committed files.
    pub fn sink_table(&self, name: &str) -> Option<Arc<SinkTable>> {
        self.sink_tables.read().ok()?.get(name).cloned()
    }

    pub fn insert_sink(&self, sink: Arc<Sink>) {
        let table = Arc::new(SinkTable::new(sink.core.clone()));
        if let Ok(mut t) = self.sink_tables.write() {
            t.insert(sink.name().to_string(), table);
        }
        if let Ok(mut s) = self.sinks.write() {
            s.insert(sink.name().to_string(), sink);
        }
    }

    pub fn remove_sink(&self, name: &str) -> Option<Arc<Sink>> {
        if let Ok(mut t) = self.sink_tables.write() {
            t.remove(name);
        }
        self.sinks.write().ok()?.remove(name)
    }

    /// Registers a table over files, read-only to SQL.
    pub fn insert_table(&self, name: &str, table: Arc<dyn TableProvider>) {
        if let Ok(mut t) = self.tables.write() {
            t.insert(name.to_string(), ReadOnlyTable::wrap(name, table));
        }
    }

    pub fn remove_table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.write().ok()?.remove(name)
    }

    pub fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn insert_pipeline(&self, pipeline: Arc<Pipeline>) {
        if let Ok(mut p) = self.pipelines.write() {
            p.insert(pipeline.name.clone(), pipeline);
        }
    }

    pub fn remove_pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.write().ok()?.remove(name)
    }
}
