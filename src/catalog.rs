//! The catalog: what exists (streams, pipelines, sinks, tables) and what
//! consumers have committed, in redb, an embedded ACID store. Every change
//! is one write transaction, fsynced on commit, so the catalog is whole
//! after a crash at any point. A sink's delivered files and its source
//! offsets change in the same transaction: that is its exactly-once commit.
//! It never touches data files.

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
/// name → JSON-encoded [`SinkDef`].
const SINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("sinks");
/// "{sink id:020}/{object path}" → JSON-encoded [`SinkFile`]: the files a
/// sink has committed, which are exactly what its table reads.
const SINK_FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_files");
/// "{sink id:020}/{shard}" → JSON-encoded [`SinkProgress`].
const SINK_PROGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_progress");
/// name → JSON-encoded [`TableDef`].
const TABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("tables");

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

impl StreamDef {
    /// A stream of one shard with no key, retention or event time, created
    /// now; the id is assigned by the catalog.
    pub fn new(name: impl Into<String>, columns: Vec<ColumnDef>) -> StreamDef {
        StreamDef {
            name: name.into(),
            id: 0,
            columns,
            shards: 1,
            partition_key: None,
            retention: None,
            event_time: None,
            schema_version: 1,
            created_at_ms: crate::clock::now_ms(),
            pipeline: None,
            reject_unknown_fields: false,
        }
    }
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

/// How a sink derives time partitions from the event-time column (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimePartition {
    /// No time partition.
    None,
    /// `dt=YYYY-MM-DD`.
    Day,
    /// `dt=YYYY-MM-DD/hour=HH`.
    Hour,
}

/// A sink as declared: where and how a stream is delivered as Parquet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkDef {
    pub name: String,
    pub id: u64,
    /// The stream it delivers (`sluice.errors` included).
    pub source: String,
    /// As written by the user (`s3://…`, `file:///…` or data-dir relative).
    pub location: String,
    pub compression: String,
    pub time_partition: TimePartition,
    /// The timestamp column time partitions come from.
    pub event_time: Option<String>,
    /// Further Hive partition columns, in path order.
    pub partition_by: Vec<String>,
    pub rollover_interval_ms: u64,
    pub rollover_size_bytes: u64,
    /// Where delivery starts per source shard (before any commit).
    pub start_offsets: Vec<u64>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub sort_by: Vec<String>,
    #[serde(default)]
    pub bloom_filter_columns: Vec<String>,
    #[serde(default)]
    pub compaction: Option<CompactionDef>,
}

/// When and how a sink merges a partition's small files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionDef {
    pub target_size_bytes: u64,
    pub min_files: u32,
}

/// One committed file of a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkFile {
    /// Object path inside the sink's store (no scheme, no bucket).
    pub path: String,
    pub shard: u32,
    /// Source sequence numbers of its first and last record.
    pub first_offset: u64,
    pub last_offset: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Hive partition values in the table's partition-column order; `None`
    /// for `__HIVE_DEFAULT_PARTITION__`.
    pub partition_values: Vec<Option<String>>,
    pub committed_at_ms: i64,
}

/// How far a sink's shard task has delivered. Every source record below
/// `next` is in a committed file (or in `sluice.errors`); a record at or
/// after `next` of the partition directory `d` is delivered too when its
/// offset is below `through[d]` (a partition that rolled while others
/// stayed open). Replay starts at `next` and skips those.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkProgress {
    pub next: u64,
    #[serde(default)]
    pub through: std::collections::BTreeMap<String, u64>,
}

impl SinkProgress {
    /// Whether the record at `offset` of partition `dir` is delivered.
    pub fn delivered(&self, dir: &str, offset: u64) -> bool {
        offset < self.next || self.through.get(dir).is_some_and(|t| offset < *t)
    }
}

