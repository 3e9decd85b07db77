//! `pods` of a coordinator or shards: volumes, probes, resources, scheduling and the custom
//! containers, volumes and environment StackGres adds to each Pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, NodeAffinity, PodAffinity, PodAntiAffinity,
    ResourceRequirements, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pod settings of a member; the local runtime acts only on `persistentVolume.size`.
pub type Pods = PodsOf<PersistentVolume>;

/// Pod settings of a shard override: a member's, with `persistentVolume` optional.
pub type OverridePods = PodsOf<Option<PersistentVolume>>;

/// Pod settings with the volume required (`V` is [`PersistentVolume`]) or optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsOf<V: Absent> {
    #[serde(skip_serializing_if = "Absent::is_absent")]
    pub persistent_volume: V,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_connection_pooling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_metrics_exporter: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_postgres_util: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_envoy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<PodScheduling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_init_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_volume_mounts: Option<BTreeMap<String, Vec<VolumeMount>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_init_volume_mounts: Option<BTreeMap<String, Vec<VolumeMount>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_env: Option<BTreeMap<String, Vec<EnvVar>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_init_env: Option<BTreeMap<String, Vec<EnvVar>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_env_from: Option<BTreeMap<String, Vec<EnvFromSource>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_init_env_from: Option<BTreeMap<String, Vec<EnvFromSource>>>,
}

/// A field a manifest may leave out.
pub trait Absent {
    /// Whether the field is left out.
    fn is_absent(&self) -> bool;
}

impl Absent for PersistentVolume {
    fn is_absent(&self) -> bool {
        false
    }
}

impl Absent for Option<PersistentVolume> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// `pods.persistentVolume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolume {
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group_change_policy: Option<String>,
}

/// The timing of the readiness or liveness probe of the Patroni container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeTiming {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// `pods.resources`: requirements per container name, and how totals are split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<BTreeMap<String, ResourceRequirements>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<BTreeMap<String, ResourceRequirements>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_cluster_limits_requirements: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_resources_requests_split_from_total: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_when_total_is_higher: Option<bool>,
}

/// `pods.scheduling`: where the member's Pods may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodScheduling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAntiAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupScheduling>,
}

/// `pods.scheduling.backup`: where backup Pods may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupScheduling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAntiAffinity>,
}

/// `pods.updateStrategy`: when and how Pods are restarted after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<UpdateWindow>>,
}

/// One window of `updateStrategy.schedule[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}
