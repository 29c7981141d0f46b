//! The integration tests: one binary, the real server, real clients.

mod auth;
mod client_credentials;
mod compaction;
mod compat;
mod connections;
mod copy;
mod crash;
mod crash_loop;
mod delta;
mod faults;
mod harness;
mod hive_readers;
mod http;
mod http_auth;
mod kinesis;
mod layers;
mod lifecycle;
mod pipelines;
mod protocol;
mod psql;
mod queries;
mod reach;
mod s3;
mod sink_crash;
mod sinks;
mod tls;
