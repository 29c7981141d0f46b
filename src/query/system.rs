//! `sluice.*` system relations: computed from live state at scan time.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::Registry;
use crate::catalog::Catalog;

/// Which system relation a [`SystemTable`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemRelation {
    Streams,
    Shards,
    Pipelines,
    Sinks,
    /// Every schema version of every stream.
    Schemas,
}

impl SystemRelation {
    pub const ALL: [SystemRelation; 5] = [
        SystemRelation::Streams,
        SystemRelation::Shards,
        SystemRelation::Pipelines,
        SystemRelation::Sinks,
        SystemRelation::Schemas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemRelation::Streams => "streams",
            SystemRelation::Shards => "shards",
            SystemRelation::Pipelines => "pipelines",
            SystemRelation::Sinks => "sinks",
            SystemRelation::Schemas => "schemas",
        }
    }

    fn schema(self) -> SchemaRef {
        let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let int = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
        Arc::new(Schema::new(match self {
            SystemRelation::Streams => vec![
                text("name", false),
                Field::new("shards", DataType::Int32, false),
                text("partition_key", true),
                text("retention", true),
                text("event_time", true),
                int("records", false),
                int("bytes", false),
                int("first_sequence", true),
                int("last_sequence", true),
                int("segments", false),
                Field::new("schema_version", DataType::Int32, false),
                int("errors", false),
                Field::new(
                    "created_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                text("state", false),
                text("last_error", true),
            ],
            SystemRelation::Pipelines => vec![
                text("name", false),
                text("source", false),
                text("sql", false),
                text("state", false),
                int("processed", false),
                int("errors", false),
                int("lag_records", false),
                text("last_error", true),
            ],
            SystemRelation::Sinks => vec![
                text("name", false),
                text("source", false),
                text("location", false),
                text("format", false),
                text("state", false),
                text("committed_offsets", false),
                int("lag_records", false),
                int("files", false),
                int("bytes", false),
                int("rows", false),
                Field::new(
                    "last_commit",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                text("last_error", true),
                int("errors", false),
                int("compactions", false),
                int("files_compacted", false),
                int("delta_version", true),
            ],
            SystemRelation::Schemas => vec![
                text("stream", false),
                Field::new("version", DataType::Int32, false),
                text("columns", false),
                Field::new(
                    "created_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                text("statement", false),
            ],
            SystemRelation::Shards => vec![
                text("stream", false),
                Field::new("shard", DataType::Int32, false),
                int("records", false),
                int("bytes", false),
                int("first_sequence", true),
                int("last_sequence", true),
                int("segments", false),
            ],
        }))
    }
}

#[derive(Debug)]
pub struct SystemTable {
    relation: SystemRelation,
    registry: Arc<Registry>,
    /// Held weakly, as for `pg_roles` (see `roles::Roles`).
    catalog: Weak<Catalog>,
    schema: SchemaRef,
}

impl SystemTable {
    pub fn new(relation: SystemRelation, registry: Arc<Registry>, catalog: Weak<Catalog>) -> Self {
        SystemTable {
            relation,
            registry,
            catalog,
            schema: relation.schema(),
        }
    }

    fn batch(&self) -> DfResult<RecordBatch> {
        let streams = self.registry.list();
        let columns: Vec<ArrayRef> = match self.relation {
            SystemRelation::Streams => super::system_streams::columns(&self.registry),
            SystemRelation::Pipelines => pipeline_columns(&self.registry),
            SystemRelation::Sinks => sink_columns(&self.registry),
            SystemRelation::Schemas => {
                let catalog = self.catalog.upgrade().ok_or_else(|| {
                    datafusion::error::DataFusionError::from(crate::error::Error::ShuttingDown)
                })?;
                super::system_streams::schema_columns(&self.registry, &catalog)?
            }
            SystemRelation::Shards => {
                let rows: Vec<(&str, i32, crate::log::ShardStats)> = streams
                    .iter()
                    .flat_map(|s| {
                        s.log
                            .shard_stats()
                            .into_iter()
                            .enumerate()
                            .map(|(i, st)| (s.def.name.as_str(), i as i32, st))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.2.records as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.2.bytes as i64),
                    )),
                    Arc::new(Int64Array::from_iter(
                        rows.iter()
                            .map(|r| (r.2.records > 0).then_some(r.2.first_seq as i64)),
                    )),
                    Arc::new(Int64Array::from_iter(
                        rows.iter()
                            .map(|r| (r.2.next_seq > 0).then(|| r.2.next_seq as i64 - 1)),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.2.segments as i64),
                    )),
                ]
            }
        };
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn pipeline_columns(registry: &Registry) -> Vec<ArrayRef> {
    use std::sync::atomic::Ordering;
    let pipelines = registry.pipelines();
    let last_errors: Vec<Option<String>> = pipelines
        .iter()
        .map(|p| p.stats.last_error.lock().ok().and_then(|e| e.clone()))
        .collect();
    vec![
        Arc::new(StringArray::from_iter_values(
            pipelines.iter().map(|p| p.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            pipelines.iter().map(|p| p.source.def.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            pipelines.iter().map(|p| p.sql.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            pipelines.iter().map(|p| p.state()),
        )),
        Arc::new(Int64Array::from_iter_values(
            pipelines
                .iter()
                .map(|p| p.stats.processed.load(Ordering::Relaxed) as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            pipelines
                .iter()
                .map(|p| p.stats.errors.load(Ordering::Relaxed) as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            pipelines.iter().map(|p| p.lag_records() as i64),
        )),
        Arc::new(StringArray::from(last_errors)),
    ]
}

fn sink_columns(registry: &Registry) -> Vec<ArrayRef> {
    use std::sync::atomic::Ordering;
    let sinks = registry.sinks();
    let files: Vec<_> = sinks.iter().map(|s| s.core.files()).collect();
    let committed: Vec<String> = sinks
        .iter()
        .map(|s| {
            let offsets: Vec<String> = s
                .core
                .stats
                .committed
                .iter()
                .map(|c| c.load(Ordering::Relaxed).to_string())
                .collect();
            format!("[{}]", offsets.join(", "))
        })
        .collect();
    let last_errors: Vec<Option<String>> = sinks.iter().map(|s| s.core.stats.error()).collect();
    let sum = |f: fn(&crate::catalog::SinkFile) -> u64| {
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|fs| fs.iter().map(f).sum::<u64>() as i64),
        )) as ArrayRef
    };
    vec![
        Arc::new(StringArray::from_iter_values(
            sinks.iter().map(|s| s.name()),
        )),
        Arc::new(StringArray::from_iter_values(
            sinks.iter().map(|s| s.core.def.source.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(sinks.iter().map(|s| {
            if !s.core.def.format.writes_files() {
                s.core.def.location.clone()
            } else {
                s.core.location.url_string()
            }
        }))),
        Arc::new(StringArray::from_iter_values(
            sinks.iter().map(|s| s.core.def.format.name()),
        )),
        Arc::new(StringArray::from_iter_values(
            sinks.iter().map(|s| s.state()),
        )),
        Arc::new(StringArray::from_iter_values(committed)),
        Arc::new(Int64Array::from_iter_values(
            sinks.iter().map(|s| s.lag_records() as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.len() as i64),
        )),
        sum(|f| f.bytes),
        sum(|f| f.rows),
        Arc::new(
            TimestampMillisecondArray::from_iter(sinks.iter().map(|s| {
                let ms = s.core.stats.last_commit_ms.load(Ordering::Relaxed);
                (ms > 0).then_some(ms)
            }))
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(last_errors)),
        counter(&sinks, |s| &s.dead_letters),
        counter(&sinks, |s| &s.compactions),
        counter(&sinks, |s| &s.files_compacted),
        Arc::new(Int64Array::from_iter(sinks.iter().map(|s| {
            s.core
                .delta
                .as_ref()
                .map(|d| d.version.load(Ordering::Relaxed))
                .filter(|v| *v >= 0)
        }))),
    ]
}

/// One `sluice.sinks` column from a per-sink counter.
fn counter(
    sinks: &[Arc<crate::sink::Sink>],
    field: fn(&crate::sink::SinkStats) -> &std::sync::atomic::AtomicU64,
) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(sinks.iter().map(|s| {
        field(&s.core.stats).load(std::sync::atomic::Ordering::Relaxed) as i64
    })))
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.batch()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
