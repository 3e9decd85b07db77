//! The one error type of the storage layer.

use thiserror::Error;

/// What can go wrong talking to object storage or decoding an object.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key} not found in {location}")]
    NotFound { key: String, location: String },
    /// The object exists but its bytes are not what was written.
    #[error(
        "object {key} is corrupt: {reason}; the stored copy cannot be trusted, take a new backup"
    )]
    Corrupt { key: String, reason: String },
    /// The object is encrypted and the key given cannot decrypt it (or no key was given).
    #[error("object {key}: wrong encryption key: {reason}")]
    WrongKey { key: String, reason: String },
    /// The storage configuration is unusable.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The credentials were refused by the storage.
    #[error("access denied by {location}: check {hint}")]
    AccessDenied {
        location: String,
        hint: &'static str,
    },
    /// The bucket named in the configuration does not exist.
    #[error(
        "bucket {bucket} does not exist at endpoint {endpoint}: create it or fix the SGObjectStorage bucket"
    )]
    BucketMissing { bucket: String, endpoint: String },
    /// Any other failure of the backend (after retries, for transient ones).
    #[error("storage {op} {key} failed: {source}")]
    Backend {
        op: &'static str,
        key: String,
        #[source]
        source: Box<opendal::Error>,
    },
}
