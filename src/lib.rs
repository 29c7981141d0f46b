//! sluice: a SQL-first streaming ingestion and query engine.
//!
//! Producers write records into **streams** (durable, sharded logs) over the
//! Postgres wire protocol or HTTP; the same connection queries them with
//! SQL. The modules form layers, and imports run one way, from the fronts
//! down (ARCHITECTURE.md has the "may import" table; `tests/it/layers.rs`
//! enforces it):
//!
//! - fronts: [`server`] (start/stop of everything, bound addresses,
//!   signals), [`pgwire`] (Postgres protocol, simple and extended, COPY,
//!   SQLSTATE responses; a connection's `Session`, statements run one
//!   function per kind; SCRAM logins, roles' privileges, TLS; cancel,
//!   statement timeouts and connection bounds) and [`http`] (records, the
//!   Kinesis API, `/health`, `/metrics`; SigV4/Bearer keys, HTTPS;
//!   connection and request bounds).
//! - owner: [`engine`]: opening the data directory, DDL and lifecycle of
//!   streams, pipelines, sinks and tables, retention, close.
//! - services:
//!   - [`query`]: what SQL can name ([`query::Registry`]), the DataFusion
//!     catalog over streams, sinks (their committed files), tables over
//!     files and `sluice.*` system relations; one session per connection.
//!   - [`ingest`]: the one write path ([`ingest::Writer`]) and the decoders
//!     of its input (literal `INSERT … VALUES`, COPY, JSON) into Arrow
//!     batches, with errors naming column and value.
//!   - [`cq`]: continuous queries: a derived stream's pipeline, compiled to
//!     physical expressions, run per micro-batch, exactly once via progress
//!     recorded in the output frames.
//!   - [`sink`]: delivery of a stream, exactly once: as Hive-partitioned
//!     Parquet files (files and offsets committed in one catalog
//!     transaction; for Delta sinks the Delta log that follows the
//!     catalog), to HTTP endpoints (Firehose, NDJSON) or into a PostgreSQL
//!     table. What every kind shares is in `sink::core`.
//! - runtime: [`runtime`]: open streams and their lookup by name, the one
//!   way to read a stream ([`runtime::Stream::read`]), `sluice.errors`
//!   (the dead letters of every stage), and what pipelines and sinks share
//!   as consumers of a stream.
//! - storage: [`log`] (per-stream shard logs of checksummed segment files,
//!   group commit, bulk appends, recovery, retention, followers),
//!   [`catalog`] (what exists and what consumers committed, in redb,
//!   reopened after an I/O error) and [`storage`] (object stores: local
//!   directories, S3; where SQL may reach).
//! - base: [`sql`] (the front parser: splits statements, parses sluice's
//!   own statements and every INSERT's target and literals, passes the
//!   rest on), [`types`] (column types and their
//!   Arrow encoding), [`config`] (flags > `SLUICE_*` env > TOML >
//!   defaults), [`tls`] (certificates of both fronts, reloaded on
//!   SIGHUP), [`error`] (the one error type, mapped once per protocol),
//!   [`clock`] and [`fail`] (`SLUICE_FAIL_POINT`: crash points and
//!   injected I/O errors).
//!
//! Start reading at [`server::start`], then [`pgwire`] and [`log`].

pub mod catalog;
pub mod clock;
pub mod config;
pub mod cq;
pub mod engine;
pub mod error;
pub mod fail;
pub mod http;
pub mod ingest;
pub mod log;
pub mod pgwire;
pub mod query;
pub mod runtime;
pub mod server;
pub mod sink;
pub mod sql;
pub mod storage;
pub mod tls;
pub mod types;
