//! The one seam between controllers and whatever runs the servers: a sharded cluster is
//! reconciled, destroyed and observed by namespace and name, and node work (a `shardvault
//! node` command against one member) is run by the runtime, so no controller knows where
//! a runtime keeps its state.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

use futures::future::BoxFuture;

use super::cluster::{ClusterObserved, InstanceObserved, MemberPlan, Sharding};
use super::error::RuntimeError;
use super::restore_board::RestoreProgress;
use crate::config::NodeConfig;
use crate::node_events::ProgressSink;

/// A sharded cluster by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId {
    /// The cluster's namespace.
    pub namespace: String,
    /// The cluster's name.
    pub name: String,
}

impl ClusterId {
    /// The cluster `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ClusterId {
        ClusterId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a sharded cluster should look like, whatever runs it.
#[derive(Debug, Clone)]
pub struct DesiredCluster {
    /// Which cluster.
    pub id: ClusterId,
    /// `spec.postgres.version` (a major, or major.minor).
    pub postgres_version: String,
    /// The database created on every member.
    pub database: String,
    /// How tables are distributed.
    pub sharding: Sharding,
    /// Member clusters, coordinator first.
    pub members: Vec<MemberPlan>,
}

/// One member as node work sees it: its node config (primary's endpoint and destinations)
/// and its instances, primary first.
#[derive(Debug, Clone)]
pub struct MemberEndpoint {
    /// Member name.
    pub name: String,
    /// The member's node config: how to reach its primary, where its WAL and backups go.
    pub node_config: NodeConfig,
    /// Instances, primary first, as last observed.
    pub instances: Vec<InstanceObserved>,
}

/// The members of a running cluster.
#[derive(Debug, Clone)]
pub struct ClusterEndpoints {
    /// The database on every member.
    pub database: String,
    /// Coordinator first.
    pub members: Vec<MemberEndpoint>,
}

/// One `shardvault node` command run for a job (a backup, a restore point) on one member.
#[derive(Debug, Clone)]
pub struct NodeWork {
    /// The cluster the member belongs to.
    pub cluster: ClusterId,
    /// The job the work is for (e.g. the SGShardedBackup's name); its work files are kept
    /// apart from other jobs'.
    pub job: String,
    /// The member the work runs against.
    pub member: String,
    /// The node config the command reads (`--config`); it carries secrets and never
    /// outlives the command.
    pub config: NodeConfig,
    /// The arguments after `shardvault node`, subcommand first (e.g. `backup --name b1
    /// --json`); `--config FILE` goes right after the subcommand.
    pub args: Vec<OsString>,
}

/// A read-only snapshot of one member's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSnapshot {
    /// The snapshot class (driver) that took it, e.g. `btrfs`.
    pub class: String,
    /// Its name (unique in the cluster's namespace).
    pub name: String,
    /// Where it is kept, on the same disk as the member's data.
    pub location: String,
}

/// Runs sharded clusters and their node work: local processes here, Kubernetes later.
pub trait ClusterRuntime: Send + Sync + fmt::Debug + 'static {
    /// Refuses a `spec.postgres.version` this runtime cannot run, with what is available.
    fn check_version(&self, version: &str) -> Result<(), RuntimeError>;

    /// Refuses volume snapshots of `class` (the runtime's default when None) where this
    /// runtime keeps data, saying what to do instead.
    fn check_volume_snapshots(&self, class: Option<&str>) -> Result<(), RuntimeError>;

    /// Takes read-only snapshot `name` of the data directory of `member`'s primary (taken
    /// while the server runs: call it between `pg_backup_start` and `pg_backup_stop`).
    fn snapshot_member(
        &self,
        id: &ClusterId,
        member: &str,
        class: Option<&str>,
        name: &str,
    ) -> Result<VolumeSnapshot, RuntimeError>;

    /// Deletes snapshot `name` of `namespace`; false when there is none.
    fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<bool, RuntimeError>;

    /// Creates, starts, adopts and wires what `desired` describes; idempotent.
    fn reconcile(
        &self,
        desired: DesiredCluster,
    ) -> BoxFuture<'static, Result<ClusterObserved, RuntimeError>>;

    /// Stops and removes every server of a cluster (nothing to do when it does not exist).
    fn destroy(&self, id: &ClusterId) -> BoxFuture<'static, Result<(), RuntimeError>>;

    /// What the last reconcile of a cluster saw; an error when it does not run here.
    fn observed(&self, id: &ClusterId) -> Result<ClusterObserved, RuntimeError>;

    /// The members of a running cluster with their node configs.
    fn endpoints(&self, id: &ClusterId) -> Result<ClusterEndpoints, RuntimeError>;

    /// Where the members of a cluster being restored are (none when nothing is restored).
    fn restore_progress(&self, id: &ClusterId) -> BTreeMap<String, RestoreProgress>;

    /// Runs one node command as the server user and returns its standard output, handing its
    /// progress to `progress`; a failure carries what the command said last.
    fn run_node(
        &self,
        work: NodeWork,
        progress: Option<ProgressSink>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RuntimeError>>;
}
