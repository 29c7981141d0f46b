//! The catalog: what exists (streams, pipelines, sinks, tables) and what
//! consumers have committed, in redb, an embedded ACID store. Every change
//! is one write transaction, fsynced on commit, so the catalog is whole
//! after a crash at any point. A sink's delivered files and its source
//! offsets change in the same transaction: that is its exactly-once commit.
//! It never touches data files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// name → JSON-encoded [`StreamDef`].
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// counter name → value (object ids).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// name → JSON-encoded [`SinkDef`].
const SINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("sinks");
/// "{sink id:020}/{object path}" → JSON-encoded [`SinkFile`]: the files a
/// sink has committed, which are exactly what its table reads.
const SINK_FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_files");
/// "{sink id:020}/{shard}" → JSON-encoded [`SinkProgress`].
const SINK_PROGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_progress");
/// name → JSON-encoded [`TableDef`].
const TABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("tables");
/// stream id → when it was dropped (ms): streams whose log directory may
/// still be on disk. Start-up deletes exactly these directories; any
/// other directory the catalog does not list is moved aside, never
/// deleted (it may be the data of a lost or replaced catalog).
const DROPPED_STREAMS: TableDefinition<u64, i64> = TableDefinition::new("dropped_streams");
/// warehouse directory (object-store prefix) → when a `CREATE TABLE … AS`
/// began writing there: recorded before the first byte, removed in the
/// transaction that creates the table. Start-up deletes exactly these
/// directories when no table owns them (a crash mid-CTAS).
const PENDING_CTAS: TableDefinition<&str, i64> = TableDefinition::new("pending_ctas");
/// role name → JSON-encoded [`RoleDef`].
const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");

mod backend;
mod defs;
mod errors;
mod outbox;
mod schemas;
mod sinks;

pub use defs::*;
pub use outbox::DeltaChange;

pub struct Catalog {
    path: PathBuf,
    /// `None` only while a reopen after an I/O error has not succeeded.
    db: RwLock<Option<Database>>,
    /// Raised by the backend on any failed I/O: reopen before the next
    /// transaction (redb refuses all work after one I/O error).
    faulted: Arc<AtomicBool>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog> {
        let faulted = Arc::new(AtomicBool::new(false));
        let db = open_db(path, &faulted)?;
        let catalog = Catalog {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            faulted,
        };
        let txn = catalog.begin_write()?;
        txn.open_table(STREAMS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(SINKS)?;
        txn.open_table(SINK_FILES)?;
        txn.open_table(SINK_PROGRESS)?;
        txn.open_table(TABLES)?;
        txn.open_table(DROPPED_STREAMS)?;
        txn.open_table(PENDING_CTAS)?;
        txn.open_table(ROLES)?;
        txn.open_table(schemas::SCHEMA_VERSIONS)?;
        txn.open_table(outbox::DELTA_OUTBOX)?;
        txn.open_table(outbox::RETIRED_FILES)?;
        txn.commit()?;
        Ok(catalog)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.with_db(|db| Ok(db.begin_write()?))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.with_db(|db| Ok(db.begin_read()?))
    }

    /// Runs `f` on the open database, first reopening it if an I/O error
    /// latched the previous one. A failed reopen (the fault persists) fails
    /// this call and is retried by the next.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        fn poisoned<T>(_: T) -> Error {
            Error::Internal("catalog lock poisoned".into())
        }
        if self.faulted.load(Ordering::Acquire) {
            let mut slot = self.db.write().map_err(poisoned)?;
            if self.faulted.swap(false, Ordering::AcqRel) {
                // The old handle must be closed (its file lock released)
                // before the file is opened again.
                drop(slot.take());
                match open_db(&self.path, &self.faulted) {
                    Ok(db) => {
                        tracing::warn!("catalog reopened after an I/O error");
                        *slot = Some(db);
                    }
                    Err(e) => {
                        self.faulted.store(true, Ordering::Release);
                        return Err(e);
                    }
                }
            }
        }
        let slot = self.db.read().map_err(poisoned)?;
        match slot.as_ref() {
            Some(db) => f(db),
            None => Err(Error::Io(std::io::Error::other(
                "the catalog could not be reopened after an I/O error; retrying on the next statement",
            ))),
        }
    }

    pub fn streams(&self) -> Result<Vec<StreamDef>> {
        self.all(STREAMS)
    }

    /// Creates a stream, assigning its id; 42P07 if the name is taken.
    pub fn create_stream(&self, mut def: StreamDef) -> Result<StreamDef> {
        let txn = self.begin_write()?;
        {
            def.id = new_object_id(&txn, &def.name)?;
            let mut streams = txn.open_table(STREAMS)?;
            streams.insert(def.name.as_str(), encode(&def)?.as_slice())?;
        }
        schemas::record_version(&txn, def.id, &SchemaVersion::first(&def))?;
        txn.commit()?;
        Ok(def)
    }

    /// Removes a stream and records it as dropped (its log directory is
    /// deleted after the commit, or at the next start); 42P01 if absent.
    pub fn drop_stream(&self, name: &str) -> Result<StreamDef> {
        let txn = self.begin_write()?;
        let def = {
            let mut streams = txn.open_table(STREAMS)?;
            let def: StreamDef = match streams.remove(name)? {
                Some(v) => decode(v.value())?,
                None => return Err(Error::UndefinedTable(name.to_string())),
            };
            def
        };
        txn.open_table(DROPPED_STREAMS)?
            .insert(def.id, crate::clock::now_ms())?;
        schemas::forget_versions(&txn, def.id)?;
        txn.commit()?;
        Ok(def)
    }

    /// Ids of dropped streams whose log directories may remain.
    pub fn dropped_streams(&self) -> Result<Vec<u64>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DROPPED_STREAMS)?;
        let mut ids = Vec::new();
        for entry in table.iter()? {
            ids.push(entry?.0.value());
        }
        Ok(ids)
    }

    /// A dropped stream's directory is gone: nothing left to delete.
    pub fn forget_dropped_stream(&self, id: u64) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(DROPPED_STREAMS)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    pub fn tables(&self) -> Result<Vec<TableDef>> {
        self.all(TABLES)
    }

    /// Creates a table; a CTAS's pending directory stops being pending in
    /// the same transaction.
    pub fn create_table(&self, mut def: TableDef) -> Result<TableDef> {
        let txn = self.begin_write()?;
        def.id = new_object_id(&txn, &def.name)?;
        txn.open_table(TABLES)?
            .insert(def.name.as_str(), encode(&def)?.as_slice())?;
        if let Some(dir) = &def.managed_dir {
            txn.open_table(PENDING_CTAS)?.remove(dir.as_str())?;
        }
        txn.commit()?;
        Ok(def)
    }

    /// Records that a CTAS is about to write into warehouse directory `dir`.
    pub fn begin_ctas(&self, dir: &str) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(PENDING_CTAS)?
            .insert(dir, crate::clock::now_ms())?;
        txn.commit()?;
        Ok(())
    }

    /// Warehouse directories a CTAS began and no commit has claimed.
    pub fn pending_ctas(&self) -> Result<Vec<String>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PENDING_CTAS)?;
        let mut dirs = Vec::new();
        for entry in table.iter()? {
            dirs.push(entry?.0.value().to_string());
        }
        Ok(dirs)
    }

    /// `dir` is no longer pending (its CTAS failed and was cleaned up).
    pub fn forget_ctas(&self, dir: &str) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(PENDING_CTAS)?.remove(dir)?;
        txn.commit()?;
        Ok(())
    }

    pub fn drop_table(&self, name: &str) -> Result<TableDef> {
        let txn = self.begin_write()?;
        let def = match txn.open_table(TABLES)?.remove(name)? {
            Some(v) => decode(v.value())?,
            None => return Err(Error::UndefinedTable(name.to_string())),
        };
        txn.commit()?;
        Ok(def)
    }
}

