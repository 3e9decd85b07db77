//! Health of a primary's WAL archiving, read from `pg_stat_archiver` and the segments waiting
//! in `pg_wal/archive_status`: how far the archive is behind, and archiving that fails
//! (storage full, unreachable, refused) said while `pg_wal` still has room.

use serde::{Deserialize, Serialize};

use super::error::RuntimeError;
use super::instance::Instance;

/// A primary whose archiver failed after its last success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFailure {
    /// The segment that failed last.
    pub last_failed_wal: String,
    /// When it failed (server time, as PostgreSQL prints it).
    pub last_failed_time: String,
    /// Failed attempts since the server started.
    pub failed_count: i64,
    /// Bytes in `pg_wal`, which grows while archiving fails.
    pub pg_wal_bytes: i64,
}

impl std::fmt::Display for ArchiveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL archiving fails (last failed segment {} at {}, {} failed attempts); pg_wal holds {} MiB and grows until it works again",
            self.last_failed_wal,
            self.last_failed_time,
            self.failed_count,
            self.pg_wal_bytes / (1024 * 1024)
        )
    }
}

/// Where a primary's WAL archiving stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// The last segment (or history file) archived, when one was.
    pub last_archived_wal: Option<String>,
    /// When it was archived (server time, as PostgreSQL prints it).
    pub last_archived_time: Option<String>,
    /// Completed segments waiting to be archived (the archive's lag).
    pub pending_segments: i64,
    /// Their size in bytes.
    pub pending_bytes: i64,
    /// Set when the last attempt failed.
    pub failure: Option<ArchiveFailure>,
}

/// The primary's archiving: last archived segment, segments still waiting, and its failure.
pub async fn observe(primary: &Instance) -> Result<ArchiveState, RuntimeError> {
    let client = primary.connect("postgres").await?;
    let row = client
        .query_one(
            "SELECT coalesce(last_failed_wal, ''), last_failed_time::text, failed_count,
                    (SELECT coalesce(sum(size), 0)::int8 FROM pg_ls_waldir()),
                    last_failed_time IS NOT NULL
                      AND last_failed_time > coalesce(last_archived_time, '-infinity'),
                    last_archived_wal, last_archived_time::text,
                    (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size')
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|source| RuntimeError::Sql {
            instance: primary.name.clone(),
            what: "reading pg_stat_archiver".into(),
            cause: source,
        })?;
    let failing: bool = row.get(4);
    let pending_segments: i64 = row.get(7);
    Ok(ArchiveState {
        last_archived_wal: row.get(5),
        last_archived_time: row.get(6),
        pending_segments,
        pending_bytes: pending_segments.saturating_mul(row.get(8)),
        failure: failing.then(|| ArchiveFailure {
            last_failed_wal: row.get(0),
            last_failed_time: row.get::<_, Option<String>>(1).unwrap_or_default(),
            failed_count: row.get(2),
            pg_wal_bytes: row.get(3),
        }),
    })
}
