//! Query side: the DataFusion catalog that exposes streams (schema
//! `public`) and system relations (schema `sluice`), and the construction
//! of one `SessionContext` per connection from shared state.

pub mod delta_table;
mod explain;
pub mod guard;
mod information_schema;
mod pg_arrays;
mod pg_functions;
mod pg_text;
mod read_only;
mod registry;
mod roles;
mod sink_table;
mod stream_table;
mod string_group;
mod system;
mod system_streams;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::CatalogProvider;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

pub use explain::explain_insert_error;
pub use registry::{Quarantined, Registry, Relation};
pub use sink_table::SinkTable;
pub use stream_table::StreamTable;
pub use system::{SystemRelation, SystemTable};

use crate::catalog::Catalog;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::storage::StoreRegistry;

/// The database name clients see (`current_database()`, `\l`).
pub const CATALOG_NAME: &str = "sluice";
pub const PUBLIC_SCHEMA: &str = "public";
pub const SYSTEM_SCHEMA: &str = "sluice";

/// Builds the template context every connection's session is cloned from.
pub fn template_context(
    registry: Arc<Registry>,
    roles_catalog: &Arc<Catalog>,
    stores: Arc<StoreRegistry>,
    limits: &Limits,
    spill_dir: &Path,
) -> Result<SessionContext> {
    let max_statement_bytes = limits.max_statement_bytes;
    let mut config = SessionConfig::new()
        // sluice's own information_schema (PostgreSQL type names) is
        // registered in the catalog below.
        .with_information_schema(false)
        .with_default_catalog_and_schema(CATALOG_NAME, PUBLIC_SCHEMA)
        .with_create_default_catalog_and_schema(false);
    let options = config.options_mut();
    options.execution.time_zone = Some("UTC".to_string());
    // Point lookups and selective filters: let the Parquet reader use
    // page indexes and evaluate filters while decoding.
    options.execution.parquet.enable_page_index = true;
    options.execution.parquet.pushdown_filters = true;
    options.execution.parquet.reorder_filters = true;
    // External tables see new files and partitions at the next query
    // (no MSCK REPAIR): no listing cache. Sink tables list nothing; they
    // read the catalog's file set.
    // One pool for all sessions, shared fairly among spilling operators;
    // its error names the largest consumers.
    let pool_bytes = usize::try_from(limits.query_memory_bytes).unwrap_or(usize::MAX);
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(pool_bytes),
        NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
    );
    // Spill files of a crashed run are garbage: the directory starts empty.
    if spill_dir.exists() {
        std::fs::remove_dir_all(spill_dir)?;
    }
    std::fs::create_dir_all(spill_dir)?;
    let disk = DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::Directories(vec![spill_dir.to_path_buf()]))
        .with_max_temp_directory_size(limits.query_spill_bytes);
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(disk)
        .with_object_store_registry(stores)
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        )
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(string_group::StringGroupRule))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(
        PUBLIC_SCHEMA,
        Arc::new(StreamSchema {
            registry: registry.clone(),
            max_statement_bytes,
        }),
    )?;
    catalog.register_schema(
        SYSTEM_SCHEMA,
        Arc::new(SystemSchema {
            registry,
            catalog: Arc::downgrade(roles_catalog),
            max_statement_bytes,
        }),
    )?;
    catalog.register_schema(
        information_schema::INFORMATION_SCHEMA,
        Arc::new(information_schema::PgInformationSchema::new(
            ctx.state().catalog_list(),
        )),
    )?;
    ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
    ctx.register_udf(col_description());
    ctx.register_udf(version());
    ctx.register_udf(pg_functions::to_regtype());
    ctx.register_udf(pg_functions::json_build_object());
    ctx.register_udf(pg_functions::pg_collation_is_visible());
    ctx.register_udf(pg_functions::current_setting());
    ctx.add_analyzer_rule(Arc::new(pg_text::PgTextCasts::new()));
    for udf in pg_functions::null_text_functions() {
        ctx.register_udf(udf);
    }
    let roles = roles::Roles::new(roles_catalog);
    ctx.register_udf(roles::member_of_udf(roles.clone()));
    setup_pg_catalog(&ctx, CATALOG_NAME, roles).map_err(|e| Error::from_datafusion(*e))?;
    if let Some(catalog) = ctx.catalog(CATALOG_NAME) {
        if let Some(pg_catalog) = catalog.schema("pg_catalog") {
            catalog.register_schema(
                "pg_catalog",
                Arc::new(pg_arrays::PgCatalogArrays::new(pg_catalog)),
            )?;
        }
    }
    Ok(ctx)
}

