//! The manifest of a base backup: what was stored, where, and how to check it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shardvault_storage::{Compression, StorageError};

use super::layout::{
    self, FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION, Lsn, SNAPSHOT_FORMAT_VERSION,
};
use super::{EngineError, Repo};

/// Everything known about one stored base backup (`basebackups/<name>/manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Layout and manifest format version ([`FORMAT_VERSION`], or
    /// [`INCREMENTAL_FORMAT_VERSION`] for an incremental).
    pub format: u32,
    /// Backup name, also its directory under `basebackups/`.
    pub name: String,
    /// WAL location of the backup's checkpoint (`pg_backup_start`).
    pub start_lsn: Lsn,
    /// WAL location where the backup becomes consistent (`pg_backup_stop`).
    pub end_lsn: Lsn,
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// First WAL segment restore needs.
    pub start_wal_file: String,
    /// Last WAL segment needed to reach consistency.
    pub end_wal_file: String,
    /// Bytes per WAL segment of the cluster.
    pub wal_segment_size: u64,
    /// `pg_control_system().system_identifier`, as text (it does not fit JSON numbers).
    pub system_identifier: String,
    /// `server_version`, e.g. `15.8`.
    pub postgres_version: String,
    /// `server_version_num`, e.g. `150008`.
    pub postgres_version_num: u32,
    /// Whether the backup was taken from a standby.
    pub from_replica: bool,
    /// Columns of `pg_control_system()` and `pg_control_checkpoint()` after backup start.
    pub control_data: serde_json::Map<String, serde_json::Value>,
    /// Compression the parts were written with.
    pub compression: Compression,
    /// Sizes of the stored backup.
    pub size: Sizes,
    /// When the backup started.
    pub start_time: jiff::Timestamp,
    /// When the backup (including its WAL) was complete.
    pub end_time: jiff::Timestamp,
    /// Host the backup was taken on.
    pub hostname: String,
    /// Data directory the backup was taken from.
    pub pgdata: PathBuf,
    /// Number of parts (`parts/000000` ..); parts no chunk refers to are not stored.
    pub parts: u32,
    /// Stored bytes of each of this backup's own parts (0 for one not stored).
    #[serde(default)]
    pub part_bytes: Vec<u64>,
    /// Full, or incremental over `parent`.
    #[serde(default)]
    pub backup_type: BackupType,
    /// The backup this one is incremental over (the last link of `chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The backups whose parts this one refers to, the full backup first, the parent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainLink>,
    /// The volume snapshot holding the data of a snapshot backup (whose `files` are empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
    /// Whether `tablespace_map` was stored beside `backup_label`.
    pub has_tablespace_map: bool,
    /// Tablespaces, stored under `pg_tblspc/<oid>/`.
    pub tablespaces: Vec<Tablespace>,
    /// Every directory, parents first.
    pub directories: Vec<DirEntry>,
    /// Every stored file.
    pub files: Vec<FileEntry>,
}

/// Whether a backup holds every block or only those changed since its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file whole.
    #[default]
    Full,
    /// Changed blocks and small files; the rest read from the chain.
    Incremental,
    /// A volume snapshot of the data directory; storage holds its label and manifest.
    Snapshot,
}

/// Where the data of a snapshot backup is: a snapshot on the source's own disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// The snapshot class (driver) that took it, e.g. `btrfs`.
    pub class: String,
    /// The snapshot's name in that driver.
    pub name: String,
    /// Where it is kept (the host and directory), on the same disk as the source's data.
    pub location: String,
}

impl std::fmt::Display for BackupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
            BackupType::Snapshot => "snapshot",
        })
    }
}

/// A backup of the chain an incremental refers to, anchored by its manifest's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainLink {
    /// Backup name.
    pub name: String,
    /// SHA-256 (hex) of its stored manifest when this backup was taken.
    pub manifest_sha256: String,
}

/// Compressed (stored) and uncompressed (file data) bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    /// Bytes of all stored objects of the backup itself.
    pub compressed: u64,
    /// Bytes of file data (what a restore writes).
    pub uncompressed: u64,
    /// Bytes of stored parts a restore reads: this backup's and the chain's it refers to
    /// (0 in manifests written before incrementals: then `compressed`).
    #[serde(default)]
    pub restore: u64,
}

