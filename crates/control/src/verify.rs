//! Verification of a whole sharded backup from storage: every member's base backup (every
//! part and file checksum, the WAL to its consistent point), and every WAL segment from there
//! to the cluster-wide restore point, so the backup is known to restore before it is needed.

use shardvault_pg::engine::{self, EngineError, Repo, layout};
use shardvault_storage::Destination;

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
    let report = engine::verify(&m.destination, &m.backup).await?;
    let repo = Repo::open(&m.destination)?;
    let manifest = engine::load_manifest(&repo, &m.backup).await?;
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
        repo.get(&layout::wal_key(seg)).await?;
    }
    Ok(MemberVerified {
        name: m.name.clone(),
        files: report.files,
        bytes: report.bytes,
        wal_segments: report.wal_segments + range.len().saturating_sub(1),
    })
}
