//! sluice: a SQL-first streaming ingestion and query engine.
//!
//! Producers write records into **streams** (durable, sharded logs) over the
//! Postgres wire protocol; the same connection queries them with SQL. The
//! modules follow a record's life:
//!
//! - [`config`]: one typed configuration (flags > `SLUICE_*` env > TOML > defaults).
//! - [`error`]: the one error type, mapped once to SQLSTATE and HTTP status.
//! - [`sql`]: the front parser: splits statements, parses sluice's own
//!   (`CREATE STREAM`, `CREATE SINK`, `FLUSH SINK`, `DROP …`, `SHOW …`,
//!   `CREATE TABLE … AS`), passes the rest on.
//! - [`types`]: the column types a stream declares and their Arrow encoding.
//! - [`ingest`]: records (literal `INSERT … VALUES`, COPY, JSON) to Arrow batches,
//!   with errors naming column and value; skips query planning.
//! - [`catalog`]: what exists and what consumers committed, in redb (ACID).
//! - [`log`]: per-stream shard logs of checksummed segment files, group
//!   commit (one fsync per shard per group), bulk appends written while
//!   they arrive, recovery, retention, followers.
//! - [`consumer`]: what pipelines and sinks share as readers of a stream
//!   (their task set, lag and state).
//! - [`cq`]: continuous queries: a derived stream's pipeline, compiled to
//!   physical expressions, run per micro-batch, exactly once via progress
//!   recorded in the output frames; failed records to `sluice.errors`.
//! - [`storage`]: object stores (local directories, S3) shared by sinks and
//!   the query engine.
//! - [`sink`]: delivery of a stream as Hive-partitioned Parquet, exactly once
//!   (files and offsets committed in one catalog transaction).
//! - [`engine`]: shared state (catalog + open logs + pipelines + sinks +
//!   tables + template session) and DDL.
//! - [`query`]: DataFusion catalog over streams, sinks (their committed
//!   files), tables over files and `sluice.*` system relations; one session
//!   per connection.
//! - [`pgwire`]: Postgres protocol handlers (simple and extended) routing
//!   statements to the engine or DataFusion, errors with SQLSTATEs.
//! - [`http`]: axum routes: records, the Kinesis API, `/health`, `/metrics`.
//! - [`server`]: start/stop of all of the above; bound addresses; signals.
//! - [`fail`]: `SLUICE_FAIL_POINT` crash hooks for the durability tests.
//!
//! Start reading at [`server::start`], then [`pgwire`] and [`log`].

pub mod catalog;
pub mod config;
pub mod consumer;
pub mod cq;
pub mod engine;
pub mod error;
pub mod fail;
pub mod http;
pub mod ingest;
pub mod log;
pub mod pgwire;
pub mod query;
pub mod server;
pub mod sink;
pub mod sql;
pub mod storage;
pub mod types;
