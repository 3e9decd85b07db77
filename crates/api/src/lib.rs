//! StackGres-compatible resource types and their validation. No I/O.

pub mod backup;
pub mod kind;
pub mod meta;
pub mod objectstorage;
pub mod quantity;
pub mod secret;
pub mod shardedbackup;
pub mod shardedcluster;
pub mod storage_path;
pub mod validate;

pub use kind::Kind;
pub use meta::{ObjectMeta, OwnerReference};
pub use validate::{FieldError, ValidationError, validate, validate_update};
