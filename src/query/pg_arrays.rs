//! `pg_catalog.pg_constraint` and `pg_index` with their column-number
//! arrays (`conkey`, `confkey`, `indkey`, `indoption`) as arrays. The
//! pg_catalog layer keeps them as text (`"[1, 2]"`), so the queries ORMs
//! send to reflect keys and indexes (SQLAlchemy's `unnest(conkey)`,
//! pgjdbc's `getPrimaryKeys`) fail to plan. sluice relations have no
//! constraints or indexes, so these tables only ever list PostgreSQL's
//! own catalog entries: what matters is that the queries run and answer
//! with the right types. `pg_class` gains the `reloptions` column the
//! layer lacks (NULL: no relation has storage options), which table
//! reflection selects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, Int16Builder, Int64Builder, ListArray, ListBuilder,
    PrimitiveBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::ArrowPrimitiveType;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::{collect, ExecutionPlan};
use tokio::sync::OnceCell;

/// A pg_catalog table as the pg_catalog layer has it, and what to fix.
#[derive(Debug)]
struct Fixup {
    table: &'static str,
    /// `int2[]`/`int2vector` columns stored as text: lists of int2.
    int2: &'static [&'static str],
    /// `oid[]`/`oidvector` columns stored as text: lists of int8 (which
    /// hold every oid).
    oids: &'static [&'static str],
    /// `text[]` columns the layer lacks: added, NULL (no options set).
    missing: &'static [&'static str],
    /// The table never changes (a snapshot of PostgreSQL's own catalog):
    /// converted once.
    constant: bool,
}

const FIXUPS: &[Fixup] = &[
    Fixup {
        table: "pg_constraint",
        int2: &["conkey", "confkey", "confdelsetcols"],
        oids: &["conpfeqop", "conppeqop", "conffeqop", "conexclop"],
        missing: &[],
        constant: true,
    },
    Fixup {
        table: "pg_index",
        int2: &["indkey", "indoption"],
        oids: &["indclass", "indcollation"],
        missing: &[],
        constant: true,
    },
    Fixup {
        table: "pg_class",
        int2: &[],
        oids: &[],
        missing: &["reloptions"],
        constant: false,
    },
];

/// The pg_catalog schema with those tables' array columns typed.
#[derive(Debug)]
pub struct PgCatalogArrays {
    inner: Arc<dyn SchemaProvider>,
    /// The wrapped tables, made at first use.
    tables: Mutex<HashMap<&'static str, Arc<dyn TableProvider>>>,
}

impl PgCatalogArrays {
    pub fn new(inner: Arc<dyn SchemaProvider>) -> PgCatalogArrays {
        PgCatalogArrays {
            inner,
            tables: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogArrays {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(fixup) = FIXUPS.iter().find(|f| f.table == name) else {
            return self.inner.table(name).await;
        };
        if let Some(table) = self
            .tables
            .lock()
            .ok()
            .and_then(|t| t.get(fixup.table).cloned())
        {
            return Ok(Some(table));
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let wrapped: Arc<dyn TableProvider> = Arc::new(ArrayColumns::new(table, fixup));
        if let Ok(mut tables) = self.tables.lock() {
            tables.insert(fixup.table, wrapped.clone());
        }
        Ok(Some(wrapped))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug)]
struct ArrayColumns {
    inner: Arc<dyn TableProvider>,
    fixup: &'static Fixup,
    schema: SchemaRef,
    /// The table converted once (it is static).
    batches: OnceCell<Vec<RecordBatch>>,
}

fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

impl ArrayColumns {
    fn new(inner: Arc<dyn TableProvider>, fixup: &'static Fixup) -> ArrayColumns {
        let mut fields: Vec<Field> = inner
            .schema()
            .fields()
            .iter()
            .map(|f| match element_type(fixup, f.name()) {
                Some(element) => Field::new(f.name(), list_of(element), true),
                None => f.as_ref().clone(),
            })
            .collect();
        for name in fixup.missing {
            if !fields.iter().any(|f| f.name() == name) {
                fields.push(Field::new(*name, list_of(DataType::Utf8), true));
            }
        }
        ArrayColumns {
            inner,
            fixup,
            schema: Arc::new(Schema::new(fields)),
            batches: OnceCell::new(),
        }
    }

    async fn converted(&self, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
        let convert = || async {
            let plan = self.inner.scan(state, None, &[], None).await?;
            let batches = collect(plan, state.task_ctx()).await?;
            batches.iter().map(|b| self.convert(b)).collect()
        };
        if !self.fixup.constant {
            return convert().await;
        }
        self.batches.get_or_try_init(convert).await.cloned()
    }

    fn convert(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .zip(batch.schema().fields())
            .map(|(array, field)| {
                let Some(element) = element_type(self.fixup, field.name()) else {
                    return Ok(array.clone());
                };
                match array.as_any().downcast_ref::<StringArray>() {
                    Some(text) if element == DataType::Int16 => {
                        Ok(Arc::new(parse_arrays(text, Int16Builder::new())) as ArrayRef)
                    }
                    Some(text) => Ok(Arc::new(parse_arrays(text, Int64Builder::new())) as ArrayRef),
                    None if array.data_type() == &list_of(element) => Ok(array.clone()),
                    None => Err(DataFusionError::Internal(format!(
                        "pg_catalog column {} is {}",
                        field.name(),
                        array.data_type()
                    ))),
                }
            })
            .collect::<DfResult<_>>()?;
        for field in self.schema.fields().iter().skip(columns.len()) {
            columns.push(new_null_array(field.data_type(), batch.num_rows()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn element_type(fixup: &Fixup, column: &str) -> Option<DataType> {
    if fixup.int2.contains(&column) {
        Some(DataType::Int16)
    } else if fixup.oids.contains(&column) {
        Some(DataType::Int64)
    } else {
        None
    }
}

/// `"[1, 2]"`, `"{1,2}"` or `"1 2"` (int2vector's text) as lists.
fn parse_arrays<B>(text: &StringArray, values: PrimitiveBuilder<B>) -> ListArray
where
    B: ArrowPrimitiveType,
    B::Native: std::str::FromStr,
{
    let mut out = ListBuilder::new(values);
    for value in text.iter() {
        match value {
            None => out.append(false),
            Some(v) => {
                let inner = v.trim_matches(|c| matches!(c, '[' | ']' | '{' | '}'));
                for n in inner
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|n| !n.is_empty())
                {
                    out.values().append_option(n.parse::<B::Native>().ok());
                }
                out.append(true);
            }
        }
    }
    out.finish()
}

#[async_trait]
impl TableProvider for ArrayColumns {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self.converted(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int16Type;

    use super::*;

    #[test]
    fn the_text_forms_of_int2_arrays_become_lists() {
        let text = StringArray::from(vec![
            Some("[1, 2]"),
            Some("{3,4}"),
            Some("5 6 7"),
            None,
            Some("[]"),
        ]);
        let lists = parse_arrays(&text, Int16Builder::new());
        let row = |i: usize| -> Vec<i16> {
            lists
                .value(i)
                .as_primitive::<Int16Type>()
                .iter()
                .flatten()
                .collect()
        };
        assert_eq!(row(0), vec![1, 2]);
        assert_eq!(row(1), vec![3, 4]);
        assert_eq!(row(2), vec![5, 6, 7]);
        assert!(lists.is_null(3));
        assert_eq!(row(4), Vec::<i16>::new());
    }
}
