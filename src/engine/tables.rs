//! Tables over files, Athena style: `CREATE EXTERNAL TABLE` over Parquet,
//! CSV or JSON already on storage (partitions found from `k=v`
//! directories at every query, no repair step), and `CREATE TABLE … AS
//! SELECT`, which writes Parquet into the warehouse and registers it.
//! Both are kept in the catalog as the `CREATE EXTERNAL TABLE` that
//! re-creates them at start. DROP TABLE never deletes external data.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::sinks::wrong_kind;
use super::{DdlOutcome, Engine};
use crate::catalog::TableDef;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::query::delta_table::{delta_table, DeltaSnapshot};
use crate::query::Relation;
use crate::sql::{CreateTableAs, DropStream};
use crate::storage::Location;

impl Engine {
    pub async fn create_external_table(&self, sql: &str) -> Result<DdlOutcome> {
        let _guard = self.ddl_lock.lock().await;
        let (cmd, provider) = self.plan_external(sql).await?;
        let name = cmd.name.table().to_string();
        if let Some(skipped) = self.name_taken(&name, cmd.if_not_exists)? {
            return Ok(skipped);
        }
        self.catalog.create_table(TableDef {
            name: name.clone(),
            id: 0,
            sql: sql.to_string(),
            managed_dir: None,
            created_at_ms: now_ms(),
        })?;
        self.registry.insert_table(&name, provider);
        Ok(DdlOutcome::Done)
    }

