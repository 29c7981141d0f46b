//! `CREATE EXTERNAL TABLE … STORED AS DELTA LOCATION …`: any Delta table
//! (written by a Delta sink, Spark or delta-rs) as a relation, through
//! delta-rs's DataFusion provider, so scans prune by partition values and
//! by the file statistics in the log. `OPTIONS ('version' 'n')` or
//! `OPTIONS ('timestamp' '2026-12-01T10:00:00Z')` pins one snapshot
//! (time travel); without them every query reads the latest version (the
//! log is brought up to date when the query is planned), as Athena does.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::DeltaTable;

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
    let text = crate::storage::delta::table_url(location)?.to_string();
    let not_delta = |e: deltalake_core::DeltaTableError| match e {
        deltalake_core::DeltaTableError::NotATable(_) => Error::InvalidParameter(format!(
            "no Delta table at {text} (no _delta_log/ with a commit)"
        )),
        other => Error::Storage(format!("Delta table at {text}: {other}")),
    };
    let mut builder = crate::storage::delta::table_builder(location)?;
    builder = match snapshot {
        DeltaSnapshot::Latest => builder,
        DeltaSnapshot::Version(v) => builder.with_version(*v),
        DeltaSnapshot::Timestamp(t) => builder.with_datestring(t).map_err(not_delta)?,
    };
    let table = builder.load().await.map_err(not_delta)?;
    check_files_confined(&table)?;
    let pinned = table.table_provider().await?;
    Ok(match snapshot {
        DeltaSnapshot::Latest => Arc::new(LatestDelta {
            schema: pinned.schema(),
            planning: pinned,
            location: location.clone(),
            table: tokio::sync::Mutex::new(Loaded {
                at_version: table.version().unwrap_or(0),
                table,
            }),
        }),
        _ => pinned,
    })
}

/// Refuses (42501) a snapshot whose log names a file outside the table's
/// directory. Anyone who can write under an allowed location can write a
/// `_delta_log`, and a reader would then read whatever file its `add`
/// actions name (`file:///…`, `/…`, `../…`, `%2E%2E/…`, another bucket):
/// every file the provider will open must be a plain path under the root.
fn check_files_confined(table: &DeltaTable) -> Result<()> {
    let snapshot = table
        .snapshot()
        .map_err(crate::storage::delta::delta_error)?;
    for file in snapshot.log_data() {
        let path = file.path();
        if !is_under_root(&path) {
            return Err(Error::InsufficientPrivilege(format!(
                "the Delta log at {} names the file '{path}', which is not under the table's directory; \
                 SQL reads only files inside a table's location",
                table.log_store().root_url()
            )));
        }
    }
    Ok(())
}

/// A relative path with no `..`, `.`, scheme, root or backslash, however
/// often it is percent-decoded.
fn is_under_root(path: &str) -> bool {
    let mut text = path.to_string();
    for _ in 0..4 {
        let plain = !text.is_empty()
            && !text.contains("://")
            && !text.starts_with('/')
            && !text.contains('\\')
            && text.split('/').all(|part| !matches!(part, "" | "." | ".."));
        if !plain {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            return true;
        }
        text = decoded;
    }
    false
}

/// A table and the version it was loaded at.
#[derive(Debug)]
struct Loaded {
    table: DeltaTable,
    at_version: u64,
}

/// A Delta table read at its latest version by every query.
#[derive(Debug)]
struct LatestDelta {
    table: tokio::sync::Mutex<Loaded>,
    /// Where the table is, to load it anew (see `SNAPSHOT_RELOAD_VERSIONS`).
    location: Location,
    /// The columns when the table was opened: a query planned against
    /// them must not meet others.
    schema: SchemaRef,
    /// The provider of the version opened first, which answers planning
    /// questions (filter pushdown) that do not depend on the version.
    planning: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for LatestDelta {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.planning.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let current = {
            let mut loaded = self.table.lock().await;
            let Loaded { table, at_version } = &mut *loaded;
            table
                .update_incremental(None)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let replayed = table.version().unwrap_or(0).saturating_sub(*at_version);
            if replayed >= crate::storage::delta::SNAPSHOT_RELOAD_VERSIONS {
                let fresh = crate::storage::delta::table_builder(&self.location)?
                    .load()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                *at_version = fresh.version().unwrap_or(0);
                *table = fresh;
            }
            check_files_confined(table)?;
            table.table_provider().await?
        };
        if current.schema().fields() != self.schema.fields() {
            return Err(Error::FeatureNotSupported(
                "the Delta table's columns changed since CREATE EXTERNAL TABLE; drop and create the table again".into(),
            )
            .into());
        }
        current.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::is_under_root;

    #[test]
    fn only_plain_relative_paths_are_under_the_root() {
        for ok in [
            "part-0.parquet",
            "dt=2026-12-08/hour=10/part-0.parquet",
            "a%20b.parquet",
            "dt=2026-12-08 10%3A00%3A00/part-0.parquet",
        ] {
            assert!(is_under_root(ok), "{ok}");
        }
        for bad in [
            "file:///outside/secret.parquet",
            "/outside/secret.parquet",
            "../../secret.parquet",
            "dt=1/../../../secret.parquet",
            "%2E%2E/secret.parquet",
            "%252E%252E/secret.parquet",
            "s3://other-bucket/key.parquet",
            "C:\\x.parquet",
            "./x.parquet",
            "a//b.parquet",
            "",
        ] {
            assert!(!is_under_root(bad), "{bad}");
        }
    }
}
