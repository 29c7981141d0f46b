//! The schema of Parquet files written across schema changes, for
//! `CREATE EXTERNAL TABLE … STORED AS PARQUET` without columns over a
//! sink's directory: DataFusion's own inference refuses files whose types
//! differ (`Schema::try_merge` fails on integer vs bigint), so here each
//! column takes the widest type its files use (the widenings `ALTER
//! COLUMN … TYPE` allows) and a column some files lack reads as NULL there.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;
use futures::TryStreamExt;

use crate::error::Result;
use crate::types::merge_schemas;

/// Most files whose footers are read to merge a schema.
const MAX_FILES: usize = 100_000;

/// Gives `cmd` (Parquet, no declared columns, one location) the merged
/// schema of its files when they differ; `false` (and `cmd` alone) when
/// they agree.
pub(super) async fn declare_merged_schema(
    state: &SessionState,
    cmd: &mut CreateExternalTable,
) -> Result<bool> {
    let [location] = cmd.locations.as_slice() else {
        return Ok(false);
    };
    let url = ListingTableUrl::parse(location)?;
    let store = state.runtime_env().object_store(&url)?;
    let files: Vec<_> = url
        .list_all_files(state, store.as_ref(), ".parquet")
        .await?
        .try_collect()
        .await?;
    if files.len() > MAX_FILES {
        return Ok(false);
    }
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let mut schemas = Vec::with_capacity(files.len());
    for file in &files {
        schemas.push(
            format
                .infer_schema(state, &store, std::slice::from_ref(file))
                .await?,
        );
    }
    let Some(merged) = merge_schemas(&schemas)? else {
        return Ok(false);
    };
    let partitions = if cmd.table_partition_cols.is_empty() {
        ListingOptions::new(Arc::new(format))
            .with_file_extension(".parquet")
            .infer_partitions(state, &url)
            .await?
    } else {
        cmd.table_partition_cols.clone()
    };
    let mut fields: Vec<Field> = merged
        .fields()
        .iter()
        .filter(|f| !partitions.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(partitions.iter().map(|p| {
        let text = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
        Field::new(p, text, true)
    }));
    cmd.schema = Arc::new(DFSchema::try_from(Schema::new(fields))?);
    cmd.table_partition_cols = partitions;
    Ok(true)
}
