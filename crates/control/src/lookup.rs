//! What controllers look up through the Kubernetes API before they act: the Secrets of a
//! namespace and the SGObjectStorages a cluster's `backups[]` entries name, resolved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use shardvault_api::objectstorage::{ObjectStorageSpec, SGObjectStorage};
use shardvault_api::shardedcluster::ShardedClusterSpec;

use crate::destination::{ResolvedStorage, resolve_storage};
use crate::resources::{Secrets, prepare_for_server};

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API could not be read.
    #[error("reading the API: {0}")]
    Api(#[from] kube::Error),
    /// A referenced SGObjectStorage does not exist.
    #[error("{field}: SGObjectStorage {name:?} not found in namespace {namespace}: apply it first")]
    MissingStorage {
        /// The field holding the reference.
        field: String,
        /// The storage's name.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// A referenced SGObjectStorage cannot be used (a Secret or key missing, ...).
    #[error("SGObjectStorage {name}: {message}")]
    InvalidStorage {
        /// The storage's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A filesystem storage directory cannot be prepared.
    #[error("{0}")]
    Storage(String),
}

impl LookupError {
    /// The Event reason of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            LookupError::Api(_) => "ApiError",
            LookupError::MissingStorage { .. } => "MissingReference",
            LookupError::InvalidStorage { .. } => "InvalidReference",
            LookupError::Storage(_) => "StorageError",
        }
    }
}

/// Decodes a Secret's `data` (and `stringData`, when a server keeps it) into key -> value.
fn decode(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect();
    out.extend(secret.string_data.clone().unwrap_or_default());
    out
}

/// Reads every Secret of `namespace`, decoded.
pub async fn secrets(client: &Client, namespace: &str) -> Result<Secrets, LookupError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    Ok(Secrets::from_map(
        list.items
            .iter()
            .map(|s| (s.name_any(), decode(s)))
            .collect(),
    ))
}

/// Reads and resolves SGObjectStorage `name` in `namespace`; `field` names the reference.
pub async fn storage(
    client: &Client,
    secrets: &Secrets,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<(ObjectStorageSpec, ResolvedStorage), LookupError> {
    let api: Api<SGObjectStorage> = Api::namespaced(client.clone(), namespace);
    let obj = api
        .get_opt(name)
        .await?
        .ok_or_else(|| LookupError::MissingStorage {
            field: field.into(),
            name: name.into(),
            namespace: namespace.into(),
        })?;
    let resolved =
        resolve_storage(&obj.spec, secrets).map_err(|e| LookupError::InvalidStorage {
            name: name.into(),
            message: e.to_string(),
        })?;
    prepare_for_server(&resolved.config, "").map_err(|e| LookupError::Storage(e.to_string()))?;
    Ok((obj.spec, resolved))
}

/// Resolves every backups[] entry of a cluster: its storage spec and resolved storage.
pub async fn cluster_storages(
    client: &Client,
    namespace: &str,
    spec: &ShardedClusterSpec,
) -> Result<Vec<(ObjectStorageSpec, ResolvedStorage)>, LookupError> {
    let secrets = secrets(client, namespace).await?;
    let mut out = Vec::new();
    for (i, entry) in spec.backups().iter().enumerate() {
        let field = format!("spec.configurations.backups[{i}].sgObjectStorage");
        out.push(
            storage(
                client,
                &secrets,
                namespace,
                &entry.sg_object_storage,
                &field,
            )
            .await?,
        );
    }
    Ok(out)
}
