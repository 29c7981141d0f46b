//! Sinks in the catalog: their definitions, their committed files and
//! progress (changed together: the exactly-once commit), and compaction's
//! swap.

use redb::ReadableTable;

use super::{
    decode, encode, file_key, new_object_id, outbox, progress_key, Catalog, SinkDef, SinkFile,
    SinkProgress, SINKS, SINK_FILES, SINK_PROGRESS,
};
use crate::error::{Error, Result};

impl Catalog {
    pub fn sinks(&self) -> Result<Vec<SinkDef>> {
        self.all(SINKS)
    }

    /// Creates a sink, assigning its id; 42P07 if the name is taken.
    pub fn create_sink(&self, mut def: SinkDef) -> Result<SinkDef> {
        let txn = self.begin_write()?;
        def.id = new_object_id(&txn, &def.name)?;
        txn.open_table(SINKS)?
            .insert(def.name.as_str(), encode(&def)?.as_slice())?;
        txn.commit()?;
        Ok(def)
    }

    /// Forgets a sink, its file list and its offsets (the files stay on
    /// storage: delivered data outlives its delivery).
    pub fn drop_sink(&self, name: &str) -> Result<SinkDef> {
        let txn = self.begin_write()?;
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
        outbox::clear(&txn, def.id)?;
        txn.commit()?;
        Ok(def)
    }

    /// The committed files of a sink, in key order.
    pub fn sink_files(&self, sink_id: u64) -> Result<Vec<SinkFile>> {
        let txn = self.begin_read()?;
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
    /// progress they bring its shard to, in one transaction (with `delta`,
    /// also the change its Delta log has to record).
    pub fn commit_sink(
        &self,
        sink_id: u64,
        files: &[SinkFile],
        shard: u32,
        progress: &SinkProgress,
        delta: bool,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        if delta && !files.is_empty() {
            outbox::enqueue(&txn, sink_id, files.to_vec(), Vec::new(), true)?;
        }
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
    /// transaction (with `delta`, queued for the Delta log as a change
    /// that moves no rows); fails (changing nothing) if a removed file is
    /// not listed.
    pub fn replace_sink_files(
        &self,
        sink_id: u64,
        removed: &[String],
        added: &SinkFile,
        delta: bool,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        let mut gone = Vec::with_capacity(removed.len());
        {
            let mut table = txn.open_table(SINK_FILES)?;
            for path in removed {
                match table.remove(file_key(sink_id, path).as_str())? {
                    Some(old) => gone.push(decode::<SinkFile>(old.value())?),
                    None => {
                        return Err(Error::Internal(format!(
                            "compaction input {path} is no longer listed"
                        )))
                    }
                }
            }
            table.insert(
                file_key(sink_id, &added.path).as_str(),
                encode(added)?.as_slice(),
            )?;
        }
        outbox::retire(&txn, sink_id, removed, added.committed_at_ms)?;
        if delta {
            outbox::enqueue(&txn, sink_id, vec![added.clone()], gone, false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A sink's committed progress per shard; `None` for a shard that never
    /// committed.
    pub fn sink_progress(&self, sink_id: u64, shards: u32) -> Result<Vec<Option<SinkProgress>>> {
        let txn = self.begin_read()?;
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
}
