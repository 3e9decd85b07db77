//! The local cluster runtime: real PostgreSQL servers on this host, run as the server user.
//! See `README.md` beside this file for the layout on disk and the ddp SQL API.

pub mod archiver;
pub mod cluster;
pub mod error;
pub mod instance;
pub mod isolation;
pub mod local;
pub mod pgbin;
pub mod restore_board;
pub mod seam;
pub mod snapshot;
pub mod wiring;

pub use cluster::{
    Bootstrap, ClusterObserved, ClusterPlan, MemberPlan, RecoveryTarget, Sharding, destroy,
    reconcile,
};
pub use error::RuntimeError;
pub use local::LocalRuntime;
pub use pgbin::find_pg_bin;
pub use restore_board::{RestoreBoard, RestoreProgress};
pub use seam::{
    ClusterEndpoints, ClusterId, ClusterRuntime, DesiredCluster, MemberEndpoint, NodeWork,
    VolumeSnapshot,
};
