//! The controllers the daemon runs.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::framework::Reconciler;
use crate::restore_points::RestorePointScheduler;
use crate::retention::RetentionController;
use crate::runner::Running;
use crate::schedule::Scheduler;

/// The controllers on kube-runtime, as kube::Client of the API `ctx.client` talks to.
pub fn kube_controllers(ctx: &Arc<Context>) -> Vec<Running> {
    vec![
        crate::cluster_controller::controller(ctx.clone()),
        crate::backup_controller::controller(ctx.clone()),
    ]
}

/// The controllers still on the framework runner (the store-backed `Ctx`).
pub fn controllers() -> Vec<Arc<dyn Reconciler>> {
    let clock = crate::clock::from_env();
    vec![
        Arc::new(Scheduler::new(clock.clone())),
        Arc::new(RestorePointScheduler::new(clock.clone())),
        Arc::new(RetentionController::new(
            clock.poll().min(Duration::from_secs(30)),
        )),
    ]
}
