//! A compaction's merge, a batch at a time. Merging every input into one
//! batch and sorting it held each input's bytes, its decoded batches, their
//! concatenation and the sorted copy at once: a partition whose compacted
//! file grows towards half the target size (64 MB of Parquet, several
//! hundred MB decoded) took gigabytes per compaction, and a Delta sink
//! (compaction on by default) grew with its data. Decoding each sink
//! worker's file whole and sorting it still held every small input of a
//! group decoded twice (concatenated and sorted): 220 MB of a 325 MB heap
//! peak in a 6-minute soak, more as groups grew.
//!
//! Now every input is read as sorted runs, a batch at a time, and
//! DataFusion's streaming merge interleaves them: a compaction's output is
//! one run (sorted whole); a worker's file of a sink with `sort_by` is one
//! run per row group (the worker sorts each group before writing it); only
//! a worker's file sorted by nothing (compacted by event time) is decoded
//! and sorted, a row group at a time, and `due` bounds how many of its
//! bytes one compaction takes. Memory is the inputs' Parquet bytes, the
//! sorted row groups of unsorted files, and one decoded batch per run,
//! which shrinks as runs grow in number.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder,
};
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

/// Rows per batch out of the merge, and the most per batch read from a run.
const MERGE_BATCH_ROWS: usize = 8192;
/// Rows decoded at once over all runs: each run's batch is this divided by
/// the number of runs, within `MIN_RUN_BATCH_ROWS..=MERGE_BATCH_ROWS`.
const MERGE_ROWS_IN_FLIGHT: usize = 256 * 1024;
const MIN_RUN_BATCH_ROWS: usize = 1024;

/// How an input's rows stand to the sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Sorted as a whole: a compaction's output.
    Sorted,
    /// Sorted within each row group: a worker's file, with `sort_by`.
    SortedGroups,
    /// In source order: a worker's file without `sort_by`.
    Unsorted,
}

/// One input: its Parquet bytes and how its rows are ordered.
pub struct Input {
    pub bytes: Bytes,
    pub order: Order,
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
    let sorting = !layout.sort_by.is_empty();
    let mut runs = Vec::new();
    let mut schemas = vec![layout.file_schema.clone()];
    for input in inputs {
        let metadata = ArrowReaderMetadata::load(&input.bytes, Default::default())?;
        schemas.push(metadata.schema().clone());
        let groups = metadata.metadata().num_row_groups();
        if !sorting || input.order == Order::Sorted {
            runs.push(Run {
                bytes: input.bytes,
                metadata,
                group: None,
                sort: false,
            });
        } else {
            let sort = input.order == Order::Unsorted;
            for group in 0..groups {
                runs.push(Run {
                    bytes: input.bytes.clone(),
                    metadata: metadata.clone(),
                    group: Some(group),
                    sort,
                });
            }
        }
    }
    let schema = match merge_schemas(&schemas)? {
        Some(merged) => Arc::new(merged),
        None => layout.file_schema.clone(),
    };
    let read = Arc::new(ReadSchema::plain(schema.clone()));
    let batch_rows =
        (MERGE_ROWS_IN_FLIGHT / runs.len().max(1)).clamp(MIN_RUN_BATCH_ROWS, MERGE_BATCH_ROWS);
    let streams = runs
        .into_iter()
        .map(|run| read_run(run, batch_rows, &read, layout))
        .collect::<Result<Vec<_>>>()?;
    if !sorting || streams.len() == 1 {
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

/// One sorted run of a merge: an input's rows, or one of its row groups;
/// `sort` when the rows must be sorted first (a group in source order).
struct Run {
    bytes: Bytes,
    metadata: ArrowReaderMetadata,
    group: Option<usize>,
    sort: bool,
}

/// `run`'s rows in `read`'s schema, `batch_rows` at a time, in the sort
/// order: decoded as polled, or (a group in source order) decoded and
/// sorted here.
fn read_run(
    run: Run,
    batch_rows: usize,
    read: &Arc<ReadSchema>,
    layout: &Layout,
) -> Result<SendableRecordBatchStream> {
    let schema = read.schema().clone();
    let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(run.bytes, run.metadata)
        .with_batch_size(batch_rows);
    if let Some(group) = run.group {
        builder = builder.with_row_groups(vec![group]);
    }
    let reader = builder.build()?;
    if run.sort {
        let batches = reader
            .map(|batch| read.adapt(batch?))
            .collect::<Result<Vec<_>>>()?;
        let sorted = layout.sort(&concat_batches(&schema, &batches)?)?;
        let slices: Vec<_> = (0..sorted.num_rows())
            .step_by(batch_rows)
            .map(|at| Ok(sorted.slice(at, batch_rows.min(sorted.num_rows() - at))))
            .collect();
        return Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(slices),
        )));
    }
    let read = read.clone();
    let batches = reader.map(move |batch| {
        batch
            .map_err(DataFusionError::from)
            .and_then(|b| read.adapt(b).map_err(DataFusionError::from))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches),
    )))
}