fn open_db(path: &Path, faulted: &Arc<AtomicBool>) -> Result<Database> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = backend::WatchedBackend::new(file, faulted.clone())?;
    Ok(redb::Builder::new().create_with_backend(backend)?)
}

impl Catalog {
    /// Creates a login role; 42710 if the name is taken.
    pub fn create_role(&self, def: &RoleDef) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut roles = txn.open_table(ROLES)?;
            if roles.get(def.name.as_str())?.is_some() {
                return Err(Error::DuplicateObject(format!(
                    "role \"{}\" already exists",
                    def.name
                )));
            }
            roles.insert(def.name.as_str(), encode(def)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces a role's verifier; 42704 if there is no such role.
    pub fn set_role_password(&self, name: &str, salt: Vec<u8>, salted: Vec<u8>) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut roles = txn.open_table(ROLES)?;
            let mut def: RoleDef = match roles.get(name)? {
                Some(v) => decode(v.value())?,
                None => return Err(no_role(name)),
            };
            def.salt = salt;
            def.salted_password = salted;
            roles.insert(name, encode(&def)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Drops a role; 42704 if there is no such role.
    pub fn drop_role(&self, name: &str) -> Result<()> {
        let txn = self.begin_write()?;
        if txn.open_table(ROLES)?.remove(name)?.is_none() {
            return Err(no_role(name));
        }
        txn.commit()?;
        Ok(())
    }

    /// Every login role, by name.
    pub fn roles(&self) -> Result<Vec<RoleDef>> {
        let txn = self.begin_read()?;
        let roles = txn.open_table(ROLES)?;
        roles
            .iter()?
            .map(|entry| decode(entry?.1.value()))
            .collect()
    }

    pub fn role(&self, name: &str) -> Result<Option<RoleDef>> {
        let txn = self.begin_read()?;
        let roles = txn.open_table(ROLES)?;
        roles.get(name)?.map(|v| decode(v.value())).transpose()
    }
}

fn no_role(name: &str) -> Error {
    Error::UndefinedObject(format!("role \"{name}\" does not exist"))
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
mod tests;
