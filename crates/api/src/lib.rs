//! StackGres-compatible resource types and their validation. No I/O.

pub mod backup;
pub mod cluster_options;
pub mod crds;
pub mod ignored;
pub mod kind;
pub mod member;
pub mod meta;
pub mod objectstorage;
pub mod pods;
pub mod progress;
pub mod quantity;
pub mod schema;
pub mod secret;
pub mod services;
pub mod shardedbackup;
pub mod shardedcluster;
pub mod storage_path;
pub mod validate;

pub use backup::SGBackup;
pub use crds::crds;
pub use ignored::ignored_fields;
pub use k8s_openapi::api::core::v1::{Event, Secret};
pub use kind::Kind;
pub use meta::{ObjectMeta, OwnerReference};
pub use objectstorage::SGObjectStorage;
pub use shardedbackup::SGShardedBackup;
pub use shardedcluster::SGShardedCluster;
pub use validate::{FieldError, ValidationError, validate, validate_update};
