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
    let pinned = table.table_provider().await?;
    Ok(match snapshot {
        DeltaSnapshot::Latest => Arc::new(LatestDelta {
            schema: pinned.schema(),
            planning: pinned,
            table: tokio::sync::Mutex::new(table),
        }),
        _ => pinned,
    })
}

/// A Delta table read at its latest version by every query.
#[derive(Debug)]
struct LatestDelta {
    table: tokio::sync::Mutex<DeltaTable>,
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
            let mut table = self.table.lock().await;
            table
                .update_incremental(None)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
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
