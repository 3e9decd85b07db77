//! Verification of a whole sharded backup from storage: its record (`sharded/<name>.json`)
//! against the backup's status, the restore point records beside it, every member's base
//! backup (its manifest against the digest recorded at completion, every part and file
//! checksum, the WAL to its consistent point), and every WAL segment from there to the
//! cluster-wide restore point, so the backup is known to restore before it is needed.

use jiff::Timestamp;
use shardvault_api::shardedbackup::ShardedBackupStatus;
use shardvault_pg::engine::manifest::load_anchored;
use shardvault_pg::engine::verify::verify_segment;
use shardvault_pg::engine::{self, EngineError, Repo, layout};
use shardvault_storage::Destination;

use crate::records::{Records, RestorePointRecord, ShardedRecord};

/// One member of a sharded backup to verify.
#[derive(Debug, Clone)]
pub struct MemberToVerify {
    /// Member cluster name.
    pub name: String,
    /// Backup name in storage.
    pub backup: String,
    /// Where it is stored.
    pub destination: Destination,
    /// WAL segment holding the restore point.
    pub restore_point_wal: String,
    /// SHA-256 of the manifest recorded when the backup completed, if any.
    pub manifest_sha256: Option<String>,
}

/// What verification of one member found.
#[derive(Debug, Clone)]
pub struct MemberVerified {
    /// Member cluster name.
    pub name: String,
    /// Files whose checksums matched.
    pub files: usize,
    /// Bytes of file data checked.
    pub bytes: u64,
    /// WAL segments read and checked, up to the restore point.
    pub wal_segments: usize,
}

/// Verifies one member; the first bad or missing object is named in the error.
pub async fn verify_member(m: &MemberToVerify) -> Result<MemberVerified, EngineError> {
    let repo = Repo::open(&m.destination)?;
    let (manifest, _) = load_anchored(&repo, &m.backup, m.manifest_sha256.as_deref()).await?;
    let report = engine::verify(&m.destination, &m.backup).await?;
    let range = layout::segment_range(
        &manifest.end_wal_file,
        &m.restore_point_wal,
        manifest.wal_segment_size,
    )
    .ok_or_else(|| {
        EngineError::Protocol(format!(
            "restore point segment {} does not follow the backup's end segment {}",
            m.restore_point_wal, manifest.end_wal_file
        ))
    })?;
    // The first segment of the range was checked with the backup itself.
    for seg in range.iter().skip(1) {
        verify_segment(&repo, &manifest, seg).await?;
    }
    Ok(MemberVerified {
        name: m.name.clone(),
        files: report.files,
        bytes: report.bytes,
        wal_segments: report.wal_segments + range.len().saturating_sub(1),
    })
}

/// Reads the record of sharded backup `name` from `dest` (its cluster prefix) and checks it
/// against the backup's `status` and the members' manifest digests (`anchors`, in member
/// order): a record that does not decode, or describes another backup, is named.
pub async fn verify_record(
    dest: &Destination,
    name: &str,
    status: &ShardedBackupStatus,
    anchors: &[Option<String>],
) -> Result<ShardedRecord, EngineError> {
    let record = Records::open(dest)?.backup(name).await?;
    let differs = |what: &str| EngineError::Corrupt {
        object: layout::sharded_record_key(name),
        reason: format!("its {what} differs from the SGShardedBackup's status"),
    };
    let members: Vec<&str> = record
        .members
        .iter()
        .map(|m| m.sg_backup.as_str())
        .collect();
    if record.name != name || members != status.sg_backups {
        return Err(differs("list of member backups"));
    }
    if status.restore_point.as_ref() != Some(&record.restore_point) {
        return Err(differs("restore point"));
    }
    let recorded = record.members.iter().map(|m| m.manifest_sha256.as_ref());
    if recorded
        .zip(anchors)
        .any(|(r, a)| r.is_some() && a.is_some() && r != a.as_ref())
    {
        return Err(differs("manifest digests"));
    }
    Ok(record)
}

/// Reads every restore point record beside the record (`cluster`) and beside the
/// coordinator's backups (`coordinator`); each must decode, and the two copies of those at
/// or after the backup's restore point (`since`, RFC 3339) must agree, so a damaged or
/// deleted copy is named. Returns how many the backup can restore to.
pub async fn verify_restore_points(
    cluster: &Destination,
    coordinator: &Destination,
    since: &str,
) -> Result<usize, EngineError> {
    let floor: Option<Timestamp> = since.parse().ok();
    let read = |records: Records| async move {
        let all = records.restore_points().await?;
        Ok::<Vec<RestorePointRecord>, EngineError>(
            all.into_iter().filter(|r| r.time() >= floor).collect(),
        )
    };
    let (cluster, coordinator) = (Records::open(cluster)?, Records::open(coordinator)?);
    let (a, b) = (
        read(cluster.clone()).await?,
        read(coordinator.clone()).await?,
    );
    for (have, other, where_) in [(&a, &b, &coordinator), (&b, &a, &cluster)] {
        if let Some(r) = have.iter().find(|r| !other.contains(r)) {
            return Err(EngineError::Corrupt {
                object: layout::restore_point_key(&r.restore_point.name),
                reason: format!("its copy in {} is missing or differs", where_.describe()),
            });
        }
    }
    Ok(a.len())
}