    /// Plans `CREATE EXTERNAL TABLE` and builds its listing table. A local
    /// relative location is taken relative to the data dir.
    async fn plan_external(
        &self,
        sql: &str,
    ) -> Result<(CreateExternalTable, Arc<dyn TableProvider>)> {
        let state = self.template.state();
        let plan = state.create_logical_plan(sql).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(mut cmd)) = plan else {
            return Err(Error::Syntax(
                "expected CREATE EXTERNAL TABLE name [(columns)] STORED AS PARQUET|CSV|JSON [PARTITIONED BY (…)] LOCATION '…'".into(),
            ));
        };
        if cmd
            .name
            .schema()
            .is_some_and(|s| s != crate::query::PUBLIC_SCHEMA)
        {
            return Err(Error::InvalidParameter(format!(
                "tables live in schema \"public\"; \"{}\" names another schema",
                cmd.name
            )));
        }
        if cmd.unbounded {
            return Err(Error::InsufficientPrivilege(
                "UNBOUNDED external tables are not allowed: continuous data lives in streams (CREATE STREAM)".into(),
            ));
        }
        for location in cmd.locations.iter_mut() {
            self.stores
                .policy()
                .check(location, &self.config.data_dir)?;
            if !location.contains("://") && !location.starts_with('/') {
                *location = self
                    .config
                    .data_dir
                    .join(&*location)
                    .to_string_lossy()
                    .to_string();
            }
        }
        let file_type = cmd.file_type.to_uppercase();
        if file_type == "DELTA" {
            let [location] = cmd.locations.as_slice() else {
                return Err(Error::InvalidParameter(
                    "a Delta table has one LOCATION".into(),
                ));
            };
            if !cmd.table_partition_cols.is_empty() || !cmd.schema.fields().is_empty() {
                return Err(Error::InvalidParameter(
                    "a Delta table's columns and partitions come from its log: write CREATE EXTERNAL TABLE name STORED AS DELTA LOCATION '…'".into(),
                ));
            }
            let snapshot = DeltaSnapshot::from_options(&cmd.options)?;
            let location = Location::resolve(location, &self.config.data_dir, &self.stores)?;
            let provider = delta_table(&location, &snapshot).await?;
            return Ok((*cmd, provider));
        }
        let factory = state
            .table_factories()
            .get(file_type.as_str())
            .ok_or_else(|| {
                Error::FeatureNotSupported(format!(
                    "STORED AS {} is not supported; use PARQUET, CSV, JSON or DELTA",
                    cmd.file_type
                ))
            })?;
        let provider = match factory.create(&state, &cmd).await {
            Ok(provider) => provider,
            // Parquet files of several schema versions (a sink's directory
            // across an ALTER) that DataFusion's inference cannot merge:
            // given their merged schema, the table reads them all. Files
            // that agree never pay for this second reading of footers.
            Err(e) if file_type == "PARQUET" && cmd.schema.fields().is_empty() => {
                if !super::parquet_schema::declare_merged_schema(&state, &mut cmd).await? {
                    return Err(e.into());
                }
                factory.create(&state, &cmd).await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok((*cmd, provider))
    }

    /// `CREATE TABLE name AS SELECT`: streams the result into one Parquet
    /// file, then registers it. Returns the outcome and the row count.
    pub async fn create_table_as(
        &self,
        ctas: CreateTableAs,
        session: &SessionContext,
    ) -> Result<(DdlOutcome, u64)> {
        let _guard = self.ddl_lock.lock().await;
        if let Some(skipped) = self.name_taken(&ctas.name, ctas.if_not_exists)? {
            return Ok((skipped, 0));
        }
        let managed = ctas.location.is_none();
        if managed {
            directory_name(&ctas.name)?;
        }
        let text = ctas
            .location
            .clone()
            .unwrap_or_else(|| format!("warehouse/{}", ctas.name));
        let location = Location::resolve(&text, &self.config.data_dir, &self.stores)?;
        let mut existing = location.store.list(Some(&location.prefix));
        if existing.next().await.is_some() {
            return Err(Error::InvalidParameter(format!(
                "location '{text}' already holds files; CREATE TABLE … AS writes into an empty location"
            )));
        }
        let pending = managed.then(|| location.prefix.to_string());
        if let Some(dir) = &pending {
            self.catalog.begin_ctas(dir)?;
        }
        let rows = match self.write_query(&ctas.query, session, &location).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = location.store.delete(&location.child(CTAS_FILE)).await;
                if let Some(dir) = &pending {
                    let _ = self.catalog.forget_ctas(dir);
                }
                return Err(e);
            }
        };
        let sql = format!(
            "CREATE EXTERNAL TABLE \"{}\" STORED AS PARQUET LOCATION '{}'",
            ctas.name.replace('"', "\"\""),
            location.url_string().replace('\'', "''")
        );
        let (_, provider) = self.plan_external(&sql).await?;
        self.catalog.create_table(TableDef {
            name: ctas.name.clone(),
            id: 0,
            sql,
            managed_dir: pending,
            created_at_ms: now_ms(),
        })?;
        self.registry.insert_table(&ctas.name, provider);
        Ok((DdlOutcome::Done, rows))
    }

    async fn write_query(
        &self,
        query: &str,
        session: &SessionContext,
        location: &Location,
    ) -> Result<u64> {
        let plan = crate::query::guard::plan_read_only(&session.state(), query).await?;
        let df = session.execute_logical_plan(plan).await?;
        let mut stream = df.execute_stream().await?;
        let (_, mut writer) = location.parquet_writer(
            CTAS_FILE,
            stream.schema(),
            crate::sink::parquet_properties("zstd").build(),
            self.config.limits.upload_part_size_bytes as usize,
        )?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await?;
        }
        writer.close().await?;
        Ok(rows)
    }

    pub async fn drop_table(&self, drop: DropStream) -> Result<Vec<DdlOutcome>> {
        let _guard = self.ddl_lock.lock().await;
        let mut outcomes = Vec::new();
        for name in &drop.names {
            // A table whose files were unreachable at start is in the
            // catalog only; it can be dropped all the same.
            let in_catalog = || {
                self.catalog
                    .tables()
                    .map(|t| t.iter().any(|t| &t.name == name))
                    .unwrap_or(false)
            };
            match self.registry.relation(name) {
                Some(Relation::Table(_)) => outcomes.push(DdlOutcome::Done),
                Some(_) => return Err(wrong_kind(name, "table")),
                None if in_catalog() => outcomes.push(DdlOutcome::Done),
                None if drop.if_exists => outcomes.push(DdlOutcome::Skipped(format!(
                    "table \"{name}\" does not exist, skipping"
                ))),
                None => return Err(Error::UndefinedTable(name.clone())),
            }
        }
        for (name, outcome) in drop.names.iter().zip(&outcomes) {
            if *outcome != DdlOutcome::Done {
                continue;
            }
            self.registry.remove_table(name);
            let def = self.catalog.drop_table(name)?;
            if let Some(dir) = def.managed_dir {
                // Only CTAS output in the warehouse is ours to delete.
                let path = std::path::PathBuf::from(format!("/{dir}"));
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(dir = %path.display(), error = %e, "could not remove a dropped table's files");
                    }
                });
            }
        }
        Ok(outcomes)
    }

    /// Re-creates every table of the catalog (at server start), then
    /// removes the directories of CTAS statements that began and never
    /// committed (a crash mid-CTAS), and nothing else.
    /// A table whose files cannot be reached now is logged and skipped.
    pub async fn open_tables(self: &Arc<Self>) -> Result<()> {
        let defs = self.catalog.tables()?;
        for def in &defs {
            match self.plan_external(&def.sql).await {
                Ok((_, provider)) => self.registry.insert_table(&def.name, provider),
                Err(e) => {
                    tracing::error!(table = %def.name, error = %e, "table is unavailable until its files can be read; retrying");
                    tokio::spawn(self.clone().reopen_table(def.clone()));
                }
            }
        }
        // Only a directory a CTAS provably began and never committed is
        // deleted; anything else in the warehouse (other tables' or sinks'
        // files, files put there by hand) is left alone.
        for dir in self.catalog.pending_ctas()? {
            let owned = defs
                .iter()
                .any(|d| d.managed_dir.as_deref() == Some(dir.as_str()));
            if !owned {
                // Local prefixes are absolute paths without the leading '/'.
                let path = std::path::Path::new("/").join(&dir);
                let warehouse = self.config.data_dir.join("warehouse").canonicalize();
                if !warehouse.is_ok_and(|w| path.starts_with(w)) {
                    tracing::warn!(dir = %path.display(), "an interrupted CREATE TABLE … AS outside the warehouse is left in place");
                    self.catalog.forget_ctas(&dir)?;
                    continue;
                }
                tracing::info!(dir = %path.display(), "removing the files of an interrupted CREATE TABLE … AS");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e.into());
                    }
                }
            }
            self.catalog.forget_ctas(&dir)?;
        }
        Ok(())
    }
}

