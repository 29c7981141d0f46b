//! The schema of Parquet files written across schema changes, for
//! `CREATE EXTERNAL TABLE … STORED AS PARQUET` without columns over a
//! sink's directory: DataFusion's own inference refuses files whose types
//! differ (`Schema::try_merge` fails on integer vs bigint), so here each
//! column takes the widest type its files use (the widenings `ALTER
//! COLUMN … TYPE` allows) and a column some files lack reads as NULL there.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::types::SqlType;

/// Most files whose footers are read to merge a schema.
const MAX_FILES: usize = 100_000;

/// Gives `cmd` (Parquet, no declared columns, one location) the merged
/// schema of its files when they differ; leaves it alone when they agree.
pub(super) async fn declare_merged_schema(
    state: &SessionState,
    cmd: &mut CreateExternalTable,
) -> Result<()> {
    let [location] = cmd.locations.as_slice() else {
        return Ok(());
    };
    let url = ListingTableUrl::parse(location)?;
    let store = state.runtime_env().object_store(&url)?;
    let files: Vec<_> = url
        .list_all_files(state, store.as_ref(), ".parquet")
        .await?
        .try_collect()
        .await?;
    if files.len() > MAX_FILES {
        return Ok(());
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
    let Some(merged) = merge(&schemas)? else {
        return Ok(());
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
    Ok(())
}

/// One schema for all: `None` when they are all alike.
fn merge(schemas: &[SchemaRef]) -> Result<Option<Schema>> {
    let Some(first) = schemas.first() else {
        return Ok(None);
    };
    if schemas.iter().all(|s| s.fields() == first.fields()) {
        return Ok(None);
    }
    let mut fields: Vec<Field> = Vec::new();
    for schema in schemas {
        for field in schema.fields() {
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                None => fields.push(field.as_ref().clone()),
                Some(known) if known.data_type() == field.data_type() => {}
                Some(known) => {
                    let wider = wider_type(known.data_type(), field.data_type()).ok_or_else(|| {
                        Error::DatatypeMismatch(format!(
                            "column \"{}\" is {} in some files and {} in others, and neither holds the other; declare the columns",
                            field.name(),
                            known.data_type(),
                            field.data_type()
                        ))
                    })?;
                    *known = known.clone().with_data_type(wider);
                }
            }
        }
    }
    // A column some files lack is NULL in their rows.
    let fields = fields
        .into_iter()
        .map(|f| {
            let everywhere = schemas.iter().all(|s| s.field_with_name(f.name()).is_ok());
            let nullable = f.is_nullable() || !everywhere;
            f.with_nullable(nullable)
        })
        .collect::<Vec<_>>();
    Ok(Some(Schema::new(fields)))
}

/// The one of `a` and `b` that holds every value of the other.
fn wider_type(a: &DataType, b: &DataType) -> Option<DataType> {
    let (x, y) = (SqlType::from_arrow(a)?, SqlType::from_arrow(b)?);
    if x.widens_to(y) && &y.to_arrow() == b {
        Some(b.clone())
    } else if y.widens_to(x) && &x.to_arrow() == a {
        Some(a.clone())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_type_and_missing_columns_nullable() {
        let v1 = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("status", DataType::Int32, true),
        ]));
        let v2 = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("status", DataType::Int64, true),
            Field::new("country", DataType::Utf8, false),
        ]));
        let merged = merge(&[v1.clone(), v2]).unwrap().unwrap();
        assert_eq!(merged.field(1).data_type(), &DataType::Int64);
        assert!(merged.field(2).is_nullable());
        assert!(!merged.field(0).is_nullable());
        assert!(merge(&[v1.clone(), v1.clone()]).unwrap().is_none());
        let text = Arc::new(Schema::new(vec![Field::new(
            "status",
            DataType::Utf8,
            true,
        )]));
        let err = merge(&[v1, text]).unwrap_err();
        assert_eq!(err.sqlstate(), "42804");
    }
}
