//! Health of a primary's WAL archiving, read from `pg_stat_archiver`: archiving that fails
//! (storage full, unreachable, refused) is said while `pg_wal` still has room.

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

/// The primary's archive failure, or None when its last attempt succeeded (or none was made).
pub async fn failure(primary: &Instance) -> Result<Option<ArchiveFailure>, RuntimeError> {
    let client = primary.connect("postgres").await?;
    let row = client
        .query_one(
            "SELECT coalesce(last_failed_wal, ''), last_failed_time::text, failed_count,
                    (SELECT coalesce(sum(size), 0)::int8 FROM pg_ls_waldir()),
                    last_failed_time IS NOT NULL
                      AND last_failed_time > coalesce(last_archived_time, '-infinity')
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|source| RuntimeError::Sql {
            instance: primary.name.clone(),
            what: "reading pg_stat_archiver".into(),
            source,
        })?;
    let failing: bool = row.get(4);
    Ok(failing.then(|| ArchiveFailure {
        last_failed_wal: row.get(0),
        last_failed_time: row.get::<_, Option<String>>(1).unwrap_or_default(),
        failed_count: row.get(2),
        pg_wal_bytes: row.get(3),
    }))
}
