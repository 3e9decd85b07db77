//! Removing what a destination stores: a base backup, and the WAL no backup needs any more.

use std::collections::BTreeSet;

use futures::StreamExt;
use shardvault_storage::StorageError;

use super::chain::needed_by_kept;
use super::layout::{self, wal_position};
use super::manifest::{BackupSummary, BackupType};
use super::{EngineError, Repo};

/// Deletes in flight while pruning WAL.
const DELETE_CONCURRENCY: usize = 8;

/// Deletes every object of backup `name` (its manifest, parts and files), the manifest
/// first so that an interrupted delete leaves no backup that claims to be complete; a
/// missing backup is no error.
pub async fn delete_backup(repo: &Repo, name: &str) -> Result<(), EngineError> {
    match repo.store.delete(&layout::manifest_key(name)).await {
        Ok(()) | Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(repo.store.delete_all(&layout::backup_dir(name)).await?)
}

/// The names of every archived WAL file (segments, `.partial`, `.history`, `.backup`),
/// sorted.
pub async fn list_wal(repo: &Repo) -> Result<Vec<String>, EngineError> {
    let mut files: Vec<String> = repo
        .store
        .list(layout::WAL_DIR)
        .await?
        .iter()
        .filter_map(|k| layout::wal_file_of_key(k))
        .map(str::to_string)
        .collect();
    files.sort();
    Ok(files)
}

/// The WAL files of `files` that no backup starting at one of `starts` (their start WAL
/// segments) needs, and the start they are kept from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPrune {
    /// Oldest start segment among `starts`; nothing is deleted without one.
    pub keep_from: Option<String>,
    /// Files before it, on the same or an older timeline, oldest first (never a `.history`).
    pub delete: Vec<String>,
}

/// Decides which of the archived WAL `files` lie before the start of every backup in
/// `starts`: compared by timeline and segment position, so a file on a newer timeline than
/// every backup is kept.
pub fn plan_wal_prune(files: &[String], starts: &[String]) -> WalPrune {
    let positions: Vec<(&str, &str)> = starts.iter().filter_map(|s| wal_position(s)).collect();
    let (Some(tli), Some(pos)) = (
        positions.iter().map(|p| p.0).min(),
        positions.iter().map(|p| p.1).min(),
    ) else {
        return WalPrune::default();
    };
    let keep_from = starts
        .iter()
        .filter(|s| wal_position(s).map(|p| p.1) == Some(pos))
        .min()
        .cloned();
    let delete = files
        .iter()
        .filter(|f| !f.ends_with(".history"))
        .filter(|f| wal_position(f).is_some_and(|(t, p)| t <= tli && p < pos))
        .cloned()
        .collect();
    WalPrune { keep_from, delete }
}

/// Which backups keeping a number of full backups keeps and deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetainPlan {
    /// Kept, oldest first.
    pub keep: Vec<String>,
    /// Deleted, oldest first.
    pub delete: Vec<String>,
}

/// Plans keeping the `full` newest full backups of `backups` (oldest first): they, every
/// backup taken after the oldest of them, and the backups those need for their chains stay;
/// the rest go. Fewer full backups than `full` keeps everything.
pub fn plan_retain(backups: &[BackupSummary], full: usize) -> RetainPlan {
    let fulls: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| b.backup_type == BackupType::Full)
        .collect();
    let Some(oldest) = fulls.len().checked_sub(full.max(1)).map(|i| fulls[i]) else {
        return RetainPlan {
            keep: backups.iter().map(|b| b.name.clone()).collect(),
            delete: Vec::new(),
        };
    };
    let mut kept: BTreeSet<String> = backups
        .iter()
        .filter(|b| b.start_time >= oldest.start_time)
        .map(|b| b.name.clone())
        .collect();
    kept.extend(needed_by_kept(backups, &kept).into_keys());
    let (keep, delete): (Vec<_>, Vec<_>) = backups
        .iter()
        .map(|b| b.name.clone())
        .partition(|n| kept.contains(n));
    RetainPlan { keep, delete }
}

/// Deletes archived WAL `files` (names as [`list_wal`] gives them); the first failure is
/// returned after every other delete was tried.
pub async fn delete_wal(repo: &Repo, files: &[String]) -> Result<(), EngineError> {
    let keys: Vec<String> = files.iter().map(|f| layout::wal_key(f)).collect();
    let results: Vec<Result<(), StorageError>> = futures::stream::iter(keys)
        .map(|k| {
            let store = repo.store.clone();
            async move { store.delete(&k).await }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_wal_before_every_backup_start_is_pruned() {
        let files = names(&[
            "000000010000000000000001",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000010000000000000004",
            "00000002.history",
            "000000020000000000000002",
        ]);
        let plan = plan_wal_prune(
            &files,
            &names(&["000000010000000000000004", "000000010000000000000003"]),
        );
        assert_eq!(plan.keep_from.as_deref(), Some("000000010000000000000003"));
        assert_eq!(
            plan.delete,
            names(&[
                "000000010000000000000001",
                "000000010000000000000002.00000028.backup"
            ]),
            "a newer timeline and history files stay"
        );
        assert_eq!(plan_wal_prune(&files, &[]), WalPrune::default());
    }

    #[test]
    fn retain_keeps_the_newest_fulls_and_what_their_chains_need() {
        let at = |name: &str, minute: i64, chain: &[&str]| {
            let mut s: BackupSummary = serde_json::from_value(serde_json::json!({
                "name": name, "startLsn": "0/1", "endLsn": "0/2", "timeline": 1,
                "startWalFile": "", "endWalFile": "", "systemIdentifier": "7",
                "postgresVersion": "15", "fromReplica": false, "compression": "lz4",
                "size": {"compressed": 0, "uncompressed": 0},
                "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z",
                "hostname": "h", "pgdata": "/d", "files": 0, "parts": 0
            }))
            .unwrap();
            s.start_time += jiff::SignedDuration::from_mins(minute);
            s.chain = names(chain);
            s.parent = s.chain.last().cloned();
            if s.parent.is_some() {
                s.backup_type = BackupType::Incremental;
            }
            s
        };
        let backups = [
            at("f1", 0, &[]),
            at("i1", 1, &["f1"]),
            at("f2", 2, &[]),
            at("i2", 3, &["f1", "i1"]),
            at("f3", 4, &[]),
        ];
        let plan = plan_retain(&backups, 2);
        assert_eq!(
            plan.keep,
            names(&["f1", "i1", "f2", "i2", "f3"]),
            "i2 needs f1 and i1"
        );
        let plan = plan_retain(&backups, 1);
        assert_eq!(plan.keep, names(&["f3"]));
        assert_eq!(plan.delete, names(&["f1", "i1", "f2", "i2"]));
        assert!(plan_retain(&backups, 3).delete.is_empty());
        assert!(plan_retain(&backups, 9).delete.is_empty());
    }
}
