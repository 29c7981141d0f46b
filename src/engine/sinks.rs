//! Sink DDL: `CREATE SINK` (validated up front: options, columns, and a
//! writable location), `DROP SINK`, `FLUSH SINK`, and starting every sink
//! at server start.

use std::sync::Arc;

use super::{DdlOutcome, Engine};
use crate::catalog::{
    CompactionDef, PartitionStyle, PostgresDef, SinkDef, SinkFormat, TimePartition,
};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::query::Relation;
use crate::runtime::{Stream, ERRORS_STREAM};
use crate::sink::delta::DeltaLog;
use crate::sink::{Layout, Sink, SinkLimits};
use crate::sql::{CreateSink, DropStream};
use crate::storage::Location;
use crate::types::SqlType;

impl Engine {
    fn sink_limits(&self) -> SinkLimits {
        let l = &self.config.limits;
        SinkLimits {
            max_open_files: l.sink_max_open_files,
            max_buffered_bytes: l.sink_max_buffered_bytes,
            upload_part_size_bytes: l.upload_part_size_bytes as usize,
            compaction_grace: std::time::Duration::from_millis(l.compaction_grace_ms),
        }
    }

    /// Where a sink's files go; an HTTP or PostgreSQL sink has none (its
    /// URL is checked).
    pub(super) fn sink_location(&self, def: &SinkDef) -> Result<Location> {
        if def.format == SinkFormat::Postgres {
            return Location::detached();
        }
        if def.format.is_http() {
            let url = url::Url::parse(&def.location).map_err(|e| {
                Error::InvalidParameter(format!("location '{}': {e}", def.location))
            })?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(Error::InvalidParameter(format!(
                    "location '{}' names no host",
                    def.location
                )));
            }
            return Location::detached();
        }
        Location::resolve(&def.location, &self.config.data_dir, &self.stores)
    }

    pub(super) fn sink_source(&self, name: &str) -> Result<Arc<Stream>> {
        if name == ERRORS_STREAM {
            return self.registry.streams.require_errors();
        }
        match self.registry.relation(name) {
            Some(Relation::Stream(s)) => Ok(s),
            Some(_) => Err(Error::WrongObjectType(format!(
                "\"{name}\" is not a stream; a sink delivers a stream"
            ))),
            None => Err(Error::UndefinedTable(name.to_string())),
        }
    }

    pub async fn create_sink(&self, create: CreateSink) -> Result<DdlOutcome> {
        let _guard = self.ddl_lock.lock().await;
        if let Some(skipped) = self.name_taken(&create.name, create.if_not_exists)? {
            return Ok(skipped);
        }
        let source = self.sink_source(&create.source)?;
        let o = create.options;
        // The event time: named, else the stream's, else its only timestamp.
        let event_time =
            o.event_time
                .clone()
                .or_else(|| source.def.event_time.clone())
                .or_else(|| {
                    let mut times = source.def.columns.iter().filter(|c| {
                        matches!(c.sql_type, SqlType::Timestamp | SqlType::TimestampTz)
                    });
                    match (times.next(), times.next()) {
                        (Some(only), None) => Some(only.name.clone()),
                        _ => None,
                    }
                });
        let time_partition = match (o.time_partition, &event_time) {
            // Records to an endpoint or a database are not partitioned
            // into directories.
            _ if !o.format.writes_files() => TimePartition::None,
            (Some(t), _) => t,
            (None, Some(_)) => TimePartition::Hour,
            (None, None) => TimePartition::None,
        };
        let def = SinkDef {
            name: create.name,
            id: 0,
            source: source.def.name.clone(),
            location: o.location.clone(),
            compression: o.compression,
            time_partition,
            event_time: (time_partition != TimePartition::None)
                .then_some(event_time)
                .flatten(),
            partition_by: o.partition_by,
            rollover_interval_ms: o.rollover_interval.as_millis() as u64,
            rollover_size_bytes: o.rollover_size_bytes,
            start_offsets: source.start_offsets(o.from_earliest),
            created_at_ms: now_ms(),
            sort_by: o.sort_by,
            bloom_filter_columns: o.bloom_filter_columns,
            compaction: (o.compaction.unwrap_or(o.format == SinkFormat::Delta)
                && o.format.writes_files())
            .then_some(CompactionDef {
                target_size_bytes: o.compaction_target_size_bytes,
                min_files: o.compaction_min_files,
            }),
            partition_style: PartitionStyle::Typed,
            format: o.format,
            file_retention_ms: o.file_retention.map(|d| d.as_millis() as u64),
            endpoint: (!o.format.writes_files()).then_some(o.endpoint),
            postgres: (o.format == SinkFormat::Postgres)
                .then(|| self.postgres_def(o.postgres, &o.location))
                .transpose()?,
        };
        let layout = Layout::new(&def, &source.schema)?;
        let location = self.sink_location(&def)?;
        if def.format.writes_files() {
            location.check_writable().await?;
        }
        if def.format == SinkFormat::Postgres {
            crate::sink::postgres::prepare(&def, &source.schema, o.validate).await?;
        } else if o.validate && def.format.is_http() {
            reach_endpoint(&def.location).await?;
        }
        if def.format == SinkFormat::Delta {
            // Creates the table now, so a location holding another table
            // fails the statement rather than the delivery.
            DeltaLog::new(&location, 0)?
                .open(&def, &layout, false)
                .await?;
        }
        let def = self.catalog.create_sink(def)?;
        match self.start_sink(def.clone(), source, location).await {
            Ok(()) => Ok(DdlOutcome::Done),
            Err(e) => {
                let _ = self.catalog.drop_sink(&def.name);
                Err(e)
            }
        }
    }

    /// A PostgreSQL sink's settings with its password file confined like
    /// any path a statement names, and made absolute.
    fn postgres_def(&self, mut def: PostgresDef, location: &str) -> Result<PostgresDef> {
        let confine = |path: &str| -> Result<String> {
            self.stores
                .policy()
                .check_secret(path, &self.config.data_dir)?;
            let path = std::path::Path::new(path.strip_prefix("file://").unwrap_or(path));
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                self.config.data_dir.join(path)
            };
            Ok(absolute.to_string_lossy().into_owned())
        };
        if let Some(path) = &def.password_file {
            def.password_file = Some(confine(path)?);
        }
        let url = url::Url::parse(location)
            .map_err(|e| Error::InvalidParameter(format!("location '{location}': {e}")))?;
        if let Some((_, path)) = url.query_pairs().find(|(k, _)| k == "sslrootcert") {
            def.root_cert = Some(confine(&path)?);
        }
        Ok(def)
    }

    pub(super) async fn start_sink(
        &self,
        def: SinkDef,
        source: Arc<Stream>,
        location: Location,
    ) -> Result<()> {
        let errors = self.registry.streams.require_errors()?;
        let sink = Sink::start(
            def,
            source,
            location,
            self.catalog.clone(),
            errors,
            self.sink_limits(),
        )
        .await?;
        self.registry.insert_sink(sink);
        Ok(())
    }

    /// Starts every sink in the catalog (at server start). A sink whose
    /// location cannot be reached now is logged and skipped, not fatal:
    /// its source keeps the records until it runs again.
    pub async fn start_sinks(&self) -> Result<()> {
        for def in self.catalog.sinks()? {
            let name = def.name.clone();
            let started = async {
                let source = self.sink_source(&def.source)?;
                let location = self.sink_location(&def)?;
                self.start_sink(def, source, location).await
            };
            if let Err(e) = started.await {
                tracing::error!(sink = %name, error = %e, "sink did not start; its source keeps the records");
            }
        }
        Ok(())
    }

    pub async fn drop_sink(&self, drop: DropStream) -> Result<Vec<DdlOutcome>> {
        let _guard = self.ddl_lock.lock().await;
        let mut doomed = Vec::new();
        let mut outcomes = Vec::new();
        for name in &drop.names {
            match self.registry.relation(name) {
                Some(Relation::Sink(sink)) => {
                    doomed.push(sink);
                    outcomes.push(DdlOutcome::Done);
                }
                Some(_) => return Err(wrong_kind(name, "sink")),
                None if drop.if_exists => outcomes.push(DdlOutcome::Skipped(format!(
                    "sink \"{name}\" does not exist, skipping"
                ))),
                None => return Err(Error::UndefinedTable(name.clone())),
            }
        }
        for sink in doomed {
            self.drop_sink_now(&sink).await?;
        }
        Ok(outcomes)
    }

    /// Stops a sink and forgets it; its delivered files stay on storage.
    pub(super) async fn drop_sink_now(&self, sink: &Arc<Sink>) -> Result<()> {
        sink.stop().await;
        self.catalog.drop_sink(sink.name())?;
        self.registry.remove_sink(sink.name());
        Ok(())
    }

    pub async fn flush_sink(&self, name: &str) -> Result<()> {
        match self.registry.relation(name) {
            Some(Relation::Sink(sink)) => sink.flush().await,
            Some(_) => Err(wrong_kind(name, "sink")),
            None => Err(Error::UndefinedTable(name.to_string())),
        }
    }
}

/// `validate = true` for an HTTP sink: its host must accept a TCP
/// connection now (08001 otherwise).
async fn reach_endpoint(location: &str) -> Result<()> {
    let url = url::Url::parse(location)
        .map_err(|e| Error::InvalidParameter(format!("location '{location}': {e}")))?;
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::ConnectionFailure(format!(
            "could not connect to {location}: {e}"
        ))),
        Err(_) => Err(Error::ConnectionFailure(format!(
            "could not connect to {location}: timed out after 10 s"
        ))),
    }
}

/// 42809 for a statement aimed at the wrong kind of relation.
pub(super) fn wrong_kind(name: &str, expected: &str) -> Error {
    Error::WrongObjectType(format!("\"{name}\" is not a {expected}"))
}