/// A tablespace: its OID (name under `pg_tblspc`) and where it lived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tablespace {
    /// OID, the link name in `pg_tblspc`.
    pub oid: String,
    /// Directory the link pointed to on the source.
    pub location: PathBuf,
}

/// A directory of the data directory (relative path) and its mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirEntry {
    /// Path relative to the data directory.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
}

/// A stored file and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Path relative to the data directory (tablespaces under `pg_tblspc/<oid>/`).
    pub path: String,
    /// Bytes stored.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// CRC-32C of the stored bytes.
    pub crc32c: u32,
    /// Last modification when listed, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    /// The file's bytes in order.
    pub chunks: Vec<Chunk>,
}

/// A run of a file's bytes inside one part: a stored chunk, or the window `skip..skip+take`
/// of one (an incremental refers to the parts of older backups of its chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// Index in the manifest's `chain` of the backup whose part holds the bytes; this
    /// backup when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<u32>,
    /// Part number.
    pub part: u32,
    /// Offset of the stored chunk's data in the decoded part.
    pub at: u64,
    /// Offset in the file of the stored chunk's first byte.
    pub offset: u64,
    /// Length of the stored chunk in bytes.
    pub len: u64,
    /// CRC-32C of the stored chunk's bytes.
    pub crc32c: u32,
    /// Bytes of the stored chunk before the window this file entry uses.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
    /// Bytes of the window; the rest of the stored chunk when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Chunk {
    /// The file range this chunk restores: its window's first byte and length.
    pub fn window(&self) -> (u64, u64) {
        let skip = self.skip.min(self.len);
        (
            self.offset + skip,
            self.take.unwrap_or(self.len - skip).min(self.len - skip),
        )
    }

    /// This chunk narrowed to the file range `start..end` (inside its window).
    pub(crate) fn narrowed(&self, start: u64, end: u64) -> Chunk {
        Chunk {
            skip: start - self.offset,
            take: Some(end - start),
            ..*self
        }
    }
}

/// The facts about a backup a user or a controller shows (the manifest without file lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// Backup name.
    pub name: String,
    /// WAL location of the backup's checkpoint.
    pub start_lsn: Lsn,
    /// WAL location where the backup is consistent.
    pub end_lsn: Lsn,
    /// Timeline it was taken on.
    pub timeline: u32,
    /// First WAL segment restore needs.
    pub start_wal_file: String,
    /// Last WAL segment needed for consistency.
    pub end_wal_file: String,
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// `server_version` of the source.
    pub postgres_version: String,
    /// Whether it was taken from a standby.
    pub from_replica: bool,
    /// Compression of its parts.
    pub compression: Compression,
    /// Stored and file-data bytes.
    pub size: Sizes,
    /// When it started.
    pub start_time: jiff::Timestamp,
    /// When it was complete.
    pub end_time: jiff::Timestamp,
    /// Host it was taken on.
    pub hostname: String,
    /// Data directory it was taken from.
    pub pgdata: PathBuf,
    /// Number of files.
    pub files: usize,
    /// Number of parts.
    pub parts: u32,
    /// Full or incremental.
    #[serde(default)]
    pub backup_type: BackupType,
    /// The backup this one is incremental over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Names of the backups a restore of this one also reads, the full backup first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// SHA-256 (hex) of the manifest as stored, the anchor a verify or restore compares.
    #[serde(default)]
    pub manifest_sha256: String,
}

impl Manifest {
    /// Total bytes of file data, as restore writes them.
    pub fn data_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes of stored parts a restore reads.
    pub fn restore_bytes(&self) -> u64 {
        if self.size.restore == 0 {
            self.size.compressed
        } else {
            self.size.restore
        }
    }

    /// SHA-256 (hex) of the manifest's stored JSON.
    pub fn sha256(&self) -> String {
        digest(&encode(self))
    }

