//! Incremental sharded backups in the controllers: whether a sharded backup's members store
//! only the blocks changed since their newest backup, and what their summaries say in
//! status. The engine finds the parent (the member's newest backup in the entry's storage)
//! and takes a full backup when there is none; status says which it took.

use shardvault_api::backup::{BackupSize, BackupType};
use shardvault_api::shardedcluster::{BackupConfiguration, IncrementalPolicy};
use shardvault_pg::engine::chain::{ChainPolicy, needs_full};
use shardvault_pg::engine::manifest::{BackupSummary, BackupType as EngineType, list_backups};
use shardvault_pg::engine::{EngineError, Repo};
use shardvault_storage::Destination;

/// What a sharded backup asks of its members, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether members are backed up incremental (each over its newest backup, when it has
    /// one).
    pub incremental: bool,
    /// Why, as a clause for a log line or an Event.
    pub reason: String,
}

/// The engine's chain policy for a `backups[].incremental` policy.
pub fn chain_policy(p: &IncrementalPolicy) -> ChainPolicy {
    ChainPolicy {
        full_every: p.full_every.map(|n| n.clamp(1, u32::MAX as i64) as u32),
        max_fraction: p.max_chain_size_percent.map(|pct| pct as f64 / 100.0),
    }
}

/// Whether a sharded backup annotated `asked` (the `shardvault.io/backup-type` annotation)
/// in `entry` is incremental, given each member's backups in that entry's storage (oldest
/// first): the annotation decides; without it the entry's policy does, and one member
/// needing a full backup makes every member's full, so chains stay aligned.
pub fn decide(
    asked: Option<BackupType>,
    entry: &BackupConfiguration,
    members: &[Vec<BackupSummary>],
) -> Decision {
    let decision = |incremental: bool, reason: &str| Decision {
        incremental,
        reason: reason.to_string(),
    };
    match (asked, &entry.incremental) {
        (Some(BackupType::Full), _) => decision(false, "the backup-type annotation asks for full"),
        (Some(BackupType::Incremental), _) => {
            decision(true, "the backup-type annotation asks for incremental")
        }
        (None, None) => decision(false, "the backups[] entry has no incremental policy"),
        (None, Some(policy)) => {
            let policy = chain_policy(policy);
            match members.iter().position(|b| needs_full(b, &policy)) {
                Some(i) if members[i].is_empty() => {
                    decision(false, "a member has no backup in this storage yet")
                }
                Some(_) => decision(false, "the entry's incremental policy starts a new chain"),
                None => decision(true, "the entry's incremental policy continues the chain"),
            }
        }
    }
}

/// [`decide`] for a sharded backup whose members back up to `dests` (coordinator first):
/// their backups are read from storage only when the entry's policy needs them.
pub async fn decide_for(
    asked: Option<BackupType>,
    entry: &BackupConfiguration,
    dests: &[Destination],
) -> Result<Decision, EngineError> {
    let mut members = Vec::new();
    if asked.is_none() && entry.incremental.is_some() {
        for dest in dests {
            let repo = Repo::open(dest)?;
            let backups = list_backups(&repo).await?;
            members.push(backups.iter().map(|m| m.summary()).collect());
        }
    }
    Ok(decide(asked, entry, &members))
}

/// A member backup's sizes as status shows them: stored, written by a restore, and read by
/// a restore (the chain's parts included).
pub fn member_size(summary: &BackupSummary) -> BackupSize {
    BackupSize {
        compressed: summary.size.compressed,
        uncompressed: summary.size.uncompressed,
        restore: Some(if summary.size.restore == 0 {
            summary.size.compressed
        } else {
            summary.size.restore
        }),
    }
}

/// A member backup's type as status shows it.
pub fn member_type(summary: &BackupSummary) -> BackupType {
    match summary.backup_type {
        EngineType::Full => BackupType::Full,
        EngineType::Incremental => BackupType::Incremental,
        // A snapshot holds the whole data directory (status.volumeSnapshot says it is one).
        EngineType::Snapshot => BackupType::Full,
    }
}

