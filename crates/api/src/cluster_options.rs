//! Cluster-wide parts of an SGShardedCluster spec besides its members: Postgres
//! extensions and TLS, credentials, binding, resource metadata, replication from another
//! cluster, distributed logs and non-production options.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::member::RestorePerformance;
use crate::meta::SecretKeySelector;

/// One entry of `postgres.extensions[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresExtension {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// `postgres.ssl`: TLS of the Postgres endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ssl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret_key_selector: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret_key_selector: Option<SecretKeySelector>,
}

/// `configurations.observability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observability {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_metrics: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_autobind: Option<bool>,
}

/// `configurations.credentials`: passwords of Patroni and the Postgres users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<OptionalUsers>,
}

/// `credentials.patroni`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatroniCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_api_password: Option<SecretKeySelector>,
}

/// The Postgres users StackGres manages, each optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionalUsers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser: Option<OptionalUserSecrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<OptionalUserSecrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<OptionalUserSecrets>,
}

/// A user's name and password from Secrets, each optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionalUserSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeySelector>,
}

/// `configurations.binding`: the Service Binding of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeySelector>,
}

/// `spec.metadata`: annotations and labels per generated resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ClusterResourceMaps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<ClusterResourceMaps>,
}

/// Key/value maps per kind of resource generated for the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterResourceMaps {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_any_service: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_primary_service: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_primaries_service: Option<BTreeMap<String, String>>,
}

/// `spec.replicateFrom`: run as a standby of another cluster or of backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicateFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<ReplicateFromInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ReplicateFromStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<ReplicationUsers>,
}

/// `replicateFrom.instance`: another sharded cluster, or external hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicateFromInstance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_sharded_cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalHosts>,
}

/// Hosts and ports of an external primary, coordinator first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalHosts {
    pub hosts: Vec<String>,
    pub ports: Vec<i64>,
}

/// `replicateFrom.storage`: replay from backups in an SGObjectStorage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicateFromStorage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<RestorePerformance>,
    pub sg_object_storage: String,
    pub paths: Vec<String>,
}

/// The users a standby connects as, each from Secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationUsers {
    pub superuser: UserSecrets,
    pub replication: UserSecrets,
    pub authenticator: UserSecrets,
}

/// A user's name and password from Secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSecrets {
    pub username: SecretKeySelector,
    pub password: SecretKeySelector,
}

/// `spec.distributedLogs`: where Postgres and Patroni logs are shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistributedLogs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_distributed_logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

/// `spec.nonProductionOptions`: switches for test and development clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NonProductionOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_cluster_pod_anti_affinity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_patroni_resource_requirements: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_cluster_resource_requirements: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_set_patroni_cpu_requests: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_set_cluster_cpu_requests: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_set_patroni_memory_requests: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_set_cluster_memory_requests: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_feature_gates: Option<Vec<String>>,
}
