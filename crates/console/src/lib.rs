//! The daemon's read-only web console: sharded clusters, their backups on a timeline, the
//! growth of backup size and WAL over time, restore points and WAL archiving per member.

mod assets;
pub mod auth;
pub mod server;
pub mod view;

pub use server::router;