/// What a sharded backup's members add up to: the summed sizes, its type (incremental when
/// any member is) and its parent, the sharded backup whose member backups the members'
/// parents are (member `i`'s backup is named `<sharded>-<suffixes[i]>`), when they agree.
pub fn sharded(
    manifests: &[BackupSummary],
    suffixes: &[String],
) -> (BackupSize, BackupType, Option<String>) {
    let size = manifests
        .iter()
        .map(member_size)
        .fold(BackupSize::default(), BackupSize::plus);
    let incremental = manifests.iter().any(|m| m.parent.is_some());
    let owners: Vec<Option<&str>> = manifests
        .iter()
        .zip(suffixes)
        .filter_map(|(m, suffix)| {
            let parent = m.parent.as_deref()?;
            Some(parent.strip_suffix(suffix.as_str())?.strip_suffix('-'))
        })
        .collect();
    let parent = match owners.split_first() {
        Some((first, rest)) if rest.iter().all(|o| o == first) => first.map(str::to_string),
        _ => None,
    };
    let ty = if incremental {
        BackupType::Incremental
    } else {
        BackupType::Full
    };
    (size, ty, parent)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A member backup summary: its name, its chain (full first) and what it stored.
    pub(crate) fn summary(name: &str, chain: &[&str], stored: u64) -> BackupSummary {
        let mut s: BackupSummary = serde_json::from_value(serde_json::json!({
            "name": name, "startLsn": "0/2000028", "endLsn": "0/2000100", "timeline": 1,
            "startWalFile": "000000010000000000000002", "endWalFile": "000000010000000000000002",
            "systemIdentifier": "7", "postgresVersion": "15.8", "fromReplica": false,
            "compression": "lz4",
            "size": {"compressed": stored, "uncompressed": 10 * stored, "restore": 0},
            "startTime": "2030-01-01T00:00:00Z", "endTime": "2030-01-01T00:00:01Z",
            "hostname": "h", "pgdata": "/d", "files": 1, "parts": 1
        }))
        .expect("a summary");
        s.chain = chain.iter().map(|c| c.to_string()).collect();
        s.parent = s.chain.last().cloned();
        if s.parent.is_some() {
            s.backup_type = EngineType::Incremental;
        }
        s
    }

    fn entry(policy: Option<IncrementalPolicy>) -> BackupConfiguration {
        BackupConfiguration {
            sg_object_storage: "s".into(),
            incremental: policy,
            ..Default::default()
        }
    }

    #[test]
    fn the_annotation_decides_else_the_entry_policy_for_every_member() {
        let chain = vec![
            summary("b1-coord", &[], 1000),
            summary("b2-coord", &["b1-coord"], 100),
        ];
        let members = [chain.clone(), chain];
        let none = entry(None);
        assert!(
            !decide(None, &none, &members).incremental,
            "StackGres's way"
        );
        assert!(decide(Some(BackupType::Incremental), &none, &members).incremental);
        let every3 = entry(Some(IncrementalPolicy {
            full_every: Some(3),
            max_chain_size_percent: None,
        }));
        assert!(decide(None, &every3, &members).incremental);
        assert!(!decide(Some(BackupType::Full), &every3, &members).incremental);
        let every2 = entry(Some(IncrementalPolicy {
            full_every: Some(2),
            max_chain_size_percent: None,
        }));
        let d = decide(None, &every2, &members);
        assert_eq!(
            (d.incremental, d.reason.as_str()),
            (false, "the entry's incremental policy starts a new chain")
        );
        let percent = |p| {
            entry(Some(IncrementalPolicy {
                full_every: None,
                max_chain_size_percent: Some(p),
            }))
        };
        assert!(decide(None, &percent(20), &members).incremental);
        assert!(!decide(None, &percent(5), &members).incremental);
        let one_new = [vec![summary("b1-coord", &[], 1000)], Vec::new()];
        let d = decide(None, &percent(50), &one_new);
        assert_eq!(
            (d.incremental, d.reason.as_str()),
            (false, "a member has no backup in this storage yet")
        );
    }

    #[test]
    fn members_sum_into_the_sharded_status_with_their_common_parent() {
        let suffixes = ["coord".to_string(), "shard0".to_string()];
        let incremental = [
            summary("b2-coord", &["b1-coord"], 100),
            summary("b2-shard0", &["b1-shard0"], 50),
        ];
        let (size, ty, parent) = sharded(&incremental, &suffixes);
        assert_eq!((size.compressed, size.uncompressed), (150, 1500));
        assert_eq!(
            size.restore,
            Some(150),
            "older manifests count what they stored"
        );
        assert_eq!(
            (ty, parent.as_deref()),
            (BackupType::Incremental, Some("b1"))
        );
        let full = [
            summary("b1-coord", &[], 1000),
            summary("b1-shard0", &[], 900),
        ];
        assert_eq!(sharded(&full, &suffixes).1, BackupType::Full);
        assert_eq!(sharded(&full, &suffixes).2, None);
        let mixed = [
            summary("b3-coord", &["b1-coord", "b2-coord"], 10),
            summary("b3-shard0", &["x-shard0"], 10),
        ];
        assert_eq!(
            sharded(&mixed, &suffixes).2,
            None,
            "no one parent when the members' parents belong to different sharded backups"
        );
    }
}
