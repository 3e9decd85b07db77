//! The controllers the daemon runs.

use std::sync::Arc;

use crate::context::Context;
use crate::runner::Running;

/// The controllers on kube-runtime, as kube::Client of the API `ctx.client` talks to.
pub fn kube_controllers(ctx: &Arc<Context>) -> Vec<Running> {
    vec![
        crate::cluster_controller::controller(ctx.clone()),
        crate::backup_controller::controller(ctx.clone()),
        crate::schedule::controller(ctx.clone()),
        crate::restore_points::controller(ctx.clone()),
        crate::retention::controller(ctx.clone()),
    ]
}
