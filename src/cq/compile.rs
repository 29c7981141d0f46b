//! Compiles a continuous query's SELECT into a [`Program`]: the source
//! stream, the columns to decode, and a chain of physical filters and
//! projections evaluated on each micro-batch as it arrives (no operator
//! that waits for a full batch, so latency does not depend on traffic).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::common::TableReference;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Error, Result};

const SUPPORTED: &str = "continuous queries support projections, column renames, WHERE filters and scalar expressions over one stream; aggregates, joins, ORDER BY, LIMIT, DISTINCT, UNION and window functions are not supported yet";

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};

#[derive(Debug)]
enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
}

/// A compiled continuous query.
#[derive(Debug)]
pub struct Program {
    /// The relation read, as the query named it.
    pub source: TableReference,
    /// Source columns to decode (`None` = all).
    pub projection: Option<Vec<usize>>,
    steps: Vec<Step>,
    /// The schema of what `run` returns.
    pub output: SchemaRef,
}

/// Compiles an optimised logical plan; refuses (0A000) anything stateful.
pub fn compile(state: &SessionState, plan: &LogicalPlan) -> Result<Program> {
    let mut program = match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return Err(Error::FeatureNotSupported(SUPPORTED.into()));
            }
            let mut steps = Vec::new();
            if let Some(predicate) = conjunction(scan.filters.iter().cloned()) {
                steps.push(Step::Filter(
                    state.create_physical_expr(predicate, &scan.projected_schema)?,
                ));
            }
            Program {
                source: scan.table_name.clone(),
                projection: scan.projection.clone(),
                steps,
                output: nullable(scan.projected_schema.as_arrow()),
            }
        }
        LogicalPlan::Filter(filter) => {
            let mut program = compile(state, &filter.input)?;
            let predicate =
                state.create_physical_expr(filter.predicate.clone(), filter.input.schema())?;
            program.steps.push(Step::Filter(predicate));
            program
        }
        LogicalPlan::Projection(projection) => {
            let mut program = compile(state, &projection.input)?;
            let input: &DFSchema = projection.input.schema();
            let exprs = projection
                .expr
                .iter()
                .map(|e| state.create_physical_expr(e.clone(), input))
                .collect::<datafusion::common::Result<Vec<_>>>()
                .map_err(|e| Error::FeatureNotSupported(format!("{SUPPORTED} ({e})")))?;
            let schema = nullable(projection.schema.as_arrow());
            program.steps.push(Step::Project {
                exprs,
                schema: schema.clone(),
            });
            program.output = schema;
            program
        }
        LogicalPlan::SubqueryAlias(alias) => compile(state, &alias.input)?,
        _ => return Err(Error::FeatureNotSupported(SUPPORTED.into())),
    };
    program.output = nullable(&program.output);
    Ok(program)
}

/// Every column of a continuous query's output may be NULL: the plan's
/// nullability is not checked per record, so it is not promised either.
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

impl Program {
    /// Ends the program with `declared` (a derived stream's columns): its
    /// columns picked by name and cast to the declared types, a value that
    /// does not fit failing its row. A source's schema change then never
    /// changes what the stream holds (a `SELECT *` does not grow).
    pub fn conform_to(mut self, declared: &SchemaRef) -> Result<Program> {
        let same = |a: &Schema, b: &Schema| {
            a.fields().len() == b.fields().len()
                && a.fields()
                    .iter()
                    .zip(b.fields())
                    .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
        };
        if same(&self.output, declared) {
            return Ok(self);
        }
        let exprs = declared
            .fields()
            .iter()
            .map(|field| {
                let i = self.output.index_of(field.name()).map_err(|_| {
                    Error::FeatureNotSupported(format!(
                        "the query no longer yields column \"{}\" of the derived stream",
                        field.name()
                    ))
                })?;
                Ok(Arc::new(Column::new(field.name(), i)) as Arc<dyn PhysicalExpr>)
            })
            .collect::<Result<Vec<_>>>()?;
        self.steps.push(Step::Project {
            exprs,
            schema: declared.clone(),
        });
        self.output = declared.clone();
        Ok(self)
    }

    /// Evaluates the query on one decoded batch of the source.
    pub fn run(&self, batch: &RecordBatch) -> datafusion::common::Result<RecordBatch> {
        let mut current = batch.clone();
        for step in &self.steps {
            current = match step {
                Step::Filter(predicate) => {
                    let mask = predicate
                        .evaluate(&current)?
                        .into_array(current.num_rows())?;
                    let mask = datafusion::common::cast::as_boolean_array(&mask)?;
                    filter_record_batch(&current, mask)?
                }
                Step::Project { exprs, schema } => {
                    let rows = current.num_rows();
                    let columns = exprs
                        .iter()
                        .zip(schema.fields())
                        .map(|(e, field)| {
                            let array = e.evaluate(&current)?.into_array(rows)?;
                            Ok(if array.data_type() == field.data_type() {
                                array
                            } else {
                                // Strict: a value that does not fit fails its
                                // row (to sluice.errors), never turns NULL.
                                cast_with_options(&array, field.data_type(), &STRICT)?
                            })
                        })
                        .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
                    RecordBatch::try_new_with_options(
                        schema.clone(),
                        columns,
                        &RecordBatchOptions::new().with_row_count(Some(rows)),
                    )?
                }
            };
        }
        Ok(current)
    }
}
