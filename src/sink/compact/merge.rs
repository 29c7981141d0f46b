//! A compaction's merge, a batch at a time. Merging every input into one
//! batch and sorting it held each input's bytes, its decoded batches, their
//! concatenation and the sorted copy at once: a partition whose compacted
//! file grows towards half the target size (64 MB of Parquet, several
//! hundred MB decoded) took gigabytes per compaction, and a Delta sink
//! (compaction on by default) grew with its data. Now each input is a
//! stream of batches in the sort order: a compaction's own output is
//! already sorted and is read a batch at a time; a sink worker's file (at
//! most one rollover) is decoded and sorted whole. DataFusion's streaming
//! merge interleaves them, so memory is the small inputs plus a batch of
//! each sorted one.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::log::ReadSchema;
use crate::sink::layout::Layout;
use crate::types::merge_schemas;

/// Rows per batch read from an input and out of the merge.
const MERGE_BATCH_ROWS: usize = 8192;

/// One input: its Parquet bytes and whether its rows are in the sort
/// order already (a compaction's output).
pub struct Input {
    pub bytes: Bytes,
    pub sorted: bool,
}

/// The merged rows and their schema. Inputs written before a schema
/// change keep every column they have: the schema holds the current
/// columns first (widened types cast), then any the stream has since
/// dropped, so no delivered value is lost.
pub struct Merged {
    pub schema: SchemaRef,
    pub rows: SendableRecordBatchStream,
}

/// The rows of `inputs` as one stream in `layout`'s sort order. Decoding
/// happens as the stream is polled: poll it off the runtime's workers.
pub fn merge(inputs: Vec<Input>, layout: &Layout) -> Result<Merged> {
    let mut builders = Vec::with_capacity(inputs.len());
    let mut schemas = vec![layout.file_schema.clone()];
    for input in inputs {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input.bytes)?
            .with_batch_size(MERGE_BATCH_ROWS);
        schemas.push(builder.schema().clone());
        builders.push((builder, input.sorted));
    }
    let schema = match merge_schemas(&schemas)? {
        Some(merged) => Arc::new(merged),
        None => layout.file_schema.clone(),
    };
    let read = Arc::new(ReadSchema::plain(schema.clone()));
    let mut streams: Vec<SendableRecordBatchStream> = Vec::with_capacity(builders.len());
    for (builder, sorted) in builders {
        let reader = builder.build()?;
        if sorted || layout.sort_by.is_empty() {
            let read = read.clone();
            let batches = reader.map(move |batch| {
                batch
                    .map_err(DataFusionError::from)
                    .and_then(|b| read.adapt(b).map_err(DataFusionError::from))
            });
            streams.push(Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                futures::stream::iter(batches),
            )));
        } else {
            let batches = reader
                .map(|batch| read.adapt(batch?))
                .collect::<Result<Vec<_>>>()?;
            let whole = layout.sort(&concat_batches(&schema, &batches)?)?;
            drop(batches);
            streams.push(Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                futures::stream::iter([Ok(whole)]),
            )));
        }
    }
    if layout.sort_by.is_empty() || streams.len() == 1 {
        let rows = futures::stream::iter(streams).flatten();
        return Ok(Merged {
            rows: Box::pin(RecordBatchStreamAdapter::new(schema.clone(), rows)),
            schema,
        });
    }
    let ordering =
        LexOrdering::new(layout.sort_by.iter().map(|&i| {
            PhysicalSortExpr::new_default(Arc::new(Column::new(schema.field(i).name(), i)))
        }))
        .ok_or_else(|| Error::Internal("a compaction sorted by no column".into()))?;
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    let rows = StreamingMergeBuilder::new()
        .with_streams(streams)
        .with_schema(schema.clone())
        .with_expressions(&ordering)
        .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0))
        .with_batch_size(MERGE_BATCH_ROWS)
        .with_reservation(MemoryConsumer::new("compaction merge").register(&pool))
        .build()?;
    Ok(Merged { schema, rows })
}
