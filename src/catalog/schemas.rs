//! Schema versions of streams: each `ALTER STREAM` commits the stream's
//! new declaration and its version record in one transaction, so a crash
//! leaves either both or neither.

use redb::{ReadableTable, TableDefinition};

use super::{decode, encode, Catalog, SchemaVersion, StreamDef, STREAMS};
use crate::error::{Error, Result};

/// "{stream id:020}/{version:010}" → JSON-encoded [`SchemaVersion`].
pub(super) const SCHEMA_VERSIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("schema_versions");

fn version_key(stream_id: u64, version: u32) -> String {
    format!("{stream_id:020}/{version:010}")
}

pub(super) fn record_version(
    txn: &redb::WriteTransaction,
    stream_id: u64,
    version: &SchemaVersion,
) -> Result<()> {
    txn.open_table(SCHEMA_VERSIONS)?.insert(
        version_key(stream_id, version.version).as_str(),
        encode(version)?.as_slice(),
    )?;
    Ok(())
}

pub(super) fn forget_versions(txn: &redb::WriteTransaction, stream_id: u64) -> Result<()> {
    let mut table = txn.open_table(SCHEMA_VERSIONS)?;
    let (from, to) = (version_key(stream_id, 0), version_key(stream_id, u32::MAX));
    table.retain_in(from.as_str()..=to.as_str(), |_, _| false)?;
    Ok(())
}

impl Catalog {
    /// Every version of stream `def`, oldest first. A stream created
    /// before versions were recorded has its version 1 rebuilt.
    pub fn schema_versions(&self, def: &StreamDef) -> Result<Vec<SchemaVersion>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SCHEMA_VERSIONS)?;
        let (from, to) = (version_key(def.id, 0), version_key(def.id, u32::MAX));
        let mut out: Vec<SchemaVersion> = table
            .range(from.as_str()..=to.as_str())?
            .map(|entry| decode(entry?.1.value()))
            .collect::<Result<_>>()?;
        if out.first().is_none_or(|v| v.version != 1) {
            out.insert(0, SchemaVersion::first(def));
        }
        Ok(out)
    }

    /// Commits a new schema version of a stream: its declaration (with
    /// `schema_version` = `version.version`) and the version record.
    pub fn evolve_stream(&self, def: &StreamDef, version: &SchemaVersion) -> Result<()> {
        if def.schema_version != version.version {
            return Err(Error::Internal(format!(
                "stream {} at version {} given version record {}",
                def.name, def.schema_version, version.version
            )));
        }
        let txn = self.begin_write()?;
        {
            let mut streams = txn.open_table(STREAMS)?;
            let current: StreamDef = match streams.get(def.name.as_str())? {
                Some(v) => decode(v.value())?,
                None => return Err(Error::UndefinedTable(def.name.clone())),
            };
            if current.id != def.id || current.schema_version + 1 != version.version {
                return Err(Error::Internal(format!(
                    "stream {} changed under an ALTER (version {} now)",
                    def.name, current.schema_version
                )));
            }
            streams.insert(def.name.as_str(), encode(def)?.as_slice())?;
        }
        record_version(&txn, def.id, version)?;
        crate::fail::point("catalog.evolve_before_commit");
        txn.commit()?;
        Ok(())
    }
}
