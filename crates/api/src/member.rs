//! What a coordinator, the shards and each shard override share besides `pods`:
//! autoscaling, managed SQL, configurations, replication and resource metadata.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::SecretKeySelector;
use crate::pods::OverridePods;

/// `autoscaling` of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AutoscalingMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allowed: Option<AllowedResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<AllowedResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<HorizontalAutoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalAutoscaling>,
}

/// Which autoscaling applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    Vertical,
    None,
}

/// Resource bounds per container for vertical autoscaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<CpuMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbouncer: Option<CpuMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<CpuMemory>,
}

/// A CPU and memory quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuMemory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// `autoscaling.horizontal`: replicas by connection usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HorizontalAutoscaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_connections_usage_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_connections_usage_metric_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i64>,
}

/// `autoscaling.vertical`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerticalAutoscaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommender: Option<String>,
}

/// `managedSql`: SGScripts run on the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedSql {
    #[serde(
        rename = "continueOnSGScriptError",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub continue_on_sg_script_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<Vec<ManagedScript>>,
}

/// One entry of `managedSql.scripts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedScript {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(rename = "sgScript", default, skip_serializing_if = "Option::is_none")]
    pub sg_script: Option<String>,
}

/// `configurations` of a member: referenced configs and inline settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberConfigurations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_postgres_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_pooling_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_exporter: Option<PostgresExporter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<Patroni>,
    /// Only the coordinator of a ShardingSphere cluster has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding_sphere: Option<ShardingSphere>,
}

/// `configurations.postgres`: postgresql.conf parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<BTreeMap<String, String>>,
}

/// `configurations.pooling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pooling {
    #[serde(rename = "pgBouncer", default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer: Option<PgBouncer>,
}

/// `pooling.pgBouncer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgBouncer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ini: Option<PgBouncerIni>,
}

/// The sections of pgbouncer.ini, each kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgBouncerIni {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub pgbouncer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub databases: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub users: Option<Value>,
}

/// `postgresExporter`: custom queries, kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresExporter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub queries: Option<Value>,
}

/// `configurations.patroni`: Patroni configuration, kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patroni {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub dynamic_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub initial_config: Option<Value>,
}

/// `configurations.shardingSphere` of a ShardingSphere coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardingSphere {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub mode: ShardingSphereMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<ShardingSphereAuthority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
}

/// `shardingSphere.mode`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardingSphereMode {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub properties: Option<Value>,
    pub repository: ShardingSphereRepository,
}

/// `shardingSphere.mode.repository`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardingSphereRepository {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserved_object")]
    pub properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoo_keeper: Option<ServerList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<ServerList>,
}

/// Servers of a ZooKeeper or etcd repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerList {
    pub server_list: Vec<String>,
}

/// `shardingSphere.authority`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardingSphereAuthority {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserPassword>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privilege: Option<ShardingSpherePrivilege>,
}

/// A user and password, each from a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPassword {
    pub user: SecretKeySelector,
    pub password: SecretKeySelector,
}

/// `shardingSphere.authority.privilege`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardingSpherePrivilege {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_database_mappings: Option<String>,
}

/// A ServiceAccount by namespace and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// `replication`: how replicas follow the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ReplicationInitialization>,
}

/// `replication.initialization`: how a new replica gets its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationInitialization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_newer_than: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_restore_performance: Option<RestorePerformance>,
}

/// Bandwidth and concurrency of a download from backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestorePerformance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_network_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_concurrency: Option<i64>,
}

/// `metadata` of a member: annotations and labels per generated resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<MemberResourceMaps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<MemberResourceMaps>,
}

/// Key/value maps per kind of resource generated for a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberResourceMaps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_resources: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_pods: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_service: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_service: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<BTreeMap<String, String>>,
}

/// One entry of `shards.overrides[]`: settings for the shard at `index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardOverride {
    pub index: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_per_cluster: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_sql: Option<ManagedSql>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<OverridePods>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<MemberConfigurations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MemberMetadata>,
}
