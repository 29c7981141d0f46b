//! `CREATE EXTERNAL TABLE … STORED AS DELTA LOCATION …`: any Delta table
//! (written by a Delta sink, Spark or delta-rs) as a relation, through
//! delta-rs's DataFusion provider, so scans prune by partition values and
//! by the file statistics in the log. `OPTIONS ('version' 'n')` or
//! `OPTIONS ('timestamp' '2026-12-01T10:00:00Z')` pins one snapshot
//! (time travel); without them the table is read at its latest version
//! when the statement runs and at each server start.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake_core::DeltaTableBuilder;
use url::Url;

use crate::error::{Error, Result};
use crate::storage::Location;

/// Which snapshot of the table to read.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaSnapshot {
    Latest,
    Version(u64),
    /// RFC 3339 text, as Delta's `timestamp` travel takes it.
    Timestamp(String),
}

impl DeltaSnapshot {
    /// From the statement's options (`version`, `timestamp`); any other
    /// option is refused by name.
    pub fn from_options(options: &HashMap<String, String>) -> Result<DeltaSnapshot> {
        let mut snapshot = DeltaSnapshot::Latest;
        for (key, value) in options {
            let key = key.trim_start_matches("format.").to_lowercase();
            snapshot = match key.as_str() {
                "version" => {
                    DeltaSnapshot::Version(value.trim().parse::<u64>().ok().ok_or_else(|| {
                        Error::InvalidParameter(format!(
                            "version: '{value}' is not a table version (0, 1, …)"
                        ))
                    })?)
                }
                "timestamp" => {
                    chrono::DateTime::parse_from_rfc3339(value.trim()).map_err(|e| {
                        Error::InvalidParameter(format!(
                            "timestamp: '{value}' is not an RFC 3339 time like 2026-12-01T10:00:00Z ({e})"
                        ))
                    })?;
                    DeltaSnapshot::Timestamp(value.trim().to_string())
                }
                _ => {
                    return Err(Error::InvalidParameter(format!(
                        "unknown Delta table option \"{key}\"; valid options: version, timestamp"
                    )))
                }
            };
        }
        Ok(snapshot)
    }
}

/// Loads the Delta table at `location` (through sluice's own object
/// stores, so the same S3 settings and confinement apply) at `snapshot`.
pub async fn delta_table(
    location: &Location,
    snapshot: &DeltaSnapshot,
) -> Result<Arc<dyn TableProvider>> {
    let text = format!("{}{}/", location.url.as_str(), location.prefix);
    let url = Url::parse(&text).map_err(|e| Error::InvalidParameter(format!("{text}: {e}")))?;
    let not_delta = |e: deltalake_core::DeltaTableError| match e {
        deltalake_core::DeltaTableError::NotATable(_) => Error::InvalidParameter(format!(
            "no Delta table at {text} (no _delta_log/ with a commit)"
        )),
        other => Error::Storage(format!("Delta table at {text}: {other}")),
    };
    let mut builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(not_delta)?
        .with_storage_backend(location.store.clone(), url);
    builder = match snapshot {
        DeltaSnapshot::Latest => builder,
        DeltaSnapshot::Version(v) => builder.with_version(*v),
        DeltaSnapshot::Timestamp(t) => builder.with_datestring(t).map_err(not_delta)?,
    };
    let table = builder.load().await.map_err(not_delta)?;
    Ok(table.table_provider().await?)
}
