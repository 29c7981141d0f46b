//! A stream's schema versions as the log keeps them (swapped whole by an
//! ALTER), and reading a frame of any version in one schema: columns
//! matched by name, a column the frame lacks filled with its DEFAULT or
//! NULL, a widened column cast. Segments are never rewritten; old frames
//! are adapted as they are read.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Fields, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};

/// Schema versions by number (1 is the CREATE).
#[derive(Debug, Clone)]
pub struct Versions {
    by_number: BTreeMap<u32, SchemaRef>,
    /// The newest version and its schema.
    current: (u32, SchemaRef),
}

impl Versions {
    pub fn new(by_number: BTreeMap<u32, SchemaRef>) -> Result<Versions> {
        let current = by_number
            .last_key_value()
            .map(|(v, s)| (*v, s.clone()))
            .ok_or_else(|| Error::Internal("a stream log needs a schema".into()))?;
        Ok(Versions { by_number, current })
    }

    /// A log with one version (version 1).
    pub fn single(schema: SchemaRef) -> Versions {
        Versions {
            by_number: BTreeMap::from([(1, schema.clone())]),
            current: (1, schema),
        }
    }

    /// The newest version and its schema.
    pub fn current(&self) -> (u32, &SchemaRef) {
        (self.current.0, &self.current.1)
    }

    pub fn get(&self, version: u32) -> Option<&SchemaRef> {
        self.by_number.get(&version)
    }

    /// The newest version whose columns are exactly `fields`: what a batch
    /// built against that version is written as.
    pub fn version_of(&self, fields: &Fields) -> Option<u32> {
        self.by_number
            .iter()
            .rev()
            .find(|(_, s)| s.fields() == fields)
            .map(|(v, _)| *v)
    }

    /// These versions and `version` (the newest if it is above the others).
    pub fn with(&self, version: u32, schema: SchemaRef) -> Versions {
        let mut by_number = self.by_number.clone();
        by_number.insert(version, schema.clone());
        let current = if version >= self.current.0 {
            (version, schema)
        } else {
            self.current.clone()
        };
        Versions { by_number, current }
    }
}

/// The schema a reader wants frames in (the current one, possibly
/// projected), with the DEFAULT of each column.
#[derive(Debug, Clone)]
pub struct ReadSchema {
    schema: SchemaRef,
    defaults: Vec<Option<ScalarValue>>,
}

impl ReadSchema {
    /// `defaults[i]` is the DEFAULT of `schema`'s column `i` (`None`: NULL).
    pub fn new(schema: SchemaRef, defaults: Vec<Option<ScalarValue>>) -> ReadSchema {
        ReadSchema { schema, defaults }
    }

    /// Columns without defaults.
    pub fn plain(schema: SchemaRef) -> ReadSchema {
        let defaults = vec![None; schema.fields().len()];
        ReadSchema { schema, defaults }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Which columns of a frame written in `written` to decode: positions
    /// in `written`, or `None` for all (the frame is exactly this schema).
    pub(super) fn projection(&self, written: &Schema) -> Option<Vec<usize>> {
        if written.fields() == self.schema.fields() {
            return None;
        }
        let mut projection: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .filter_map(|f| written.index_of(f.name()).ok())
            .collect();
        projection.sort_unstable();
        Some(projection)
    }

    /// A batch of any columns of any version (a decoded frame, a file
    /// written before a schema change) in this schema.
    pub fn adapt(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields() == self.schema.fields() {
            return Ok(batch);
        }
        let rows = batch.num_rows();
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&self.defaults)
            .map(|(field, default)| -> Result<ArrayRef> {
                Ok(match batch.column_by_name(field.name()) {
                    Some(column) if column.data_type() == field.data_type() => column.clone(),
                    Some(column) => cast(column, field.data_type())?,
                    None => match default {
                        Some(value) => value.to_array_of_size(rows)?,
                        None => new_null_array(field.data_type(), rows),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

impl super::StreamLog {
    /// The schema versions now (a snapshot: a later ALTER does not
    /// change it).
    pub fn versions(&self) -> Arc<Versions> {
        match self.versions.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current schema.
    pub fn schema(&self) -> SchemaRef {
        self.versions().current().1.clone()
    }

    /// Adds schema version `version`: appends in it are accepted from now
    /// on, and readers see every frame in it once they ask for it.
    pub fn evolve(&self, version: u32, schema: SchemaRef) {
        let mut slot = match self.versions.write() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(slot.with(version, schema));
    }

    /// The version `batches` were built in (all in the same one).
    pub(super) fn version_of(&self, batches: &[&RecordBatch]) -> Result<u32> {
        let versions = self.versions();
        let Some(first) = batches.first() else {
            return Ok(versions.current().0);
        };
        let fields = first.schema_ref().fields();
        match versions.version_of(fields) {
            Some(v) if batches.iter().all(|b| b.schema_ref().fields() == fields) => Ok(v),
            _ => Err(Error::Internal(format!(
                "append with schema {:?} to a stream of schema {:?}",
                first.schema(),
                versions.current().1
            ))),
        }
    }
}
