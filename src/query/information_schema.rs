//! `information_schema` with PostgreSQL's type names: DataFusion's own
//! provider (tables, views, columns, df_settings…) answers, except that
//! `columns.data_type` says `bigint`, `text`, `timestamp without time
//! zone` where DataFusion prints Arrow types (`Int64`, `Utf8`,
//! `Timestamp(µs)`), which is what BI tools and ORMs read.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemTable, SchemaProvider, Session, TableProvider,
};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

pub const INFORMATION_SCHEMA: &str = "information_schema";

/// The schema, over the session's catalogs (held weakly: the catalog
/// holds this schema, and a cycle would keep both alive forever).
#[derive(Debug)]
pub struct PgInformationSchema {
    inner: InformationSchemaProvider,
}

impl PgInformationSchema {
    pub fn new(catalogs: &Arc<dyn CatalogProviderList>) -> PgInformationSchema {
        let weak: Arc<dyn CatalogProviderList> = Arc::new(WeakCatalogs(Arc::downgrade(catalogs)));
        PgInformationSchema {
            inner: InformationSchemaProvider::new(weak),
        }
    }
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        Ok(match table {
            Some(columns) if name == "columns" => Some(Arc::new(PgColumns(columns))),
            other => other,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug)]
struct WeakCatalogs(Weak<dyn CatalogProviderList>);

impl CatalogProviderList for WeakCatalogs {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.0.upgrade()?.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.0
            .upgrade()
            .map(|c| c.catalog_names())
            .unwrap_or_default()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.0.upgrade()?.catalog(name)
    }
}

/// `information_schema.columns` with `data_type` in PostgreSQL's words.
#[derive(Debug)]
struct PgColumns(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for PgColumns {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A small table, built in memory by DataFusion as well.
        let plan = self.0.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let schema = self.0.schema();
        let at = schema.index_of("data_type")?;
        let batches = batches
            .into_iter()
            .map(|batch| {
                let mut columns = batch.columns().to_vec();
                columns[at] = pg_type_names(&columns[at]);
                RecordBatch::try_new(schema.clone(), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        MemTable::try_new(schema, vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

fn pg_type_names(arrow_names: &ArrayRef) -> ArrayRef {
    let Some(names) = arrow_names.as_any().downcast_ref::<StringArray>() else {
        return arrow_names.clone();
    };
    let mapped: StringArray = names.iter().map(|name| name.map(pg_type_name)).collect();
    Arc::new(mapped)
}

/// PostgreSQL's `information_schema` name of an Arrow type as DataFusion
/// prints it; unknown ones as printed.
fn pg_type_name(arrow: &str) -> String {
    let base = arrow.split('(').next().unwrap_or(arrow);
    let name = match base {
        "Int8" | "Int16" | "UInt8" => "smallint",
        "Int32" | "UInt16" => "integer",
        "Int64" | "UInt32" => "bigint",
        "UInt64" | "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => "numeric",
        "Float16" | "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Binary" | "LargeBinary" | "BinaryView" | "FixedSizeBinary" => "bytea",
        "Date32" | "Date64" => "date",
        "Time32" | "Time64" => "time without time zone",
        "Interval" | "Duration" => "interval",
        "Timestamp" if arrow.contains(',') => "timestamp with time zone",
        "Timestamp" => "timestamp without time zone",
        "List" | "LargeList" | "FixedSizeList" | "ListView" => "ARRAY",
        _ => return arrow.to_string(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::pg_type_name;

    #[test]
    fn arrow_names_become_postgres_names() {
        for (arrow, pg) in [
            ("Int64", "bigint"),
            ("Utf8", "text"),
            ("Timestamp(µs)", "timestamp without time zone"),
            ("Timestamp(µs, \"UTC\")", "timestamp with time zone"),
            ("Decimal128(10, 2)", "numeric"),
            ("Float64", "double precision"),
            ("Binary", "bytea"),
        ] {
            assert_eq!(pg_type_name(arrow), pg, "{arrow}");
        }
    }
}
