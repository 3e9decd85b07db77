//! The cluster-level records in storage, beside the members' backups: one per sharded
//! backup (so a new installation can list and restore sharded backups from storage alone)
//! and one per scheduled cluster-wide restore point. Keys come from the engine's layout.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shardvault_api::backup::{BackupSize, BackupType};
use shardvault_api::shardedbackup::RestorePoint;
use shardvault_pg::engine::layout;
use shardvault_pg::user::create_dir_all_for_server;
use shardvault_storage::{Codec, Destination, StorageConfig, StorageError, Store};

/// Version of the sharded backup record format.
pub const SHARDED_FORMAT: u32 = 1;

/// Version of the restore point record format.
pub const RESTORE_POINT_FORMAT: u32 = 1;

/// What a sharded backup holds, written beside the members' backups when it completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardedRecord {
    /// Record format version.
    pub format: u32,
    /// SGShardedBackup name.
    pub name: String,
    /// Namespace of the source cluster.
    pub namespace: String,
    /// Source SGShardedCluster name.
    pub cluster: String,
    /// `citus` or `ddp`.
    pub sharding_type: String,
    /// Database the barrier covered.
    pub database: String,
    /// PostgreSQL version of the members.
    pub postgres_version: String,
    /// Whether retention may delete it.
    pub managed_lifecycle: bool,
    /// Members, coordinator first.
    pub members: Vec<MemberRecord>,
    /// The cluster-wide restore point.
    pub restore_point: RestorePoint,
    /// Sums over members.
    pub size: BackupSize,
    /// Full or incremental (absent in records of older versions: full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// The sharded backup the members' incrementals are over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When the backup started (RFC 3339).
    pub start: String,
    /// When the backup ended (RFC 3339).
    pub end: String,
}

/// One member's backup inside a sharded record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    /// Member cluster name.
    pub name: String,
    /// SGBackup name (also the backup's name in storage).
    pub sg_backup: String,
    /// Key prefix of the member's backups and WAL in the storage.
    pub prefix: String,
    /// Start LSN of the base backup.
    pub start_lsn: String,
    /// LSN where the base backup is consistent.
    pub end_lsn: String,
    /// Timeline of the base backup.
    pub timeline: u32,
    /// Sizes of the member's base backup.
    pub size: BackupSize,
    /// SHA-256 of the member's stored manifest (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Full or incremental (absent in records of older versions: full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// The member backup an incremental is over (a restore reads its chain too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A scheduled cluster-wide restore point, as stored beside the sharded backup records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointRecord {
    /// Record format version.
    pub format: u32,
    /// Namespace of the cluster.
    pub namespace: String,
    /// SGShardedCluster name.
    pub cluster: String,
    /// The restore point on every member.
    pub restore_point: RestorePoint,
}

impl RestorePointRecord {
    /// When the restore point was taken (None when its time does not parse).
    pub fn time(&self) -> Option<Timestamp> {
        self.restore_point.time.parse().ok()
    }
}

/// What a search of a storage found: the readable sharded records, with the cluster prefix
/// each was found at (oldest first), and the records that could not be read.
#[derive(Debug, Default)]
pub struct Found {
    /// Readable records and their cluster prefixes.
    pub records: Vec<(String, ShardedRecord)>,
    /// Records that are corrupt or unreadable.
    pub damaged: Vec<Damaged>,
}

/// A record that could not be read.
#[derive(Debug)]
pub struct Damaged {
    /// Sharded backup name, from the record's key.
    pub name: String,
    /// Why (names the key).
    pub error: StorageError,
}

/// The records under one prefix of a storage (a cluster prefix, or the coordinator's for
/// the second copy of the restore point records), with the codec they are written with.
#[derive(Clone)]
pub struct Records {
    store: Store,
    codec: Codec,
    /// The directory of a filesystem storage, under which record directories are made for
    /// the server user (a coordinator prefix is also where its server archives WAL).
    fs_dir: Option<PathBuf>,
}

impl Records {
    /// The records under `dest`'s prefix.
    pub fn open(dest: &Destination) -> Result<Records, StorageError> {
        let fs_dir = match &dest.storage {
            StorageConfig::Filesystem { path } => Some(path.join(dest.prefix.trim_matches('/'))),
            _ => None,
        };
        Ok(Records {
            store: dest.store()?,
            codec: dest.codec()?,
            fs_dir,
        })
    }

