//! `ALTER STREAM`: a declared stream's column changes, each statement a new
//! schema version that ingest, scans, pipelines and sinks follow at once,
//! and a derived stream's new query (`AS SELECT`), resumed from where the
//! old one stopped. The log is never rewritten: old frames are read in the
//! new version.

use std::sync::Arc;

use super::{sinks::wrong_kind, DdlOutcome, Engine};
use crate::catalog::{SchemaVersion, SinkFormat, StreamDef};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime::Stream;
use crate::sql::{AlterAction, AlterStream, ColumnChange};
use crate::types::ColumnDef;

/// What a list of column changes makes of a stream's columns.
#[derive(Debug, Default)]
struct Evolution {
    columns: Vec<ColumnDef>,
    dropped: Vec<String>,
    /// IF [NOT] EXISTS no-ops.
    notices: Vec<String>,
}

impl Engine {
    pub async fn alter_stream(&self, alter: AlterStream) -> Result<DdlOutcome> {
        let _guard = self.ddl_lock.lock().await;
        let Some(stream) = self.registry.get(&alter.name) else {
            if self.registry.relation(&alter.name).is_some() {
                return Err(wrong_kind(&alter.name, "stream"));
            }
            if alter.if_exists {
                return Ok(DdlOutcome::Skipped(format!(
                    "relation \"{}\" does not exist, skipping",
                    alter.name
                )));
            }
            return Err(Error::UndefinedTable(alter.name));
        };
        match alter.action {
            AlterAction::AsSelect(select) => {
                self.replace_query(&stream, select, alter.statement).await
            }
            AlterAction::Columns(changes) => {
                if stream.def.pipeline.is_some() {
                    return Err(Error::FeatureNotSupported(format!(
                        "\"{0}\" is a derived stream: its columns are its query's; change them with ALTER STREAM {0} AS SELECT …",
                        stream.def.name
                    )));
                }
                self.alter_columns(&stream, &changes, alter.statement).await
            }
        }
    }

    async fn alter_columns(
        &self,
        stream: &Arc<Stream>,
        changes: &[ColumnChange],
        statement: String,
    ) -> Result<DdlOutcome> {
        let name = &stream.def.name;
        let history = self.catalog.schema_versions(&stream.def)?;
        let evolution = apply_changes(&stream.def, &history, changes)?;
        if evolution.columns == stream.def.columns {
            // Nothing changes (IF [NOT] EXISTS, or a type it already has):
            // no new version.
            return Ok(match evolution.notices.is_empty() {
                true => DdlOutcome::Done,
                false => DdlOutcome::Skipped(evolution.notices.join("; ")),
            });
        }
        // A Delta table changes a column's type only with the typeWidening
        // feature, which most of its readers cannot read.
        let widened = changes
            .iter()
            .any(|c| matches!(c, ColumnChange::SetType { .. }));
        if let Some(sink) = self
            .registry
            .sinks_of(name)
            .into_iter()
            .find(|s| widened && s.core.def.format == SinkFormat::Delta)
        {
            return Err(Error::FeatureNotSupported(format!(
                "stream \"{name}\" feeds Delta sink \"{}\": a Delta table changes a column's type only with the typeWidening feature, which Athena and Spark before 4.0 cannot read; add a column of the wider type instead",
                sink.name()
            )));
        }
        // Dependents that use a dropped column: refused, or with CASCADE
        // dropped first.
        let users = self.users_of(stream, &evolution.dropped).await?;
        if !users.is_empty() {
            let cascade = changes
                .iter()
                .any(|c| matches!(c, ColumnChange::Drop { cascade: true, .. }));
            if !cascade {
                return Err(Error::DependentObjects(format!(
                    "cannot drop column {} of stream {name} because other objects depend on it: {}; use DROP COLUMN ... CASCADE to drop the dependent objects too",
                    evolution.dropped.join(", "),
                    users.iter().map(Dependent::describe).collect::<Vec<_>>().join(", ")
                )));
            }
            for user in &users {
                match user {
                    Dependent::Sink(sink, _) => {
                        if let Some(sink) = self.registry.sink(sink) {
                            self.drop_sink_now(&sink).await?;
                        }
                    }
                    Dependent::Derived(derived, _) => {
                        if let Some(derived) = self.registry.get(derived) {
                            let mut doomed = Vec::new();
                            self.collect_with_dependents(derived, &mut doomed);
                            for s in doomed.iter().rev() {
                                self.drop_one(s).await?;
                            }
                        }
                    }
                }
            }
        }
        let def = StreamDef {
            columns: evolution.columns,
            ..stream.def.clone()
        };
        self.commit_version(stream, def, statement)?;
        self.follow_schema(name).await;
        Ok(DdlOutcome::Done)
    }

