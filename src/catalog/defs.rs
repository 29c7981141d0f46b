//! What the catalog records: the declarations of streams, pipelines,
//! sinks and tables, and a sink's committed files and progress.

use serde::{Deserialize, Serialize};

use crate::types::ColumnDef;

/// A stream as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDef {
    pub name: String,
    /// Unique for the life of the data dir; names the log directory, so a
    /// dropped and re-created stream never sees the old data.
    pub id: u64,
    pub columns: Vec<ColumnDef>,
    pub shards: u32,
    pub partition_key: Option<String>,
    /// Retention as written by the user (humantime), `None` = forever.
    pub retention: Option<String>,
    pub event_time: Option<String>,
    /// Bumped by every schema change.
    pub schema_version: u32,
    pub created_at_ms: i64,
    /// Set for a derived stream: the continuous query that fills it.
    #[serde(default)]
    pub pipeline: Option<PipelineDef>,
    /// JSON ingest: refuse a record with a field that names no column
    /// (`unknown_fields = 'error'`) instead of ignoring the field.
    #[serde(default)]
    pub reject_unknown_fields: bool,
}

impl StreamDef {
    /// A stream of one shard with no key, retention or event time, created
    /// now; the id is assigned by the catalog.
    pub fn new(name: impl Into<String>, columns: Vec<ColumnDef>) -> StreamDef {
        StreamDef {
            name: name.into(),
            id: 0,
            columns,
            shards: 1,
            partition_key: None,
            retention: None,
            event_time: None,
            schema_version: 1,
            created_at_ms: crate::clock::now_ms(),
            pipeline: None,
            reject_unknown_fields: false,
        }
    }
}

/// The continuous query behind a derived stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDef {
    /// The SELECT as the user wrote it.
    pub sql: String,
    /// The one stream it reads.
    pub source: String,
    /// Where reading started per source shard (`start = 'earliest'` gives
    /// the first retained record, `'latest'` the end at creation time).
    pub start_offsets: Vec<u64>,
}

/// How a sink derives time partitions from the event-time column (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimePartition {
    /// No time partition.
    None,
    /// `dt=YYYY-MM-DD`.
    Day,
    /// `dt=YYYY-MM-DD/hour=HH`.
    Hour,
}

/// How time partition values are written, so readers that infer types
/// from directory names (DuckDB, Polars, Spark) agree with sluice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionStyle {
    /// Sinks created before partition types were fixed: `hour=00`…`23`
    /// (DuckDB reads these as text) and `dt` typed text.
    #[default]
    Padded,
    /// `hour=0`…`23` (an integer to every reader) and `dt` typed date.
    Typed,
}

/// A sink as declared: where and how a stream is delivered as Parquet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkDef {
    pub name: String,
    pub id: u64,
    /// The stream it delivers (`sluice.errors` included).
    pub source: String,
    /// As written by the user (`s3://…`, `file:///…` or data-dir relative).
    pub location: String,
    pub compression: String,
    pub time_partition: TimePartition,
    /// The timestamp column time partitions come from.
    pub event_time: Option<String>,
    /// Further Hive partition columns, in path order.
    pub partition_by: Vec<String>,
    pub rollover_interval_ms: u64,
    pub rollover_size_bytes: u64,
    /// Where delivery starts per source shard (before any commit).
    pub start_offsets: Vec<u64>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub sort_by: Vec<String>,
    #[serde(default)]
    pub bloom_filter_columns: Vec<String>,
    #[serde(default)]
    pub compaction: Option<CompactionDef>,
    /// Absent in the catalog entries of older sinks, which keep theirs.
    #[serde(default)]
    pub partition_style: PartitionStyle,
    /// Plain Parquet files, or a Delta table over them.
    #[serde(default)]
    pub format: SinkFormat,
    /// How long compacted-away files stay on storage (`file_retention`);
    /// `None`: the server's grace period, or 7 days for a Delta sink.
    #[serde(default)]
    pub file_retention_ms: Option<u64>,
    /// HTTP and PostgreSQL sinks: batching and retries.
    #[serde(default)]
    pub endpoint: Option<EndpointDef>,
    /// PostgreSQL sinks: the target table and where its password is.
    #[serde(default)]
    pub postgres: Option<PostgresDef>,
}

/// What a sink's location holds besides its Parquet files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// Hive directories of Parquet files (the Firehose layout).
    #[default]
    Parquet,
    /// The same files, committed to a Delta log (`_delta_log/`).
    Delta,
    /// POSTs to an HTTP endpoint in Firehose's HTTP endpoint protocol 1.0.
    Firehose,
    /// POSTs of newline-delimited JSON to an HTTP endpoint.
    Ndjson,
    /// Binary COPY into a PostgreSQL table, offsets in the same transaction.
    #[serde(rename = "postgresql")]
    Postgres,
}

impl SinkFormat {
    pub fn name(self) -> &'static str {
        match self {
            SinkFormat::Parquet => "parquet",
            SinkFormat::Delta => "delta",
            SinkFormat::Firehose => "firehose",
            SinkFormat::Ndjson => "ndjson",
            SinkFormat::Postgres => "postgresql",
        }
    }

    /// Whether records go to an HTTP endpoint rather than into files.
    pub fn is_http(self) -> bool {
        matches!(self, SinkFormat::Firehose | SinkFormat::Ndjson)
    }

    /// Whether the sink writes files (Parquet, Delta) at its location.
    pub fn writes_files(self) -> bool {
        matches!(self, SinkFormat::Parquet | SinkFormat::Delta)
    }
}

