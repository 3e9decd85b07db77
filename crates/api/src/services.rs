//! `spec.postgresServices`: the Kubernetes Services in front of the coordinator and shards.

use k8s_openapi::api::core::v1::{ServicePort, SessionAffinityConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.postgresServices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresServices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorServices>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardsServices>,
}

/// The Services of the coordinator: any instance, the primary, and extra ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CoordinatorServices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<PostgresService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PostgresService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_ports: Option<Vec<ServicePort>>,
}

/// The Service of the shards' primaries, and extra ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardsServices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries: Option<PostgresService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_ports: Option<Vec<ServicePort>>,
}

/// One Service: whether it exists, its type and the Service options StackGres passes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
    #[serde(
        rename = "externalIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ports: Option<NodePorts>,
}

/// The kind of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    LoadBalancer,
    NodePort,
    None,
}

/// Fixed node ports of a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePorts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgport: Option<i32>,
}