    /// Where the records are, for messages (no credentials).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Makes record directory `dir` of a filesystem storage, owned by the server user.
    fn prepare(&self, dir: &str) -> Result<(), StorageError> {
        let Some(top) = &self.fs_dir else {
            return Ok(());
        };
        let path = top.join(dir);
        create_dir_all_for_server(&path).map_err(|cause| StorageError::Filesystem {
            op: "put",
            key: format!(
                "{}: create it, writable by the postgres user",
                path.display()
            ),
            cause,
        })
    }

    async fn read<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<T, StorageError> {
        let bytes = self.codec.decode(key, &self.store.get(key).await?)?;
        serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            key: key.to_string(),
            reason: format!("not a {what} record: {e}"),
        })
    }

    async fn write<T: Serialize>(
        &self,
        dir: &str,
        key: &str,
        record: &T,
    ) -> Result<(), StorageError> {
        self.prepare(dir)?;
        let json = serde_json::to_vec_pretty(record).expect("record serializes");
        self.store.put(key, self.codec.encode(&json)).await
    }

    /// Writes the record of a completed sharded backup.
    pub async fn write_backup(&self, record: &ShardedRecord) -> Result<(), StorageError> {
        let key = layout::sharded_record_key(&record.name);
        self.write(layout::SHARDED_RECORDS_DIR, &key, record).await
    }

    /// Reads the record of sharded backup `name`.
    pub async fn backup(&self, name: &str) -> Result<ShardedRecord, StorageError> {
        self.read(&layout::sharded_record_key(name), "sharded backup")
            .await
    }

    /// Deletes the record of sharded backup `name` (a missing one is no error).
    pub async fn delete_backup(&self, name: &str) -> Result<(), StorageError> {
        self.store.delete(&layout::sharded_record_key(name)).await
    }

    /// Every sharded backup record anywhere under this prefix, each with the cluster prefix
    /// it was found at (relative to this one); one damaged record does not hide the others.
    pub async fn find_backups(&self) -> Result<Found, StorageError> {
        let mut found = Found::default();
        for key in self.store.list("").await? {
            let Some((prefix, name)) = layout::parse_sharded_record_key(&key) else {
                continue;
            };
            match self.read(&key, "sharded backup").await {
                Ok(r) => found.records.push((prefix.to_string(), r)),
                Err(error) => found.damaged.push(Damaged {
                    name: name.to_string(),
                    error,
                }),
            }
        }
        found.records.sort_by(|a, b| a.1.start.cmp(&b.1.start));
        Ok(found)
    }

    /// Writes a restore point record.
    pub async fn write_restore_point(
        &self,
        record: &RestorePointRecord,
    ) -> Result<(), StorageError> {
        let key = layout::restore_point_key(&record.restore_point.name);
        self.write(layout::RESTORE_POINTS_DIR, &key, record).await
    }

    /// Deletes the record of restore point `name` (a missing one is no error).
    pub async fn delete_restore_point(&self, name: &str) -> Result<(), StorageError> {
        self.store.delete(&layout::restore_point_key(name)).await
    }

    /// Every restore point record, oldest first; a damaged one fails the listing, by key.
    pub async fn restore_points(&self) -> Result<Vec<RestorePointRecord>, StorageError> {
        let mut out = Vec::new();
        for key in self.store.list(layout::RESTORE_POINTS_DIR).await? {
            out.push(self.read(&key, "restore point").await?);
        }
        out.sort_by_key(RestorePointRecord::time);
        Ok(out)
    }
}

/// The newest restore point at or before `t` (for a consistent timestamp restore).
pub fn newest_at_or_before(
    records: &[RestorePointRecord],
    t: Timestamp,
) -> Option<&RestorePointRecord> {
    records
        .iter()
        .filter(|r| r.time().is_some_and(|rt| rt <= t))
        .max_by_key(|r| r.time())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, time: &str) -> RestorePointRecord {
        RestorePointRecord {
            format: RESTORE_POINT_FORMAT,
            namespace: "default".into(),
            cluster: "c".into(),
            restore_point: RestorePoint {
                name: name.into(),
                time: time.into(),
                ..RestorePoint::default()
            },
        }
    }

    #[test]
    fn the_newest_point_at_or_before_a_time_is_chosen() {
        let records = [
            record("a", "2030-01-01T00:00:00Z"),
            record("b", "2030-01-01T00:15:00.5Z"),
            record("c", "2030-01-01T00:30:00Z"),
        ];
        let at = |t: &str| {
            newest_at_or_before(&records, t.parse().unwrap()).map(|r| r.restore_point.name.as_str())
        };
        assert_eq!(at("2030-01-01T00:29:59Z"), Some("b"));
        assert_eq!(at("2030-01-01T00:30:00Z"), Some("c"));
        assert_eq!(at("2029-12-31T23:59:59Z"), None);
    }
}
