//! The controllers the daemon runs.

use std::sync::Arc;

use crate::framework::Reconciler;

/// Every controller `shardvault serve` runs (none until the reconcilers are registered here).
pub fn controllers() -> Vec<Arc<dyn Reconciler>> {
    Vec::new()
}
