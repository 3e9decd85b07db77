//! Proof that WAL reached the archive: switch to a new segment and wait until the closed
//! one is in storage.

use std::time::{Duration, Instant};

use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::wal::wait_archived;
use shardvault_pg::engine::{EngineError, Repo};
use tokio_postgres::NoTls;

/// Why WAL could not be shown archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The member could not be reached.
    #[error("the server failed: {}", shardvault_pg::sql_error::message(.0))]
    Connect(#[from] tokio_postgres::Error),
    /// The member has nowhere to archive.
    #[error("no backup destination is configured (spec.configurations.backups is empty)")]
    NoDestination,
    /// Storage could not be read.
    #[error("{0}")]
    Storage(String),
    /// The segment did not arrive in time.
    #[error(
        "WAL segment {segment} was not archived within {secs} s: check the member's archive_command and pg_stat_archiver"
    )]
    Timeout { segment: String, secs: u64 },
}

/// Closes the current WAL segment of the member and waits until it, and `also` if given,
/// are in the member's first destination. With `commit`, first writes a commit record, so
/// that recovery to any time before now has a later commit to stop at.
pub async fn seal(
    cfg: &NodeConfig,
    commit: bool,
    also: Option<&str>,
    wait: Duration,
) -> Result<String, ArchiveError> {
    let (client, conn) = tokio_postgres::connect(&cfg.conninfo("postgres"), NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    if commit {
        client
            .batch_execute("BEGIN; SELECT pg_current_xact_id(); COMMIT")
            .await?;
    }
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    let dest = cfg
        .destinations
        .first()
        .ok_or(ArchiveError::NoDestination)?;
    let repo = Repo::open(dest).map_err(|e| ArchiveError::Storage(e.to_string()))?;
    let deadline = Instant::now() + wait;
    for seg in std::iter::once(segment.as_str()).chain(also) {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_archived(&repo, seg, left).await.map_err(|e| match e {
            EngineError::NotArchived { .. } => ArchiveError::Timeout {
                segment: seg.to_string(),
                secs: wait.as_secs(),
            },
            e => ArchiveError::Storage(e.to_string()),
        })?;
    }
    Ok(segment)
}
