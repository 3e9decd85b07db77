//! SGShardedCluster: a coordinator plus N shard clusters.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster_options::{
    Binding, ClusterMetadata, Credentials, DistributedLogs, NonProductionOptions, Observability,
    PostgresExtension, ReplicateFrom, Ssl,
};
use crate::member::{
    Autoscaling, ManagedSql, MemberConfigurations, MemberMetadata, PostgresExporter, Replication,
    ShardOverride,
};
pub use crate::pods::{PersistentVolume, Pods};
use crate::quantity::Timeout;
use crate::services::PostgresServices;

/// `spec` of an SGShardedCluster.
// Clippy reads the repeated `printcolumn(name, type_, priority)` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "stackgres.io",
    version = "v1alpha1",
    kind = "SGShardedCluster",
    plural = "sgshardedclusters",
    shortname = "sgscl",
    namespaced,
    status = "ShardedClusterStatus",
    derive = "PartialEq",
    doc = "A sharded cluster: a coordinator plus N shard clusters.",
    printcolumn(name = "TYPE", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "SHARDS",
        type_ = "integer",
        json_path = ".spec.shards.clusters"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "VERSION",
        type_ = "string",
        json_path = ".spec.postgres.version",
        priority = 1
    ),
    printcolumn(
        name = "DATABASE",
        type_ = "string",
        json_path = ".spec.database",
        priority = 1
    ),
    printcolumn(
        name = "COORDINATORS",
        type_ = "integer",
        json_path = ".spec.coordinator.instances",
        priority = 1
    ),
    printcolumn(
        name = "INSTANCES/SHARD",
        type_ = "integer",
        json_path = ".spec.shards.instancesPerCluster",
        priority = 1
    ),
    printcolumn(
        name = "BACKUPS",
        type_ = "string",
        json_path = ".spec.configurations.backups[*].sgObjectStorage",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardedClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ShardingType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Postgres>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Coordinator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Shards>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<Configurations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_data: Option<InitialData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_services: Option<PostgresServices>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ClusterMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate_from: Option<ReplicateFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed_logs: Option<DistributedLogs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_production_options: Option<NonProductionOptions>,
}

/// How data is distributed over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShardingType {
    /// The Citus extension.
    Citus,
    /// Plain PostgreSQL with postgres_fdw (distributed partitioning).
    Ddp,
}

/// `spec.postgres`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Postgres {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<PostgresExtension>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl: Option<Ssl>,
}

/// `spec.coordinator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Coordinator {
    pub instances: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Pods>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_sql: Option<ManagedSql>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<MemberConfigurations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MemberMetadata>,
}

/// `spec.shards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shards {
    pub clusters: i64,
    pub instances_per_cluster: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Pods>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_sql: Option<ManagedSql>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<MemberConfigurations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MemberMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<ShardOverride>>,
}

/// `spec.configurations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Configurations {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_exporter: Option<PostgresExporter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// One entry of `spec.configurations.backups[]`: a destination with its schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupConfiguration {
    pub sg_object_storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<BackupPerformance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_volume_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_volume_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_wals_for_unmanaged_lifecycle: Option<bool>,
    /// Our extension: the entry's backups are incremental over the newest one, with a full
    /// backup again when the policy says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalPolicy>,
}

/// `backups[].incremental` (our extension): when a backup of the entry starts a new chain
/// with a full backup instead of storing only the blocks changed since the newest one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncrementalPolicy {
    /// A full backup after this many backups in a chain, the full one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_every: Option<i64>,
    /// A full backup once the chain's incrementals together stored more than this
    /// percentage of its full backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chain_size_percent: Option<i64>,
}

/// `backups[].performance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupPerformance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_network_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_disk_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_concurrency: Option<i64>,
}

/// `spec.initialData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitialData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
}

/// `spec.initialData.restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restore {
    pub from_backup: FromBackup,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_disk_concurrency: Option<i64>,
}

/// `spec.initialData.restore.fromBackup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromBackup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_inclusive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time_recovery: Option<PointInTimeRecovery>,
}

/// `fromBackup.pointInTimeRecovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PointInTimeRecovery {
    pub restore_to_timestamp: String,
    /// Our extension: recover every member to the newest cluster-wide restore point at or
    /// before the timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
}

/// Default `retention` of a backups[] entry.
pub const DEFAULT_RETENTION: i64 = 5;

impl ShardedClusterSpec {
    /// The sharding type (citus when unset, as StackGres).
    pub fn sharding_type(&self) -> ShardingType {
        self.type_.unwrap_or(ShardingType::Citus)
    }

    /// Names of the member clusters, coordinator first.
    pub fn member_names(&self, cluster: &str) -> Vec<String> {
        let shards = self.shards.as_ref().map_or(0, |s| s.clusters.max(0));
        std::iter::once(format!("{cluster}-coord"))
            .chain((0..shards).map(|i| format!("{cluster}-shard{i}")))
            .collect()
    }

    /// The backups[] entries (empty when none are configured).
    pub fn backups(&self) -> &[BackupConfiguration] {
        self.configurations.as_ref().map_or(&[], |c| &c.backups)
    }
}

/// `status` of an SGShardedCluster, written by the cluster controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardedClusterStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// One member cluster and its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// The primary's WAL archiving, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiving: Option<MemberArchiving>,
}

/// How far a member's WAL archive is behind its primary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberArchiving {
    /// The last segment (or history file) archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<String>,
    /// Completed segments not archived yet.
    pub pending_segments: i64,
    /// Their size in bytes.
    pub pending_bytes: i64,
    /// True when the last archive attempt failed.
    pub failing: bool,
}

/// One PostgreSQL server of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub name: String,
    pub role: String,
    pub port: u16,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Progress of the initial restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub from_backup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRestoreStatus>,
}

/// Restore progress of one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberRestoreStatus {
    pub name: String,
    pub sg_backup: String,
    pub phase: RestorePhase,
    /// Why the last attempt failed, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Restore attempts that failed so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// Our extension: how far the restore is, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::RestoreProgress>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where the restore of one member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Being restored (or about to be).
    Restoring,
    /// Restored, recovered and running.
    Completed,
    /// The restore failed; the member is absent (never created empty in its place).
    Failed,
}

impl std::fmt::Display for RestorePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestorePhase::Restoring => "Restoring",
            RestorePhase::Completed => "Completed",
            RestorePhase::Failed => "Failed",
        })
    }
}
