//! The integration tests: one binary, the real server, real clients.

mod crash;
mod harness;
mod lifecycle;
mod protocol;
mod psql;
mod slt;
