//! The controllers the daemon runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backup_controller::ShardedBackupController;
use crate::context::Context;
use crate::framework::Reconciler;
use crate::restore_points::RestorePointScheduler;
use crate::retention::RetentionController;
use crate::runner::Running;
use crate::schedule::Scheduler;

/// The controllers on kube-runtime, as kube::Client of the API `ctx.client` talks to.
pub fn kube_controllers(ctx: &Arc<Context>) -> Vec<Running> {
    vec![crate::cluster_controller::controller(ctx.clone())]
}

/// The controllers still on the framework runner (the store-backed `Ctx`); node work runs
/// from `shardvault_bin`.
pub fn controllers(shardvault_bin: PathBuf) -> Vec<Arc<dyn Reconciler>> {
    let clock = crate::clock::from_env();
    vec![
        Arc::new(ShardedBackupController::new(shardvault_bin)),
        Arc::new(Scheduler::new(clock.clone())),
        Arc::new(RestorePointScheduler::new(clock.clone())),
        Arc::new(RetentionController::new(
            clock.poll().min(Duration::from_secs(30)),
        )),
    ]
}