    /// Commits `def` as the stream's next version and puts the evolved
    /// stream in place; appends in the new version are accepted from here.
    pub(super) fn commit_version(
        &self,
        stream: &Stream,
        mut def: StreamDef,
        statement: String,
    ) -> Result<Arc<Stream>> {
        def.schema_version = stream.def.schema_version + 1;
        let version = SchemaVersion {
            stream: def.name.clone(),
            version: def.schema_version,
            columns: def.columns.clone(),
            created_at_ms: now_ms(),
            statement,
        };
        self.catalog.evolve_stream(&def, &version)?;
        let evolved = stream.evolved(def)?;
        self.registry.streams.insert(evolved.clone());
        Ok(evolved)
    }

    /// Restarts what reads `source` on its new version: its sinks (new
    /// files in the new schema; what they had not committed is delivered
    /// again from their committed offsets) and the pipelines of derived
    /// streams (same declared output, from their recorded progress).
    pub(super) async fn follow_schema(&self, source: &str) {
        for sink in self.registry.sinks_of(source) {
            sink.stop().await;
            let def = sink.core.def.clone();
            let restarted = async {
                let source = self.sink_source(&def.source)?;
                let location = self.sink_location(&def)?;
                self.start_sink(def.clone(), source, location).await
            };
            if let Err(e) = restarted.await {
                tracing::error!(sink = %def.name, error = %e, "sink did not restart after a schema change; it starts with the server");
            }
        }
        for derived in self.registry.streams.dependents(source) {
            if let Err(e) = self.restart_pipeline(&derived).await {
                tracing::error!(stream = %derived.def.name, error = %e, "pipeline did not restart after a schema change; it starts with the server");
            }
        }
    }

    /// Which dependents of `stream` read one of `columns`.
    pub(super) async fn users_of(
        &self,
        stream: &Stream,
        columns: &[String],
    ) -> Result<Vec<Dependent>> {
        let mut users = Vec::new();
        if columns.is_empty() {
            return Ok(users);
        }
        for sink in self.registry.sinks_of(&stream.def.name) {
            let d = &sink.core.def;
            let used: Vec<String> = columns
                .iter()
                .filter(|c| {
                    d.event_time.as_ref() == Some(*c)
                        || d.partition_by.contains(c)
                        || d.sort_by.contains(c)
                        || d.bloom_filter_columns.contains(c)
                })
                .cloned()
                .collect();
            if !used.is_empty() {
                users.push(Dependent::Sink(d.name.clone(), used));
            }
        }
        for derived in self.registry.streams.dependents(&stream.def.name) {
            let Some(pipeline) = &derived.def.pipeline else {
                continue;
            };
            let (program, _) = self.plan_pipeline(&pipeline.sql).await?;
            let read: Vec<String> = match &program.projection {
                Some(p) => p
                    .iter()
                    .filter_map(|i| stream.def.columns.get(*i).map(|c| c.name.clone()))
                    .collect(),
                None => stream.def.columns.iter().map(|c| c.name.clone()).collect(),
            };
            let used: Vec<String> = columns
                .iter()
                .filter(|c| read.contains(c))
                .cloned()
                .collect();
            if !used.is_empty() {
                users.push(Dependent::Derived(derived.def.name.clone(), used));
            }
        }
        Ok(users)
    }
}

/// A sink or derived stream that reads columns of a stream.
pub(super) enum Dependent {
    Sink(String, Vec<String>),
    Derived(String, Vec<String>),
}

impl Dependent {
    pub(super) fn describe(&self) -> String {
        match self {
            Dependent::Sink(name, columns) => format!("sink {name} (uses {})", columns.join(", ")),
            Dependent::Derived(name, columns) => {
                format!("stream {name} (its query reads {})", columns.join(", "))
            }
        }
    }
}

