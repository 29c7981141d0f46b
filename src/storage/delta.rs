//! Delta logs over sluice's own object stores: the Delta sink's writer and
//! `STORED AS DELTA` tables both reach a table through the store the
//! registry holds for its location, so one S3 configuration (endpoint,
//! credentials, confinement) serves them all.
//!
//! delta-rs picks a log store by URL scheme and knows only `file://` by
//! itself; S3 gets its default log store here, whose commits are
//! put-if-absent (`If-None-Match: *`, which AWS S3, MinIO and R2 honour),
//! so no lock table is needed when one writer commits under an app id.

use std::sync::{Arc, Once};

use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, LogStoreRef, ObjectStoreRef,
    StorageConfig,
};
use deltalake_core::{DeltaResult, DeltaTableBuilder};
use url::Url;

use super::Location;
use crate::error::{Error, Result};

/// Versions replayed onto an in-memory snapshot (`update_incremental`)
/// before it is loaded anew. delta-rs updates a snapshot by appending each
/// new commit's file batches to the ones it holds and never merges them,
/// so a snapshot kept up to date for hours holds every file ever added
/// (removed ones filtered, not freed) with its statistics: its memory
/// grows with commits, not with the table. A fresh load reads the last
/// checkpoint (Delta sinks write one every 10 commits) and the commits
/// after it.
pub const SNAPSHOT_RELOAD_VERSIONS: u64 = 20;

/// The log store delta-rs would use for a local table, for S3 too.
struct ConditionalPutLogStores;

impl LogStoreFactory for ConditionalPutLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories()
                    .entry(url)
                    .or_insert_with(|| Arc::new(ConditionalPutLogStores));
            }
        }
    });
}

/// The Delta table URL of a location (`file:///dir/`, `s3://bucket/prefix/`).
pub fn table_url(location: &Location) -> Result<Url> {
    let text = format!("{}{}/", location.url.as_str(), location.prefix);
    Url::parse(&text).map_err(|e| Error::InvalidParameter(format!("location {text}: {e}")))
}

/// A builder for the Delta table at `location`, over sluice's store.
pub fn table_builder(location: &Location) -> Result<DeltaTableBuilder> {
    register_s3();
    let url = table_url(location)?;
    Ok(DeltaTableBuilder::from_url(url.clone())
        .map_err(delta_error)?
        .with_storage_backend(location.store.clone(), url))
}

/// The log store of the Delta table at `location`.
pub fn log_store(location: &Location) -> Result<LogStoreRef> {
    table_builder(location)?
        .build_storage()
        .map_err(delta_error)
}

pub fn delta_error(e: deltalake_core::DeltaTableError) -> Error {
    Error::Storage(format!("Delta log: {e}"))
}
