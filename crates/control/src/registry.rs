//! The controllers the daemon runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backup_controller::ShardedBackupController;
use crate::cluster_controller::ClusterController;
use crate::framework::Reconciler;
use crate::restore_points::RestorePointScheduler;
use crate::retention::RetentionController;
use crate::schedule::Scheduler;

/// Every controller `shardvault serve` runs; node work runs from `shardvault_bin`.
pub fn controllers(shardvault_bin: PathBuf) -> Vec<Arc<dyn Reconciler>> {
    let clock = crate::clock::from_env();
    vec![
        Arc::new(ClusterController::new(shardvault_bin.clone(), Vec::new())),
        Arc::new(ShardedBackupController::new(shardvault_bin)),
        Arc::new(Scheduler::new(clock.clone())),
        Arc::new(RestorePointScheduler::new(clock.clone())),
        Arc::new(RetentionController::new(
            clock.poll().min(Duration::from_secs(30)),
        )),
    ]
}
