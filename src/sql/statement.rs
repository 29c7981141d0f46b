//! The statements the parser produces, as the session routes them: sluice
//! statements (streams, sinks, roles, COPY…), literal INSERTs for the
//! fast path, and everything else passed on to DataFusion as text.

use std::time::Duration;

use super::alter::AlterStream;
use super::copy::CopyStatement;
use super::role::RoleStatement;
use super::session::Savepoint;
use super::sink::{CreateSink, CreateTableAs};
use crate::types::ColumnDef;

/// A statement as routed.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    CreateStream(CreateStream),
    /// `CREATE STREAM name AS SELECT …`: a derived stream and its pipeline.
    CreateDerived(CreateDerived),
    DropStream(DropStream),
    /// `ALTER STREAM …` (also written `ALTER TABLE …` on a stream).
    AlterStream(AlterStream),
    /// `SHOW STREAMS`, answered by a query over `sluice.streams`.
    ShowStreams,
    /// `SHOW PIPELINES`, answered by a query over `sluice.pipelines`.
    ShowPipelines,
    /// `COPY … FROM STDIN` / `COPY … TO STDOUT`.
    Copy(CopyStatement),
    /// `EXPLAIN CREATE STREAM … AS SELECT …`: the SELECT's plan.
    ExplainCreateDerived(CreateDerived),
    CreateSink(Box<CreateSink>),
    DropSink(DropStream),
    /// `FLUSH SINK name`: deliver what is acknowledged now, wait for the commit.
    FlushSink(String),
    /// `SHOW SINKS`, answered by a query over `sluice.sinks`.
    ShowSinks,
    /// `CREATE EXTERNAL TABLE …` as written (DataFusion's grammar, Hive
    /// clause order accepted); kept in the catalog.
    CreateExternalTable(String),
    CreateTableAs(CreateTableAs),
    DropTable(DropStream),
    /// `INSERT INTO t [(cols)] VALUES` of literals only: stored without
    /// the query engine when `t` is a stream; `text` (as for [`Parsed::Sql`])
    /// goes to the query engine when it is not.
    InsertValues {
        insert: InsertValues,
        text: String,
    },
    /// `CREATE ROLE`, `ALTER ROLE … PASSWORD`, `DROP ROLE`.
    Role(RoleStatement),
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: accepted markers.
    Savepoint(Savepoint),
    /// Anything else: DataFusion SQL, passed on as written.
    Sql(String),
}

/// A validated `CREATE STREAM`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStream {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub shards: u32,
    pub partition_key: Option<String>,
    pub retention: Option<(String, Duration)>,
    pub event_time: Option<String>,
    /// `unknown_fields = 'error'`: JSON records with extra fields fail.
    pub reject_unknown_fields: bool,
}

/// A validated `CREATE STREAM … AS SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateDerived {
    pub name: String,
    pub if_not_exists: bool,
    /// The SELECT, as text DataFusion plans.
    pub select: String,
    /// Start from the first retained record (`true`) or the end.
    pub from_earliest: bool,
    /// Output shards (default: the source's).
    pub shards: Option<u32>,
    /// An output column routing rows to shards (default: a row stays on
    /// its source shard's number).
    pub partition_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DropStream {
    pub names: Vec<String>,
    pub if_exists: bool,
    pub cascade: bool,
}

/// `INSERT INTO table [(columns)] VALUES (literal, …), …`: the target and
/// each row's literal text (`None` is SQL NULL), not yet converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertValues {
    pub table: String,
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl InsertValues {
    /// The bytes of literal text the statement carries: a bound on the
    /// batch it becomes, known before any row is materialised.
    pub fn literal_bytes(&self) -> u64 {
        self.rows
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(1, |s| s.len() as u64 + 1))
            .sum()
    }
}
