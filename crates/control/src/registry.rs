//! The controllers the daemon runs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backup_controller::ShardedBackupController;
use crate::context::Context;
use crate::framework::Reconciler;
use crate::runner::Running;

/// The controllers on kube-runtime, as kube::Client of the API `ctx.client` talks to.
pub fn kube_controllers(ctx: &Arc<Context>) -> Vec<Running> {
    vec![
        crate::cluster_controller::controller(ctx.clone()),
        crate::schedule::controller(ctx.clone()),
        crate::restore_points::controller(ctx.clone()),
        crate::retention::controller(ctx.clone()),
    ]
}

/// The controllers still on the framework runner (the store-backed `Ctx`); node work runs
/// from `shardvault_bin`.
pub fn controllers(shardvault_bin: PathBuf) -> Vec<Arc<dyn Reconciler>> {
    vec![Arc::new(ShardedBackupController::new(shardvault_bin))]
}