    /// The manifest without its file lists.
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            name: self.name.clone(),
            start_lsn: self.start_lsn,
            end_lsn: self.end_lsn,
            timeline: self.timeline,
            start_wal_file: self.start_wal_file.clone(),
            end_wal_file: self.end_wal_file.clone(),
            system_identifier: self.system_identifier.clone(),
            postgres_version: self.postgres_version.clone(),
            from_replica: self.from_replica,
            compression: self.compression,
            size: Sizes {
                restore: self.restore_bytes(),
                ..self.size
            },
            start_time: self.start_time,
            end_time: self.end_time,
            hostname: self.hostname.clone(),
            pgdata: self.pgdata.clone(),
            files: self.files.len(),
            parts: self.parts,
            backup_type: self.backup_type,
            parent: self.parent.clone(),
            chain: self.chain.iter().map(|l| l.name.clone()).collect(),
            manifest_sha256: self.sha256(),
        }
    }
}

/// The CRC-32C of a file entry: its chunks' stored bytes combined in order (the file's own
/// CRC-32C in a full backup).
pub(crate) fn combined_crc(chunks: &[Chunk]) -> u32 {
    let mut chunks = chunks.iter();
    let Some(first) = chunks.next() else {
        return 0;
    };
    chunks.fold(first.crc32c, |crc, c| {
        crc32c::crc32c_combine(crc, c.crc32c, c.len as usize)
    })
}

/// Reads the manifest of backup `name`.
pub async fn load_manifest(repo: &Repo, name: &str) -> Result<Manifest, EngineError> {
    Ok(load_anchored(repo, name, None).await?.0)
}

/// Reads the manifest of backup `name` and the SHA-256 of its stored JSON; with `anchor`
/// (the digest recorded when the backup completed), a manifest that differs from it, even a
/// well-formed one, is refused by name.
pub async fn load_anchored(
    repo: &Repo,
    name: &str,
    anchor: Option<&str>,
) -> Result<(Manifest, String), EngineError> {
    let key = layout::manifest_key(name);
    let bytes = match repo.get(&key).await {
        Ok(b) => b,
        Err(EngineError::Storage(StorageError::NotFound { .. })) => {
            return Err(EngineError::BackupNotFound {
                name: name.to_string(),
                location: repo.store.describe(),
            });
        }
        Err(e) => return Err(e),
    };
    let sha256 = digest(&bytes);
    if let Some(want) = anchor.filter(|a| !a.is_empty())
        && want != sha256
    {
        return Err(EngineError::Corrupt {
            object: key,
            reason: format!(
                "its SHA-256 is {sha256}, the backup recorded {want} when it completed: the manifest was changed or replaced"
            ),
        });
    }
    Ok((parse(&key, &bytes)?, sha256))
}

/// The manifest's stored JSON.
fn encode(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(manifest).expect("manifest serializes")
}

/// SHA-256 of `bytes`, in hex.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn parse(key: &str, bytes: &[u8]) -> Result<Manifest, EngineError> {
    let bad = |reason: String| EngineError::BadManifest {
        key: key.to_string(),
        reason,
    };
    let head: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    match head.get("format").and_then(|f| f.as_u64()) {
        Some(f)
            if [
                FORMAT_VERSION,
                INCREMENTAL_FORMAT_VERSION,
                SNAPSHOT_FORMAT_VERSION,
            ]
            .contains(&(f as u32)) => {}
        other => {
            return Err(bad(format!(
                "format {other:?} is not supported (this shardvault reads formats {FORMAT_VERSION} to {SNAPSHOT_FORMAT_VERSION}): use the shardvault version that wrote it"
            )));
        }
    }
    serde_json::from_value(head).map_err(|e| bad(e.to_string()))
}

/// The manifests of every complete backup in `store`, oldest first.
pub async fn list_backups(repo: &Repo) -> Result<Vec<Manifest>, EngineError> {
    let keys = repo.store.list(layout::BACKUPS_DIR).await?;
    let mut out = Vec::new();
    for key in keys {
        let Some(name) = key
            .strip_prefix(&format!("{}/", layout::BACKUPS_DIR))
            .and_then(|k| k.strip_suffix("/manifest.json"))
        else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        out.push(parse(&key, &repo.get(&key).await?)?);
    }
    out.sort_by_key(|m| m.start_time);
    Ok(out)
}

/// Writes the manifest (the step that makes the backup exist).
pub(crate) async fn store_manifest(repo: &Repo, manifest: &Manifest) -> Result<(), EngineError> {
    repo.put(&layout::manifest_key(&manifest.name), encode(manifest))
        .await?;
    Ok(())
}