/// Applies column changes in order, refusing any that old records or
/// the stream's own options could not follow.
fn apply_changes(
    def: &StreamDef,
    history: &[SchemaVersion],
    changes: &[ColumnChange],
) -> Result<Evolution> {
    let name = &def.name;
    let mut out = Evolution {
        columns: def.columns.clone(),
        ..Evolution::default()
    };
    let position =
        |columns: &[ColumnDef], column: &str| columns.iter().position(|c| c.name == column);
    for change in changes {
        match change {
            ColumnChange::Add {
                column,
                if_not_exists,
            } => {
                if position(&out.columns, &column.name).is_some() {
                    if *if_not_exists {
                        out.notices.push(format!(
                            "column \"{}\" of relation \"{name}\" already exists, skipping",
                            column.name
                        ));
                        continue;
                    }
                    return Err(Error::DuplicateColumn(format!(
                        "column \"{}\" of relation \"{name}\" already exists",
                        column.name
                    )));
                }
                if let Some(old) = history
                    .iter()
                    .find(|v| v.columns.iter().any(|c| c.name == column.name))
                {
                    return Err(Error::DuplicateColumn(format!(
                        "column \"{}\" was a column of stream \"{name}\" in version {} and records in the log may still carry it; choose another name",
                        column.name, old.version
                    )));
                }
                if out.dropped.contains(&column.name) {
                    return Err(Error::DuplicateColumn(format!(
                        "column \"{}\" is dropped and added in one statement; choose another name",
                        column.name
                    )));
                }
                let default = column.default_value().map_err(|e| {
                    Error::InvalidText(format!(
                        "DEFAULT of column \"{}\" is not a {}: {e}",
                        column.name,
                        column.sql_type.pg_name()
                    ))
                })?;
                if !column.nullable && default.is_none() {
                    return Err(Error::NotNull(format!(
                        "column \"{}\" of relation \"{name}\" would contain null values: records already in the stream have none; give it a DEFAULT or make it nullable",
                        column.name
                    )));
                }
                out.columns.push(column.clone());
            }
            ColumnChange::SetType { column, sql_type } => {
                let Some(i) = position(&out.columns, column) else {
                    return Err(no_column(column, name));
                };
                let from = out.columns[i].sql_type;
                if from == *sql_type {
                    continue;
                }
                if !from.widens_to(*sql_type) {
                    return Err(Error::DatatypeMismatch(format!(
                        "column \"{column}\" cannot change from {} to {}: old records are read in the new type, so only widening changes are possible (smallint → integer → bigint, real → double precision, more numeric digits)",
                        from.pg_name(),
                        sql_type.pg_name()
                    )));
                }
                if def.partition_key.as_ref() == Some(column) && !from.is_integer() {
                    return Err(Error::DependentObjects(format!(
                        "column \"{column}\" is the partition key of stream \"{name}\": its text form picks the shard, and a new type could send equal keys to other shards"
                    )));
                }
                out.columns[i].sql_type = *sql_type;
            }
            ColumnChange::Drop {
                column, if_exists, ..
            } => {
                let Some(i) = position(&out.columns, column) else {
                    if *if_exists {
                        out.notices.push(format!(
                            "column \"{column}\" of relation \"{name}\" does not exist, skipping"
                        ));
                        continue;
                    }
                    return Err(no_column(column, name));
                };
                for (role, key) in [
                    ("partition key", &def.partition_key),
                    ("event-time column", &def.event_time),
                ] {
                    if key.as_ref() == Some(column) {
                        return Err(Error::DependentObjects(format!(
                            "cannot drop column \"{column}\" of stream \"{name}\": it is the stream's {role}"
                        )));
                    }
                }
                if out.columns.len() == 1 {
                    return Err(Error::FeatureNotSupported(format!(
                        "cannot drop \"{column}\", the last column of stream \"{name}\"; DROP STREAM drops the stream"
                    )));
                }
                out.columns.remove(i);
                out.dropped.push(column.clone());
            }
            ColumnChange::Rename { from, to } => {
                if position(&out.columns, from).is_none() {
                    return Err(no_column(from, name));
                }
                return Err(Error::FeatureNotSupported(format!(
                    "RENAME COLUMN is not supported: records in the log and files already delivered carry the name \"{from}\", and readers match columns by name (DuckDB, Spark, Athena and pyarrow over Parquet), so they would see \"{from}\" and \"{to}\" as two columns; add \"{to}\" (ALTER STREAM {name} ADD COLUMN {to} …), write both for a while, then drop \"{from}\""
                )));
            }
        }
    }
    Ok(out)
}

fn no_column(column: &str, stream: &str) -> Error {
    Error::UndefinedColumn(format!(
        "column \"{column}\" of relation \"{stream}\" does not exist"
    ))
}
