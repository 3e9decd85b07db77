//! The controllers the daemon runs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backup_controller::ShardedBackupController;
use crate::cluster_controller::ClusterController;
use crate::framework::Reconciler;

/// Every controller `shardvault serve` runs; node work runs from `shardvault_bin`.
pub fn controllers(shardvault_bin: PathBuf) -> Vec<Arc<dyn Reconciler>> {
    vec![
        Arc::new(ClusterController::new(shardvault_bin.clone(), Vec::new())),
        Arc::new(ShardedBackupController::new(shardvault_bin)),
    ]
}
