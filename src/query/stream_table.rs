//! A stream as a DataFusion table: a bounded scan of what is retained now
//! (one partition per shard, only the projected columns decoded, filters
//! applied in the scan), and INSERT appending through the log.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{lit, Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::{StreamExt, TryStreamExt};

use crate::error::Error;
use crate::ingest::Writer;
use crate::runtime::{ReadLimits, Stream};

/// Rows decoded per output batch at most; small frames (single-row inserts)
/// are merged up to this so downstream operators see real batches.
const SCAN_BATCH_ROWS: u64 = 8192;

#[derive(Debug)]
pub struct StreamTable {
    stream: Arc<Stream>,
    max_statement_bytes: u64,
    /// Column DEFAULTs, for INSERTs planned by DataFusion.
    defaults: HashMap<String, Expr>,
}

impl StreamTable {
    pub fn new(stream: Arc<Stream>, max_statement_bytes: u64) -> Self {
        let defaults = stream
            .def
            .columns
            .iter()
            .zip(&stream.defaults)
            .filter_map(|(c, d)| Some((c.name.clone(), lit(d.clone()?))))
            .collect();
        StreamTable {
            stream,
            max_statement_bytes,
            defaults,
        }
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.stream.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.stream.schema.clone();
        let projected: SchemaRef = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full.clone(),
        };
        // The filter runs on projected batches; if it needs a column the
        // projection lacks, DataFusion's own FilterExec still applies it.
        let predicate = conjunction(filters.iter().cloned()).and_then(|expr| {
            let df_schema = DFSchema::try_from(projected.as_ref().clone()).ok()?;
            state.create_physical_expr(expr, &df_schema).ok()
        });
        let ends = self.stream.log.end_offsets();
        let partitions: Vec<Arc<dyn PartitionStream>> = ends
            .into_iter()
            .enumerate()
            .map(|(shard, end_seq)| {
                Arc::new(ShardScan {
                    stream: self.stream.clone(),
                    shard: shard as u32,
                    end_seq,
                    schema: projected.clone(),
                    projection: projection.cloned(),
                    predicate: predicate.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            projected,
            partitions,
            None,
            Vec::new(),
            false,
            limit,
        )?))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let writer = Writer::new(self.stream.clone(), None, self.max_statement_bytes)?;
        if insert_op != InsertOp::Append {
            return Err(Error::FeatureNotSupported(format!(
                "streams are append-only: {insert_op} into \"{}\" is not possible",
                self.stream.def.name
            ))
            .into());
        }
        let sink = StreamSink {
            writer,
            // NOT NULL is checked by the sink, by name, not by DataFusion by index.
            input_schema: Arc::new(Schema::new(
                self.stream
                    .schema
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            )),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// One shard's part of a scan, up to the end offset seen at planning time
/// so the whole query reads one consistent prefix of the log.
#[derive(Debug)]
struct ShardScan {
    stream: Arc<Stream>,
    shard: u32,
    end_seq: u64,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
}

impl PartitionStream for ShardScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let stream = self.stream.clone();
        let (shard, end_seq) = (self.shard, self.end_seq);
        let projection = self.projection.clone();
        let predicate = self.predicate.clone();
        let limits = ReadLimits {
            max_records: SCAN_BATCH_ROWS,
            until: end_seq,
        };
        let chunks = futures::stream::unfold(0u64, move |from_seq| {
            let stream = stream.clone();
            let projection = projection.clone();
            let predicate = predicate.clone();
            async move {
                if from_seq >= end_seq {
                    return None;
                }
                let read = stream
                    .read(shard, from_seq, limits, projection.as_deref())
                    .await
                    .map_err(DataFusionError::from);
                Some(match read {
                    Ok(None) => (Ok(None), end_seq),
                    Ok(Some(records)) => {
                        let batch = match &predicate {
                            Some(p) => apply_predicate(p, records.batch),
                            None => Ok(records.batch),
                        };
                        (batch.map(Some), records.end)
                    }
                    // The stream ends after its error.
                    Err(e) => (Err(e), end_seq),
                })
            }
        });
        let stream = chunks
            .try_filter_map(|b| {
                futures::future::ready(Ok(b.filter(|b: &RecordBatch| b.num_rows() > 0)))
            })
            .boxed();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

fn apply_predicate(predicate: &Arc<dyn PhysicalExpr>, batch: RecordBatch) -> DfResult<RecordBatch> {
    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
    let mask = datafusion::common::cast::as_boolean_array(&mask)?;
    Ok(filter_record_batch(&batch, mask)?)
}

/// Receives the rows of one INSERT, checks them against the stream's
/// declaration and appends them as one unit: all rows or none.
#[derive(Debug)]
struct StreamSink {
    writer: Writer,
    input_schema: SchemaRef,
}

impl DisplayAs for StreamSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamSink: stream={}", self.writer.stream().def.name)
    }
}

#[async_trait]
impl DataSink for StreamSink {
    fn schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        Ok(self.writer.insert_stream(data).await?)
    }
}