/// A table over files: `CREATE EXTERNAL TABLE` or `CREATE TABLE … AS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub id: u64,
    /// The `CREATE EXTERNAL TABLE` that (re)creates it at every start.
    pub sql: String,
    /// Set when sluice wrote the data (CTAS) and owns it: DROP TABLE
    /// removes this directory. External data is never deleted.
    pub managed_dir: Option<String>,
    pub created_at_ms: i64,
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
        txn.open_table(SINKS)?;
        txn.open_table(SINK_FILES)?;
        txn.open_table(SINK_PROGRESS)?;
        txn.open_table(TABLES)?;
        txn.commit()?;
        Ok(Catalog { db })
    }

    pub fn streams(&self) -> Result<Vec<StreamDef>> {
        self.all(STREAMS)
    }

    /// Creates a stream, assigning its id; 42P07 if the name is taken.
    pub fn create_stream(&self, mut def: StreamDef) -> Result<StreamDef> {
        let txn = self.db.begin_write()?;
        {
            def.id = new_object_id(&txn, &def.name)?;
            let mut streams = txn.open_table(STREAMS)?;
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

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    pub fn sinks(&self) -> Result<Vec<SinkDef>> {
        self.all(SINKS)
    }

    /// Creates a sink, assigning its id; 42P07 if the name is taken.
    pub fn create_sink(&self, mut def: SinkDef) -> Result<SinkDef> {
        let txn = self.db.begin_write()?;
        def.id = new_object_id(&txn, &def.name)?;
        txn.open_table(SINKS)?
            .insert(def.name.as_str(), encode(&def)?.as_slice())?;
        txn.commit()?;
        Ok(def)
    }

    /// Forgets a sink, its file list and its offsets (the files stay on
    /// storage: delivered data outlives its delivery).
    pub fn drop_sink(&self, name: &str) -> Result<SinkDef> {
        let txn = self.db.begin_write()?;
        let def: SinkDef = match txn.open_table(SINKS)?.remove(name)? {
            Some(v) => decode(v.value())?,
            None => return Err(Error::UndefinedTable(name.to_string())),
        };
        {
            let mut files = txn.open_table(SINK_FILES)?;
            let prefix = file_key(def.id, "");
            let keys: Vec<String> = files
                .range(prefix.as_str()..)?
                .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()))
                .take_while(|k| k.starts_with(&prefix))
                .collect();
            for key in keys {
                files.remove(key.as_str())?;
            }
            let mut progress = txn.open_table(SINK_PROGRESS)?;
            for shard in 0..def.start_offsets.len() as u32 {
                progress.remove(progress_key(def.id, shard).as_str())?;
            }
        }
        txn.commit()?;
        Ok(def)
    }

    /// The committed files of a sink, in key order.
    pub fn sink_files(&self, sink_id: u64) -> Result<Vec<SinkFile>> {
        let txn = self.db.begin_read()?;
        let files = txn.open_table(SINK_FILES)?;
        let prefix = file_key(sink_id, "");
        let mut out = Vec::new();
        for entry in files.range(prefix.as_str()..)? {
            let (key, value) = entry?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    /// The exactly-once step of a sink: the files it made visible and the
    /// progress they bring its shard to, in one transaction.
    pub fn commit_sink(
        &self,
        sink_id: u64,
        files: &[SinkFile],
        shard: u32,
        progress: &SinkProgress,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SINK_FILES)?;
            for file in files {
                table.insert(
                    file_key(sink_id, &file.path).as_str(),
                    encode(file)?.as_slice(),
                )?;
            }
            txn.open_table(SINK_PROGRESS)?.insert(
                progress_key(sink_id, shard).as_str(),
                encode(progress)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Compaction's swap: `removed` files leave and `added` joins, in one
    /// transaction; fails (changing nothing) if a removed file is not listed.
    pub fn replace_sink_files(
        &self,
        sink_id: u64,
        removed: &[String],
        added: &SinkFile,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SINK_FILES)?;
            for path in removed {
                if table.remove(file_key(sink_id, path).as_str())?.is_none() {
                    return Err(Error::Internal(format!(
                        "compaction input {path} is no longer listed"
                    )));
                }
            }
            table.insert(
                file_key(sink_id, &added.path).as_str(),
                encode(added)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A sink's committed progress per shard; `None` for a shard that never
    /// committed.
    pub fn sink_progress(&self, sink_id: u64, shards: u32) -> Result<Vec<Option<SinkProgress>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SINK_PROGRESS)?;
        (0..shards)
            .map(|shard| {
                table
                    .get(progress_key(sink_id, shard).as_str())?
                    .map(|v| decode(v.value()))
                    .transpose()
            })
            .collect()
    }

    pub fn tables(&self) -> Result<Vec<TableDef>> {
        self.all(TABLES)
    }

    pub fn create_table(&self, mut def: TableDef) -> Result<TableDef> {
        let txn = self.db.begin_write()?;
        def.id = new_object_id(&txn, &def.name)?;
        txn.open_table(TABLES)?
            .insert(def.name.as_str(), encode(&def)?.as_slice())?;
        txn.commit()?;
        Ok(def)
    }

    pub fn drop_table(&self, name: &str) -> Result<TableDef> {
        let txn = self.db.begin_write()?;
        let def = match txn.open_table(TABLES)?.remove(name)? {
            Some(v) => decode(v.value())?,
            None => return Err(Error::UndefinedTable(name.to_string())),
        };
        txn.commit()?;
        Ok(def)
    }
}

/// Checks that no stream, sink or table is called `name` (42P07) and
/// takes the next object id; ids are never reused.
fn new_object_id(txn: &redb::WriteTransaction, name: &str) -> Result<u64> {
    for table in [STREAMS, SINKS, TABLES] {
        if txn.open_table(table)?.get(name)?.is_some() {
            return Err(Error::DuplicateTable(name.to_string()));
        }
    }
    let mut counters = txn.open_table(COUNTERS)?;
    let id = counters.get("object_id")?.map_or(0, |v| v.value()) + 1;
    counters.insert("object_id", id)?;
    Ok(id)
}

/// The progress key of a sink's shard: by id, so a re-created sink starts afresh.
fn progress_key(sink_id: u64, shard: u32) -> String {
    format!("{sink_id:020}/{shard}")
}

fn file_key(sink_id: u64, path: &str) -> String {
    format!("{sink_id:020}/{path}")
}

fn encode<T: Serialize>(def: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(def).map_err(|e| Error::Catalog(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Catalog(format!("undecodable catalog entry: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SqlType;

    fn def(name: &str) -> StreamDef {
        let column = ColumnDef {
            name: "a".into(),
            sql_type: SqlType::BigInt,
            nullable: false,
        };
        StreamDef {
            shards: 2,
            partition_key: Some("a".into()),
            ..StreamDef::new(name, vec![column])
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

    fn sink(name: &str) -> SinkDef {
        SinkDef {
            name: name.into(),
            id: 0,
            source: "a".into(),
            location: "lake".into(),
            compression: "zstd".into(),
            time_partition: TimePartition::Hour,
            event_time: Some("t".into()),
            partition_by: Vec::new(),
            rollover_interval_ms: 1000,
            rollover_size_bytes: 1 << 20,
            start_offsets: vec![0, 0],
            created_at_ms: 0,
            sort_by: Vec::new(),
            bloom_filter_columns: Vec::new(),
            compaction: None,
        }
    }

    fn file(path: &str, shard: u32) -> SinkFile {
        SinkFile {
            path: path.into(),
            shard,
            first_offset: 0,
            last_offset: 9,
            rows: 10,
            bytes: 100,
            partition_values: vec![Some("2026-11-25".into()), Some("10".into())],
            committed_at_ms: 0,
        }
    }

    #[test]
    fn sink_files_and_progress_commit_together_and_go_with_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
        cat.create_stream(def("a")).unwrap();
        assert_eq!(cat.create_sink(sink("a")).unwrap_err().sqlstate(), "42P07");
        let s = cat.create_sink(sink("s")).unwrap();
        let other = cat.create_sink(sink("t")).unwrap();
        let progress = SinkProgress {
            next: 10,
            through: [("dt=2026-11-25/hour=11".to_string(), 20)].into(),
        };
        cat.commit_sink(s.id, &[file("x/1", 0), file("x/2", 0)], 0, &progress)
            .unwrap();
        cat.commit_sink(other.id, &[file("y/1", 1)], 1, &SinkProgress::default())
            .unwrap();
        assert_eq!(cat.sink_files(s.id).unwrap().len(), 2);
        assert_eq!(
            cat.sink_progress(s.id, 2).unwrap(),
            vec![Some(progress.clone()), None]
        );
        assert!(progress.delivered("dt=2026-11-25/hour=11", 15));
        assert!(!progress.delivered("dt=2026-11-25/hour=12", 15));

        // Compaction's swap is all or nothing.
        let merged = file("x/merged", 0);
        assert!(cat
            .replace_sink_files(s.id, &["x/1".into(), "x/gone".into()], &merged)
            .is_err());
        assert_eq!(cat.sink_files(s.id).unwrap().len(), 2);
        cat.replace_sink_files(s.id, &["x/1".into(), "x/2".into()], &merged)
            .unwrap();
        let paths: Vec<String> = cat
            .sink_files(s.id)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, vec!["x/merged".to_string()]);

        cat.drop_sink("s").unwrap();
        assert!(cat.sink_files(s.id).unwrap().is_empty());
        assert_eq!(cat.sink_progress(s.id, 2).unwrap(), vec![None, None]);
        assert_eq!(
            cat.sink_files(other.id).unwrap().len(),
            1,
            "other sinks keep theirs"
        );
        assert_eq!(cat.sinks().unwrap().len(), 1);
    }
}