/// A fresh session for one connection: shares catalogs and functions with
/// the template, owns its settings (a `SET` does not leak to others).
pub fn new_session(template: &SessionContext) -> SessionContext {
    SessionContext::new_with_state(template.state())
}

/// Schema `public`: every stream, sink and table over files.
#[derive(Debug)]
struct StreamSchema {
    registry: Arc<Registry>,
    max_statement_bytes: u64,
}

#[async_trait]
impl SchemaProvider for StreamSchema {
    fn table_names(&self) -> Vec<String> {
        self.registry.relation_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.registry.relation(name).map(|r| match r {
            Relation::Stream(s) => {
                Arc::new(StreamTable::new(s, self.max_statement_bytes)) as Arc<dyn TableProvider>
            }
            Relation::Sink(s) => match self.registry.sink_table(s.name()) {
                Some(table) => table as Arc<dyn TableProvider>,
                None => Arc::new(SinkTable::new(s.core.clone())),
            },
            Relation::Table(t) => t,
        }))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(Error::FeatureNotSupported(format!(
            "tables are created with CREATE TABLE \"{name}\" AS SELECT or CREATE EXTERNAL TABLE; use CREATE STREAM for data you write"
        ))
        .into())
    }

    fn table_exist(&self, name: &str) -> bool {
        self.registry.relation(name).is_some()
    }
}

/// Schema `sluice`: system relations, and the `errors` stream.
#[derive(Debug)]
struct SystemSchema {
    registry: Arc<Registry>,
    catalog: std::sync::Weak<Catalog>,
    max_statement_bytes: u64,
}

const ERRORS_TABLE: &str = "errors";

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SystemRelation::ALL
            .iter()
            .map(|r| r.name().to_string())
            .chain(std::iter::once(ERRORS_TABLE.to_string()))
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == ERRORS_TABLE {
            return Ok(self.registry.errors().map(|s| {
                Arc::new(StreamTable::new(s, self.max_statement_bytes)) as Arc<dyn TableProvider>
            }));
        }
        Ok(SystemRelation::ALL
            .iter()
            .find(|r| r.name() == name)
            .map(|r| {
                Arc::new(SystemTable::new(
                    *r,
                    self.registry.clone(),
                    self.catalog.clone(),
                )) as Arc<dyn TableProvider>
            }))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == ERRORS_TABLE || SystemRelation::ALL.iter().any(|r| r.name() == name)
    }
}

/// `col_description(table_oid, column_number)`: psql's `\d+` asks for
/// column comments; sluice has none, so it is always NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ColDescription {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for ColDescription {
    fn name(&self) -> &str {
        "col_description"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[datafusion::arrow::datatypes::DataType],
    ) -> DfResult<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::Utf8(None),
        ))
    }
}

/// `version()` as PostgreSQL words it (clients parse "PostgreSQL X.Y"),
/// naming sluice too.
fn version() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let text = format!(
        "PostgreSQL {} (sluice {}) on {}-linux, compiled by rustc, 64-bit",
        crate::sql::SERVER_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    datafusion::logical_expr::create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

fn col_description() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(ColDescription {
        signature: datafusion::logical_expr::Signature::any(
            2,
            datafusion::logical_expr::Volatility::Immutable,
        ),
    })
}
