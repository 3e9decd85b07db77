//! The one error type of the storage layer.

use thiserror::Error;

/// What can go wrong talking to object storage or decoding an object.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key} not found in {location}")]
    NotFound {
        /// Full key of the object.
        key: String,
        /// The storage looked in.
        location: String,
    },
    /// The object exists but its bytes are not what was written.
    #[error(
        "object {key} is corrupt: {reason}; the stored copy cannot be trusted, take a new backup"
    )]
    Corrupt {
        /// Full key (or name) of the object.
        key: String,
        /// What check failed.
        reason: String,
    },
    /// The object is encrypted and the key given cannot decrypt it (or no key was given).
    #[error("object {key}: wrong encryption key: {reason}")]
    WrongKey {
        /// Full key (or name) of the object.
        key: String,
        /// Why it cannot be opened, and what to do.
        reason: String,
    },
    /// The storage configuration is unusable.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The credentials were refused by the storage.
    #[error("access denied by {location}: check {hint}")]
    AccessDenied {
        /// The storage that refused.
        location: String,
        /// The setting to check.
        hint: &'static str,
    },
    /// The bucket named in the configuration does not exist.
    #[error(
        "bucket {bucket} does not exist at endpoint {endpoint}: create it or fix the SGObjectStorage bucket"
    )]
    BucketMissing {
        /// The bucket configured.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
    },
    /// The key cannot be used safely (a `..` component, or a link in a filesystem storage).
    #[error("object {key} refused: {reason}")]
    Refused {
        /// Full key of the object.
        key: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A filesystem storage failed (the cause is part of the message, not a source, so that
    /// a printed chain says it once).
    #[error("storage {op} {key} failed: {cause}")]
    Filesystem {
        /// The operation: put, get, stat, list, delete or check.
        op: &'static str,
        /// Full key (or directory) it was applied to.
        key: String,
        /// The filesystem's error.
        cause: std::io::Error,
    },
    /// Any other failure of the backend (after retries, for transient ones).
    #[error("storage {op} {key} failed: {}", backend_cause(.cause))]
    Backend {
        /// The operation: put, get, stat, list, delete or check.
        op: &'static str,
        /// Full key (or directory) it was applied to.
        key: String,
        /// The backend's error.
        cause: Box<opendal::Error>,
    },
}

/// A backend error in one sentence: its kind, message and causes, each said once (opendal's
/// own Display dumps its context in braces and repeats its source).
pub(crate) fn backend_cause(err: &opendal::Error) -> String {
    let mut text = err.kind().to_string();
    if !err.message().is_empty() {
        text = format!("{text}: {}", err.message());
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    text
}
