//! Node engine (backup, WAL, restore, verify) and local PostgreSQL runtime for shardvault.

pub mod child_log;
pub mod config;
pub mod engine;
pub mod fingerprint;
pub mod runtime;
pub mod sql_error;
pub mod statefile;
pub mod user;