/// Where a PostgreSQL sink writes (`location = 'postgresql://…'`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresDef {
    /// The target table as written (`clicks`, `analytics.clicks`).
    pub table: String,
    /// The password is read from this environment variable …
    pub password_env: Option<String>,
    /// … or from the first line of this file, when the connection needs it.
    pub password_file: Option<String>,
    /// The location's `sslrootcert`, made absolute (absent: the system's
    /// roots when `sslmode` asks for TLS).
    #[serde(default)]
    pub root_cert: Option<String>,
}

/// How an HTTP sink batches and retries (`format = 'firehose' | 'ndjson'`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDef {
    /// A batch is sent at this many records …
    pub batch_rows: u32,
    /// … or this many bytes of records …
    pub batch_bytes: u64,
    /// … or when its oldest record waited this long.
    pub batch_interval_ms: u64,
    /// Gzip the request body (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// How long one batch is retried before its records go to
    /// `sluice.errors` (stage `delivery`) and delivery moves on.
    pub retry_duration_ms: u64,
    /// How long one request may take.
    pub request_timeout_ms: u64,
    /// Sent as `X-Amz-Firehose-Access-Key` (Firehose protocol).
    pub access_key: Option<String>,
}

/// When and how a sink merges a partition's small files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionDef {
    pub target_size_bytes: u64,
    pub min_files: u32,
}

/// One committed file of a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkFile {
    /// Object path inside the sink's store (no scheme, no bucket).
    pub path: String,
    pub shard: u32,
    /// Source sequence numbers of its first and last record.
    pub first_offset: u64,
    pub last_offset: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Hive partition values in the table's partition-column order; `None`
    /// for `__HIVE_DEFAULT_PARTITION__`.
    pub partition_values: Vec<Option<String>>,
    pub committed_at_ms: i64,
    /// Delta sinks: the add action's `stats` JSON (values per column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

/// How far a sink's shard task has delivered. Every source record below
/// `next` is in a committed file (or in `sluice.errors`); a record at or
/// after `next` of the partition directory `d` is delivered too when its
/// offset is below `through[d]` (a partition that rolled while others
/// stayed open). Replay starts at `next` and skips those.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkProgress {
    pub next: u64,
    #[serde(default)]
    pub through: std::collections::BTreeMap<String, u64>,
}

impl SinkProgress {
    /// Whether the record at `offset` of partition `dir` is delivered.
    pub fn delivered(&self, dir: &str, offset: u64) -> bool {
        offset < self.next || self.through.get(dir).is_some_and(|t| offset < *t)
    }
}

/// A table over files: `CREATE EXTERNAL TABLE` or `CREATE TABLE … AS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub id: u64,
    /// The `CREATE EXTERNAL TABLE` that (re)creates it at every start.
    pub sql: String,
    /// Set when sluice wrote the data (CTAS) and owns it: DROP TABLE
    /// removes this directory. External data is never deleted.
    pub managed_dir: Option<String>,
    pub created_at_ms: i64,
}

/// What a role may do; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RoleGroup {
    /// SELECT, SHOW, COPY … TO STDOUT.
    Reader,
    /// Also INSERT and COPY … FROM STDIN.
    Writer,
    /// Also DDL (streams, sinks, tables, roles) and FLUSH SINK.
    Admin,
}

impl RoleGroup {
    /// The group role's name, as `CREATE ROLE … IN ROLE` names it.
    pub fn name(self) -> &'static str {
        match self {
            RoleGroup::Reader => "sluice_reader",
            RoleGroup::Writer => "sluice_writer",
            RoleGroup::Admin => "sluice_admin",
        }
    }

    pub fn from_name(name: &str) -> Option<RoleGroup> {
        [RoleGroup::Reader, RoleGroup::Writer, RoleGroup::Admin]
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }
}

/// A login role: its group and salted SCRAM-SHA-256 verifier (never the
/// password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDef {
    pub name: String,
    pub group: RoleGroup,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
    pub created_at_ms: i64,
}

/// One version of a stream's schema (`sluice.schemas`): version 1 is the
/// CREATE, each `ALTER STREAM` adds the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub stream: String,
    pub version: u32,
    pub columns: Vec<ColumnDef>,
    pub created_at_ms: i64,
    /// The statement that made this version.
    pub statement: String,
}

impl SchemaVersion {
    /// Version 1 of a stream: its columns at CREATE, with the statement
    /// rebuilt from them.
    pub fn first(def: &StreamDef) -> SchemaVersion {
        let statement = match &def.pipeline {
            Some(p) => format!("CREATE STREAM {} AS {}", quote_name(&def.name), p.sql),
            None => format!(
                "CREATE STREAM {} ({})",
                quote_name(&def.name),
                def.columns
                    .iter()
                    .map(|c| format!(
                        "{} {}{}",
                        quote_name(&c.name),
                        c.sql_type.pg_name(),
                        if c.nullable { "" } else { " NOT NULL" }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        SchemaVersion {
            stream: def.name.clone(),
            version: 1,
            columns: def.columns.clone(),
            created_at_ms: def.created_at_ms,
            statement,
        }
    }
}

/// An identifier as SQL would need it written.
fn quote_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
