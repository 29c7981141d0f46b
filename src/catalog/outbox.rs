//! The Delta outbox: changes of a Delta sink's file set that its Delta log
//! has yet to record. A sink commit (or compaction swap) writes its change
//! here in the same transaction as its files and offsets, so the catalog
//! alone decides what is delivered; the sink's publisher then copies each
//! change into the Delta log as one transaction tagged with the change's
//! sequence number (Delta's `txn` action), and forgets it once the log
//! has it. A crash between the two leaves the change here: it is
//! published again, and recognised by its `txn` version if it already was.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{decode, encode, Catalog, SinkFile, COUNTERS};
use crate::error::Result;

/// "{sink id:020}/{seq:020}" → JSON-encoded [`DeltaChange`].
pub(super) const DELTA_OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("delta_outbox");

/// One change of a Delta sink's files, in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaChange {
    /// Per sink, from 1, without gaps: the Delta `txn` version.
    pub seq: u64,
    pub added: Vec<SinkFile>,
    pub removed: Vec<SinkFile>,
    /// False for compaction: the rows are the same, only the files change.
    pub data_change: bool,
}

fn outbox_key(sink_id: u64, seq: u64) -> String {
    format!("{sink_id:020}/{seq:020}")
}

fn seq_counter(sink_id: u64) -> String {
    format!("delta_seq/{sink_id}")
}

/// Appends a change to a sink's outbox inside `txn`.
pub(super) fn enqueue(
    txn: &redb::WriteTransaction,
    sink_id: u64,
    added: Vec<SinkFile>,
    removed: Vec<SinkFile>,
    data_change: bool,
) -> Result<u64> {
    let mut counters = txn.open_table(COUNTERS)?;
    let name = seq_counter(sink_id);
    let seq = counters.get(name.as_str())?.map_or(0, |v| v.value()) + 1;
    counters.insert(name.as_str(), seq)?;
    let change = DeltaChange {
        seq,
        added,
        removed,
        data_change,
    };
    txn.open_table(DELTA_OUTBOX)?.insert(
        outbox_key(sink_id, seq).as_str(),
        encode(&change)?.as_slice(),
    )?;
    Ok(seq)
}

/// Forgets a dropped sink's outbox and retired files (which stay on
/// storage with the rest of its files).
pub(super) fn clear(txn: &redb::WriteTransaction, sink_id: u64) -> Result<()> {
    forget_through(txn, sink_id, u64::MAX)?;
    txn.open_table(COUNTERS)?
        .remove(seq_counter(sink_id).as_str())?;
    let mut retired = txn.open_table(RETIRED_FILES)?;
    let prefix = super::file_key(sink_id, "");
    let keys: Vec<String> = retired
        .range(prefix.as_str()..)?
        .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()))
        .take_while(|k| k.starts_with(&prefix))
        .collect();
    for key in keys {
        retired.remove(key.as_str())?;
    }
    Ok(())
}

fn forget_through(txn: &redb::WriteTransaction, sink_id: u64, seq: u64) -> Result<()> {
    let mut table = txn.open_table(DELTA_OUTBOX)?;
    let (from, to) = (outbox_key(sink_id, 0), outbox_key(sink_id, seq));
    let keys: Vec<String> = table
        .range(from.as_str()..=to.as_str())?
        .map(|e| e.map(|(k, _)| k.value().to_string()))
        .collect::<std::result::Result<_, _>>()?;
    for key in keys {
        table.remove(key.as_str())?;
    }
    Ok(())
}

impl Catalog {
    /// A sink's changes not yet in its Delta log, oldest first, at most `limit`.
    pub fn delta_outbox(&self, sink_id: u64, limit: usize) -> Result<Vec<DeltaChange>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DELTA_OUTBOX)?;
        let (from, to) = (outbox_key(sink_id, 0), outbox_key(sink_id, u64::MAX));
        let mut out = Vec::new();
        for entry in table.range(from.as_str()..=to.as_str())?.take(limit) {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// The last sequence number given to a sink's changes (0: none yet).
    pub fn delta_last_seq(&self, sink_id: u64) -> Result<u64> {
        let txn = self.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        Ok(counters
            .get(seq_counter(sink_id).as_str())?
            .map_or(0, |v| v.value()))
    }

    /// Forgets a sink's changes up to `seq`: the Delta log records them.
    pub fn delta_published(&self, sink_id: u64, seq: u64) -> Result<()> {
        let txn = self.begin_write()?;
        forget_through(&txn, sink_id, seq)?;
        txn.commit()?;
        Ok(())
    }
}

/// "{sink id:020}/{object path}" → when compaction replaced the file (ms):
/// files no longer listed that readers of older snapshots (queries
/// planned before the swap, Delta time travel) may still open. They are
/// deleted once retired longer than the sink's retention, and are not
/// mistaken for leftovers of an uncommitted upload meanwhile.
pub(super) const RETIRED_FILES: TableDefinition<&str, i64> = TableDefinition::new("retired_files");

/// Records compaction inputs as retired inside `txn`.
pub(super) fn retire(
    txn: &redb::WriteTransaction,
    sink_id: u64,
    paths: &[String],
    at_ms: i64,
) -> Result<()> {
    let mut table = txn.open_table(RETIRED_FILES)?;
    for path in paths {
        table.insert(super::file_key(sink_id, path).as_str(), at_ms)?;
    }
    Ok(())
}

impl Catalog {
    /// A sink's retired files with when they were retired, oldest path first.
    pub fn retired_files(&self, sink_id: u64) -> Result<Vec<(String, i64)>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(RETIRED_FILES)?;
        let prefix = super::file_key(sink_id, "");
        let mut out = Vec::new();
        for entry in table.range(prefix.as_str()..)? {
            let (key, at) = entry?;
            let Some(path) = key.value().strip_prefix(&prefix) else {
                break;
            };
            out.push((path.to_string(), at.value()));
        }
        Ok(out)
    }

    /// Forgets retired files once they are deleted from storage.
    pub fn forget_retired(&self, sink_id: u64, paths: &[String]) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(RETIRED_FILES)?;
            for path in paths {
                table.remove(super::file_key(sink_id, path).as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
