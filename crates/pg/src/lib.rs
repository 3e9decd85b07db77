//! Node engine (backup, WAL, restore, verify) and local PostgreSQL runtime for shardvault.

pub mod config;
pub mod engine;
pub mod fingerprint;
pub mod node_events;
pub mod runtime;
pub mod sql_error;
pub mod statefile;
pub mod user;
