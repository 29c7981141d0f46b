pub mod catalog;
pub mod config;
pub mod error;
pub mod log;
pub mod sql;
pub mod types;