const CTAS_FILE: &str = "part-00000.parquet";

/// How often a table whose files could not be read at start is tried again.
const REOPEN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Engine {
    /// Tries a table again until its files can be read (or it is dropped).
    async fn reopen_table(self: Arc<Self>, def: TableDef) {
        let listed = |engine: &Engine| {
            engine
                .catalog
                .tables()
                .map(|t| t.iter().any(|t| t.id == def.id))
                .unwrap_or(false)
        };
        loop {
            tokio::time::sleep(REOPEN_INTERVAL).await;
            if !listed(&self) {
                return;
            }
            // Planning may wait on the store: not under the DDL lock.
            let Ok((_, provider)) = self.plan_external(&def.sql).await else {
                continue;
            };
            let _guard = self.ddl_lock.lock().await;
            if listed(&self) && self.registry.relation(&def.name).is_none() {
                tracing::info!(table = %def.name, "table is available again");
                self.registry.insert_table(&def.name, provider);
            }
            return;
        }
    }
}

/// Refuses (42602) a table name that cannot be a directory of its own in
/// the warehouse: `"."` would make the warehouse itself the table's
/// directory (and DROP TABLE delete every table's files), `".."` its
/// parent, a `/` a path elsewhere.
fn directory_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidName(format!(
            "table name \"{name}\" {why}: CREATE TABLE … AS without a LOCATION keeps the table in a directory of that name; rename it or give a LOCATION"
        )))
    };
    if matches!(name, "" | "." | "..") {
        return bad("names no directory of its own");
    }
    if name.contains(['/', '\\', '\0']) {
        return bad("holds a path separator or NUL");
    }
    if name.len() > 255 {
        return bad("is longer than a file name may be (255 bytes)");
    }
    Ok(())
}
