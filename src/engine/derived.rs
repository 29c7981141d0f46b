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
    async fn plan_pipeline(&self, select: &str) -> Result<(Program, Arc<Stream>)> {
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
            columns.push(ColumnDef {
                name: field.name().clone(),
                sql_type,
                nullable: true,
            });
        }
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
            if program.output.fields().len() != stream.schema.fields().len() {
                return Err(Error::Internal(format!(
                    "the query of derived stream {} now yields a different schema",
                    stream.def.name
                )));
            }
            self.start_pipeline(program, source, stream)?;
        }
        Ok(())
    }
}
