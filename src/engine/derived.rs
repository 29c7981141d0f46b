//! Derived streams (`CREATE STREAM … AS SELECT`): planning, the catalog
//! entry, and starting their pipelines, at creation and at every start.

use std::sync::Arc;

use datafusion::common::TableReference;

use super::{DdlOutcome, Engine};
use crate::catalog::{PipelineDef, StreamDef};
use crate::cq::{compile, Pipeline, Program};
use crate::error::{Error, Result};
use crate::runtime::Stream;
use crate::sql::CreateDerived;
use crate::types::{ColumnDef, SqlType};

impl Engine {
    /// Plans and compiles a continuous query against the current catalog.
    pub(super) async fn plan_pipeline(&self, select: &str) -> Result<(Program, Arc<Stream>)> {
        let state = self.template.state();
        let plan = state.create_logical_plan(select).await?;
        let plan = state.optimize(&plan)?;
        let program = compile(&state, &plan)?;
        let source = self.resolve_source(&program.source)?;
        Ok((program, source))
    }

    fn resolve_source(&self, table: &TableReference) -> Result<Arc<Stream>> {
        let found = match table.schema() {
            Some("sluice") if table.table() == "errors" => self.registry.errors(),
            None | Some("public") => self.registry.get(table.table()),
            Some(_) => None,
        };
        found.ok_or_else(|| {
            Error::FeatureNotSupported(format!(
                "a continuous query reads one stream; \"{table}\" is not a stream"
            ))
        })
    }

    pub async fn create_derived(&self, create: CreateDerived) -> Result<DdlOutcome> {
        let _guard = self.ddl_lock.lock().await;
        if let Some(skipped) = self.name_taken(&create.name, create.if_not_exists)? {
            return Ok(skipped);
        }
        let (program, source) = self.plan_pipeline(&create.select).await?;
        let columns = output_columns(&program)?;
        let start_offsets = source.start_offsets(create.from_earliest);
        if let Some(key) = &create.partition_key {
            if !columns.iter().any(|c| &c.name == key) {
                return Err(Error::UndefinedColumn(format!(
                    "partition_key \"{key}\" is not a column of the query's output"
                )));
            }
        }
        let def = StreamDef {
            shards: create.shards.unwrap_or_else(|| source.log.shard_count()),
            partition_key: create.partition_key,
            pipeline: Some(PipelineDef {
                sql: create.select,
                source: source.def.name.clone(),
                start_offsets,
            }),
            ..StreamDef::new(create.name, columns)
        };
        let output = self.create_and_open(def)?;
        self.start_pipeline(program, source, output)?;
        Ok(DdlOutcome::Done)
    }

    fn start_pipeline(
        &self,
        program: Program,
        source: Arc<Stream>,
        output: Arc<Stream>,
    ) -> Result<()> {
        let def = output
            .def
            .pipeline
            .clone()
            .ok_or_else(|| Error::Internal(format!("{} has no pipeline", output.def.name)))?;
        let errors = self.registry.streams.require_errors()?;
        let name = output.def.name.clone();
        let pipeline = Pipeline::start(
            &name,
            &def.sql,
            program,
            source,
            output,
            errors,
            &def.start_offsets,
        );
        self.registry.insert_pipeline(pipeline);
        Ok(())
    }

    /// Starts the pipeline of every derived stream (at server start).
    pub async fn start_pipelines(&self) -> Result<()> {
        for stream in self.registry.list() {
            let Some(def) = stream.def.pipeline.clone() else {
                continue;
            };
            let (program, source) = self.plan_pipeline(&def.sql).await.map_err(|e| {
                Error::Internal(format!(
                    "the query of derived stream {} no longer plans: {e}",
                    stream.def.name
                ))
            })?;
            let program = program.conform_to(&stream.schema).map_err(|e| {
                Error::Internal(format!(
                    "the query of derived stream {} no longer fits its columns: {e}",
                    stream.def.name
                ))
            })?;
            self.start_pipeline(program, source, stream)?;
        }
        Ok(())
    }
}

impl Engine {
    /// Stops a derived stream's pipeline and starts it again on the
    /// current versions of its source and of itself, from the progress its
    /// output records: nothing is skipped or written twice.
    pub(super) async fn restart_pipeline(&self, derived: &Arc<Stream>) -> Result<()> {
        if let Some(pipeline) = self.registry.remove_pipeline(&derived.def.name) {
            pipeline.stop().await;
        }
        let sql = match &derived.def.pipeline {
            Some(p) => p.sql.clone(),
            None => return Ok(()),
        };
        let (program, source) = self.plan_pipeline(&sql).await?;
        let program = program.conform_to(&derived.schema)?;
        self.start_pipeline(program, source, derived.clone())
    }

