//! Controllers and sharded backup/restore orchestration for shardvault.

pub mod admission;
pub mod archive;
pub mod backup_controller;
pub mod clock;
pub mod cluster_controller;
pub mod context;
pub mod cut;
pub mod destination;
pub mod events;
pub mod import;
pub mod incremental;
pub mod lookup;
pub mod metrics;
pub mod records;
pub mod registry;
pub mod resources;
pub mod restore_check;
pub mod restore_points;
pub mod restore_progress;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod sharded_backup;
pub mod snapshot_backup;
pub mod status;
pub mod verify;
