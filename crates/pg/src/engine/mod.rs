//! The node engine: physical base backups, WAL archiving, restore and verification of one
//! PostgreSQL cluster, against any [`shardvault_storage::Destination`].
//!
//! The storage layout is described in `README.md` beside this file.

pub mod archive_check;
pub mod backup;
pub mod chain;
mod datadir;
pub mod layout;
pub mod manifest;
mod part;
pub mod prune;
pub mod restore;
pub mod segment_identity;
pub mod snapshot;
pub mod verify;
pub mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use shardvault_storage::{Codec, Destination, StorageError, Store};

pub use backup::{BackupOptions, backup};
pub use chain::ParentChoice;
pub use manifest::{BackupSummary, BackupType, Manifest, list_backups, load_manifest};
pub use restore::{RecoveryTarget, RestoreOptions, restore, restore_snapshot_clone};
pub use verify::{VerifyReport, verify};

/// A destination opened for node work: its store and its codec.
#[derive(Clone)]
pub struct Repo {
    /// The destination's objects, under its prefix.
    pub store: Store,
    /// How objects are encoded (decoding reads each object's own header).
    pub codec: Codec,
}

impl Repo {
    /// Opens `dest`'s store and codec.
    pub fn open(dest: &Destination) -> Result<Repo, EngineError> {
        Ok(Repo {
            store: dest.store()?,
            codec: dest.codec()?,
        })
    }

    /// Reads and decodes object `key` (its checksum checked).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, EngineError> {
        let object = self.store.get(key).await?;
        let codec = self.codec.clone();
        let key = key.to_string();
        Ok(blocking(move || codec.decode(&key, &object)).await?)
    }

    /// Encodes `data` and writes it as object `key`; returns the stored size.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<u64, EngineError> {
        let codec = self.codec.clone();
        let object = blocking(move || codec.encode(&data)).await;
        let len = object.len() as u64;
        self.store.put(key, object).await?;
        Ok(len)
    }
}

/// Reports progress of a long operation: bytes done and bytes in total.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What can go wrong in node work.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Object storage failed or a stored object is corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A SQL statement against the server failed.
    #[error(
        "PostgreSQL {what}: {cause}; check that the server is running and the node config's host/port/user are right"
    )]
    Postgres {
        what: String,
        cause: tokio_postgres::Error,
    },
    /// A local file or directory could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The WAL a backup needs did not reach the archive in time.
    #[error(
        "WAL segment {segment} was not archived within {secs} s: check archive_command / pg_stat_archiver{}",
        standby_hint(.standby)
    )]
    NotArchived {
        segment: String,
        secs: u64,
        /// The backup was taken from a standby (the primary archives the segment).
        standby: bool,
    },
    /// A backup with this name already has a manifest.
    #[error("backup {name} already exists in {location}: choose another --name")]
    BackupExists { name: String, location: String },
    /// No manifest for the named backup.
    #[error(
        "backup {name} not found in {location} (no basebackups/{name}/manifest.json): list backups with `shardvault backups ls`"
    )]
    BackupNotFound { name: String, location: String },
    /// A backup of an incremental's chain is missing.
    #[error(
        "backup {} is incremental and needs backup {}, which is not in {}: restore an older full backup, or take a new full one",
        .0.backup, .0.missing, .0.location
    )]
    ChainBroken(Box<MissingLink>),
    /// The backup asked for as the parent cannot be one.
    #[error(
        "backup {parent} cannot be the parent of this incremental: {reason}; take a full backup"
    )]
    ParentUnusable { parent: String, reason: String },
    /// A manifest cannot be parsed or has an unsupported format.
    #[error("manifest {key}: {reason}")]
    BadManifest { key: String, reason: String },
    /// Stored data does not match the checksum the manifest recorded.
    #[error(
        "object {object} is corrupt: {reason}; the stored backup cannot be trusted, take a new backup"
    )]
    Corrupt { object: String, reason: String },
    /// The restore target directory already holds something.
    #[error("{path} is not empty: restore only into an empty or missing directory")]
    NotEmpty { path: PathBuf },
    /// The same WAL file name is already archived with different content.
    #[error(
        "WAL file {name} is already archived in {location} with different content: two clusters may be archiving to the same path; fix the backup path before archiving continues"
    )]
    WalConflict { name: String, location: String },
    /// The requested WAL file is not in the archive.
    #[error("WAL file {name} not found in {location}")]
    WalNotFound { name: String, location: String },
    /// A WAL segment between a backup's start and end is missing from the archive.
    #[error("WAL segment {segment} needed by backup {backup} is missing from {location}")]
    WalMissing {
        segment: String,
        backup: String,
        location: String,
    },
    /// The node config or options cannot be used.
    #[error("{0}")]
    Config(String),
    /// Something PostgreSQL returned could not be understood.
    #[error("unexpected answer from PostgreSQL: {0}")]
    Protocol(String),
}

/// The backup of an incremental's chain that is not there.
#[derive(Debug)]
pub struct MissingLink {
    /// The incremental.
    pub backup: String,
    /// The chain member missing.
    pub missing: String,
    /// Where it was looked for.
    pub location: String,
}

/// What to add to a [`EngineError::NotArchived`] of a backup taken from a standby.
fn standby_hint(standby: &bool) -> &'static str {
    if *standby {
        " on the primary; the backup was taken from a standby, so the primary archives that \
         segment once it is full: run SELECT pg_switch_wal() there or set its archive_timeout"
    } else {
        ""
    }
}

impl EngineError {
    /// An [`EngineError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.into();
        move |source| EngineError::Io {
            path,
            cause: source,
        }
    }

    /// An [`EngineError::Postgres`] for the statement described by `what`.
    pub(crate) fn pg(what: &str) -> impl FnOnce(tokio_postgres::Error) -> EngineError + '_ {
        move |source| EngineError::Postgres {
            what: what.to_string(),
            cause: source,
        }
    }
}

/// Runs blocking work (file I/O, compression) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_segment_says_where_to_look() {
        let e = |standby| EngineError::NotArchived {
            segment: "000000010000000000000007".into(),
            secs: 30,
            standby,
        };
        let primary = e(false).to_string();
        assert_eq!(
            primary,
            "WAL segment 000000010000000000000007 was not archived within 30 s: check archive_command / pg_stat_archiver"
        );
        assert!(e(true).to_string().contains("pg_switch_wal() there"));
    }
}