    /// `ALTER STREAM d AS SELECT …`: the pipeline continues with the new
    /// query where the old one stopped, when the new columns are an
    /// evolution old records can be read in.
    pub(super) async fn replace_query(
        &self,
        stream: &Arc<Stream>,
        select: String,
        statement: String,
    ) -> Result<DdlOutcome> {
        let name = &stream.def.name;
        let Some(current) = &stream.def.pipeline else {
            return Err(Error::FeatureNotSupported(format!(
                "\"{name}\" is not a derived stream; ALTER STREAM … AS SELECT replaces a derived stream's query (CREATE STREAM … AS SELECT makes one)"
            )));
        };
        let (program, source) = self.plan_pipeline(&select).await?;
        if source.def.name != current.source {
            return Err(Error::FeatureNotSupported(format!(
                "the new query reads \"{}\" but the pipeline of \"{name}\" reads \"{}\", and its progress is a position in that stream; create a new derived stream for the new source",
                source.def.name, current.source
            )));
        }
        let columns = output_columns(&program)?;
        let redo = |why: String| {
            Error::FeatureNotSupported(format!(
                "the new query's columns are not an evolution of \"{name}\"'s: {why}; records already in the stream could not be read in them. Create a new derived stream (CREATE STREAM … AS SELECT …) and move its sinks"
            ))
        };
        let mut dropped = Vec::new();
        for old in &stream.def.columns {
            match columns.iter().find(|c| c.name == old.name) {
                None => dropped.push(old.name.clone()),
                Some(new)
                    if new.sql_type == old.sql_type || old.sql_type.widens_to(new.sql_type) => {}
                Some(new) => {
                    return Err(redo(format!(
                        "column \"{}\" would change from {} to {}",
                        old.name,
                        old.sql_type.pg_name(),
                        new.sql_type.pg_name()
                    )))
                }
            }
        }
        if let Some(key) = stream
            .def
            .partition_key
            .as_ref()
            .filter(|k| dropped.contains(k))
        {
            return Err(redo(format!("it drops the partition key \"{key}\"")));
        }
        let history = self.catalog.schema_versions(&stream.def)?;
        if let Some(old) = columns.iter().find(|c| {
            !stream.def.columns.iter().any(|o| o.name == c.name)
                && history
                    .iter()
                    .any(|v| v.columns.iter().any(|o| o.name == c.name))
        }) {
            return Err(redo(format!(
                "column \"{}\" was dropped in an earlier version and old records may still carry it",
                old.name
            )));
        }
        let users = self.users_of(stream, &dropped).await?;
        if !users.is_empty() {
            return Err(Error::DependentObjects(format!(
                "the new query of \"{name}\" drops columns others use: {}",
                users
                    .iter()
                    .map(|u| u.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(pipeline) = self.registry.remove_pipeline(name) {
            pipeline.stop().await;
        }
        let def = StreamDef {
            columns,
            pipeline: Some(PipelineDef {
                sql: select,
                ..current.clone()
            }),
            ..stream.def.clone()
        };
        let evolved = match self.commit_version(stream, def, statement) {
            Ok(evolved) => evolved,
            Err(e) => {
                // The old query goes on.
                self.restart_pipeline(stream).await?;
                return Err(e);
            }
        };
        let program = program.conform_to(&evolved.schema)?;
        self.start_pipeline(program, source, evolved)?;
        self.follow_schema(name).await;
        Ok(DdlOutcome::Done)
    }
}

/// A derived stream's columns: the query's output, every column nullable.
fn output_columns(program: &Program) -> Result<Vec<ColumnDef>> {
    let mut columns: Vec<ColumnDef> = Vec::new();
    for field in program.output.fields() {
        if columns.iter().any(|c| &c.name == field.name()) {
            return Err(Error::Syntax(format!(
                "column \"{}\" appears more than once in the query's output; give it an alias with AS",
                field.name()
            )));
        }
        let sql_type = SqlType::from_arrow(field.data_type()).ok_or_else(|| {
            Error::FeatureNotSupported(format!(
                "column \"{}\" has type {} which streams cannot store; CAST it",
                field.name(),
                field.data_type()
            ))
        })?;
        columns.push(ColumnDef::new(field.name().clone(), sql_type, true));
    }
    Ok(columns)
}
