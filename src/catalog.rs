//! The catalog: what exists (streams now; pipelines, sinks and tables
//! next) and what consumers have committed, in redb, an embedded ACID
//! store. Every change is one write transaction, fsynced on commit, so the
//! catalog is whole after a crash at any point. It never touches data files.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::ColumnDef;

/// name → JSON-encoded [`StreamDef`].
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// counter name → value (object ids).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// "consumer\0shard" → next sequence number to consume.
const OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("offsets");

/// A stream as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDef {
    pub name: String,
    /// Unique for the life of the data dir; names the log directory, so a
    /// dropped and re-created stream never sees the old data.
    pub id: u64,
    pub columns: Vec<ColumnDef>,
    pub shards: u32,
    pub partition_key: Option<String>,
    /// Retention as written by the user (humantime), `None` = forever.
    pub retention: Option<String>,
    pub event_time: Option<String>,
    /// Bumped by every schema change.
    pub schema_version: u32,
    pub created_at_ms: i64,
    /// Set for a derived stream: the continuous query that fills it.
    #[serde(default)]
    pub pipeline: Option<PipelineDef>,
    /// JSON ingest: refuse a record with a field that names no column
    /// (`unknown_fields = 'error'`) instead of ignoring the field.
    #[serde(default)]
    pub reject_unknown_fields: bool,
}

/// The continuous query behind a derived stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDef {
    /// The SELECT as the user wrote it.
    pub sql: String,
    /// The one stream it reads.
    pub source: String,
    /// Where reading started per source shard (`start = 'earliest'` gives
    /// the first retained record, `'latest'` the end at creation time).
    pub start_offsets: Vec<u64>,
}

pub struct Catalog {
    db: Database,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(STREAMS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(OFFSETS)?;
        txn.commit()?;
        Ok(Catalog { db })
    }

    pub fn streams(&self) -> Result<Vec<StreamDef>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STREAMS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    /// Creates a stream, assigning its id; 42P07 if the name is taken.
    pub fn create_stream(&self, mut def: StreamDef) -> Result<StreamDef> {
        let txn = self.db.begin_write()?;
        {
            let mut streams = txn.open_table(STREAMS)?;
            if streams.get(def.name.as_str())?.is_some() {
                return Err(Error::DuplicateTable(def.name));
            }
            let mut counters = txn.open_table(COUNTERS)?;
            let id = counters.get("object_id")?.map_or(0, |v| v.value()) + 1;
            counters.insert("object_id", id)?;
            def.id = id;
            streams.insert(def.name.as_str(), encode(&def)?.as_slice())?;
        }
        txn.commit()?;
        Ok(def)
    }

    /// Removes a stream and its consumers' offsets; 42P01 if absent.
    pub fn drop_stream(&self, name: &str) -> Result<StreamDef> {
        let txn = self.db.begin_write()?;
        let def = {
            let mut streams = txn.open_table(STREAMS)?;
            let def = match streams.remove(name)? {
                Some(v) => decode(v.value())?,
                None => return Err(Error::UndefinedTable(name.to_string())),
            };
            def
        };
        txn.commit()?;
        Ok(def)
    }

    /// Commits a consumer's next offsets per shard, atomically.
    pub fn commit_offsets(&self, consumer: &str, next_seqs: &[u64]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut offsets = txn.open_table(OFFSETS)?;
            for (shard, seq) in next_seqs.iter().enumerate() {
                offsets.insert(format!("{consumer}\0{shard}").as_str(), *seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A consumer's committed offsets (0 for shards never committed).
    pub fn offsets(&self, consumer: &str, shards: u32) -> Result<Vec<u64>> {
        let txn = self.db.begin_read()?;
        let offsets = txn.open_table(OFFSETS)?;
        (0..shards)
            .map(|shard| {
                Ok(offsets
                    .get(format!("{consumer}\0{shard}").as_str())?
                    .map_or(0, |v| v.value()))
            })
            .collect()
    }
}

fn encode(def: &StreamDef) -> Result<Vec<u8>> {
    serde_json::to_vec(def).map_err(|e| Error::Catalog(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<StreamDef> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Catalog(format!("undecodable catalog entry: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SqlType;

    fn def(name: &str) -> StreamDef {
        StreamDef {
            name: name.into(),
            id: 0,
            columns: vec![ColumnDef {
                name: "a".into(),
                sql_type: SqlType::BigInt,
                nullable: false,
            }],
            shards: 2,
            partition_key: Some("a".into()),
            retention: None,
            event_time: None,
            schema_version: 1,
            created_at_ms: 0,
            pipeline: None,
            reject_unknown_fields: false,
        }
    }

    #[test]
    fn streams_persist_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let first = {
            let cat = Catalog::open(&path).unwrap();
            let s = cat.create_stream(def("a")).unwrap();
            assert_eq!(cat.create_stream(def("a")).unwrap_err().sqlstate(), "42P07");
            cat.commit_offsets("p", &[3, 4]).unwrap();
            s
        };
        let cat = Catalog::open(&path).unwrap();
        assert_eq!(cat.streams().unwrap(), vec![first.clone()]);
        assert_eq!(cat.offsets("p", 3).unwrap(), vec![3, 4, 0]);
        cat.drop_stream("a").unwrap();
        assert_eq!(cat.drop_stream("a").unwrap_err().sqlstate(), "42P01");
        let again = cat.create_stream(def("a")).unwrap();
        assert!(again.id > first.id);
    }
}
