//! Tables over files are read-only to SQL: their data is written by sinks
//! and `CREATE TABLE … AS`, never by DataFusion's DML, which would append
//! files wherever the table points. The wrapper serves every read through
//! the table it holds and refuses writes with 42501.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Result as DfResult, Statistics};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Error;

#[derive(Debug)]
pub struct ReadOnlyTable {
    name: String,
    inner: Arc<dyn TableProvider>,
}

impl ReadOnlyTable {
    pub fn wrap(name: &str, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        Arc::new(ReadOnlyTable {
            name: name.to_string(),
            inner,
        })
    }
}

#[async_trait]
impl TableProvider for ReadOnlyTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> DfResult<ScanResult> {
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        _input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(Error::InsufficientPrivilege(format!(
            "table \"{}\" is read-only: tables over files are written by sinks and CREATE TABLE … AS; INSERT into a stream",
            self.name
        ))
        .into())
    }
}
