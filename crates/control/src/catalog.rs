//! Cluster-level records in storage: one per sharded backup, so a new installation can list
//! and restore sharded backups from storage alone.

use serde::{Deserialize, Serialize};
use shardvault_api::backup::BackupSize;
use shardvault_api::shardedbackup::RestorePoint;
use shardvault_storage::{Codec, StorageError, Store};

/// Version of the record format.
pub const CATALOG_FORMAT: u32 = 1;

/// Key prefix of sharded backup records under a cluster prefix.
const SHARDED_DIR: &str = "sharded";

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
}

/// Key of the record of sharded backup `name`, under a cluster prefix.
pub fn key(name: &str) -> String {
    format!("{SHARDED_DIR}/{name}.json")
}

/// Writes the record of a completed sharded backup under `store` (a cluster prefix).
pub async fn write(
    store: &Store,
    codec: &Codec,
    record: &ShardedRecord,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(record).expect("record serializes");
    store.put(&key(&record.name), codec.encode(&json)).await
}

/// Deletes the record of sharded backup `name`.
pub async fn delete(store: &Store, name: &str) -> Result<(), StorageError> {
    store.delete(&key(name)).await
}

/// Reads the record of sharded backup `name`.
pub async fn read(store: &Store, codec: &Codec, name: &str) -> Result<ShardedRecord, StorageError> {
    read_key(store, codec, &key(name)).await
}

async fn read_key(store: &Store, codec: &Codec, k: &str) -> Result<ShardedRecord, StorageError> {
    let bytes = codec.decode(k, &store.get(k).await?)?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        key: k.to_string(),
        reason: format!("not a sharded backup record: {e}"),
    })
}

/// What a search of a storage found: the readable records, with the cluster prefix each was
/// found at (oldest first), and the records that could not be read, each error naming its key.
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

/// Every sharded backup record anywhere under `store` (for `backups ls --storage` without
/// `--path`); one damaged record does not hide the others.
pub async fn find_all(store: &Store, codec: &Codec) -> Result<Found, StorageError> {
    let mut found = Found::default();
    for k in store.list("").await? {
        let Some((prefix, file)) = k
            .rsplit_once(&format!("/{SHARDED_DIR}/"))
            .or_else(|| k.strip_prefix(&format!("{SHARDED_DIR}/")).map(|f| ("", f)))
        else {
            continue;
        };
        let Some(name) = file.strip_suffix(".json").filter(|n| !n.contains('/')) else {
            continue;
        };
        match read_key(store, codec, &k).await {
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
