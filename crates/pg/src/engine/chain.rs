//! Chains of incremental backups: choosing a parent, loading the backups an incremental
//! refers to, and which backups a kept incremental needs.
//!
//! Changed blocks are found by a page-LSN scan: a block of a relation file is taken from the
//! parent when its page LSN is set and older than the parent's start LSN, the whole block was
//! read, and the parent's copy of the file reached that far. `pg_backup_start`'s checkpoint
//! flushed every page changed before it, so such a page is the one the parent stored (up to
//! hint bits, which are not WAL-logged and are only hints); a page changed after the new
//! backup's start is rewritten by the full-page image that replay applies, whichever copy a
//! restore wrote. New files, blocks past the parent's size, zeroed pages, free space maps and
//! visibility maps are stored whole; truncated and dropped files are whatever the listing saw.

use std::collections::{BTreeMap, BTreeSet};

use shardvault_storage::StorageError;

use super::layout::{self, Lsn};
use super::manifest::{BackupSummary, ChainLink, Chunk, Manifest, list_backups, load_anchored};
use super::{EngineError, MissingLink, Repo};

/// The block size whose pages an incremental compares (PostgreSQL's default `BLCKSZ`).
pub const BLOCK_SIZE: u64 = 8192;

/// Which backup a new one is incremental over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ParentChoice {
    /// None: a full backup.
    #[default]
    Full,
    /// The newest backup of this cluster in the destination, if it can be a parent (else a
    /// full backup).
    Newest,
    /// This backup; an error if it cannot be a parent.
    Named(String),
}

/// What the server said at backup start that decides whether a parent fits.
#[derive(Debug, Clone)]
pub struct Current {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// `server_version_num`.
    pub version_num: u32,
    /// `block_size`.
    pub block_size: u64,
    /// Timeline of the backup's checkpoint.
    pub timeline: u32,
    /// The new backup's start LSN.
    pub start_lsn: Lsn,
}

/// Why `parent` cannot be the parent of a backup starting at `current`, if it cannot.
/// `history` is the current timeline's history file when the timelines differ.
pub fn parent_problem(
    parent: &Manifest,
    current: &Current,
    history: Option<&str>,
) -> Option<String> {
    if parent.snapshot.is_some() {
        return Some("it is a volume snapshot, whose blocks are not in storage".into());
    }
    if parent.system_identifier != current.system_identifier {
        return Some(format!(
            "it is of another cluster (system identifier {}, this one is {})",
            parent.system_identifier, current.system_identifier
        ));
    }
    if parent.postgres_version_num / 10000 != current.version_num / 10000 {
        return Some(format!(
            "it was taken by PostgreSQL {}, this server runs {}",
            parent.postgres_version_num, current.version_num
        ));
    }
    if current.block_size != BLOCK_SIZE {
        return Some(format!(
            "the server's block_size is {}, incrementals compare {BLOCK_SIZE}-byte pages",
            current.block_size
        ));
    }
    if parent.start_lsn >= current.start_lsn {
        return Some(format!(
            "it starts at {}, not before this backup's start {}",
            parent.start_lsn, current.start_lsn
        ));
    }
    if parent.timeline == current.timeline {
        return None;
    }
    let Some(history) = history else {
        return Some(format!(
            "it is on timeline {} and this server on {}, whose history file is not archived",
            parent.timeline, current.timeline
        ));
    };
    match switch_point(history, parent.timeline) {
        Some(at) if at >= parent.end_lsn => None,
        Some(at) => Some(format!(
            "timeline {} left timeline {} at {at}, before the parent was consistent at {}",
            current.timeline, parent.timeline, parent.end_lsn
        )),
        None => Some(format!(
            "timeline {} does not descend from the parent's timeline {}",
            current.timeline, parent.timeline
        )),
    }
}

/// Where a timeline history file says its timeline left `timeline`.
fn switch_point(history: &str, timeline: u32) -> Option<Lsn> {
    history.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let tli: u32 = fields.next()?.parse().ok()?;
        let at: Lsn = fields.next()?.parse().ok()?;
        (tli == timeline).then_some(at)
    })
}

/// The parent (and its manifest's SHA-256) a backup starting at `current` takes, per `choice`.
pub async fn choose_parent(
    repo: &Repo,
    choice: &ParentChoice,
    current: &Current,
) -> Result<Option<(Manifest, String)>, EngineError> {
    let candidate = match choice {
        ParentChoice::Full => return Ok(None),
        ParentChoice::Named(name) => load_anchored(repo, name, None).await?,
        ParentChoice::Newest => {
            let newest = list_backups(repo).await?.into_iter().rfind(|m| {
                m.system_identifier == current.system_identifier && m.snapshot.is_none()
            });
            match newest {
                Some(m) => {
                    let sha = m.sha256();
                    (m, sha)
                }
                None => {
                    tracing::info!("no earlier backup of this cluster: taking a full backup");
                    return Ok(None);
                }
            }
        }
    };
    let history = if candidate.0.timeline == current.timeline {
        None
    } else {
        let key = layout::wal_key(&format!("{:08X}.history", current.timeline));
        match repo.get(&key).await {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(EngineError::Storage(StorageError::NotFound { .. })) => None,
            Err(e) => return Err(e),
        }
    };
    match parent_problem(&candidate.0, current, history.as_deref()) {
        None => Ok(Some(candidate)),
        Some(reason) if matches!(choice, ParentChoice::Newest) => {
            tracing::info!(
                "backup {} cannot be the parent ({reason}): taking a full backup",
                candidate.0.name
            );
            Ok(None)
        }
        Some(reason) => Err(EngineError::ParentUnusable {
            parent: candidate.0.name,
            reason,
        }),
    }
}

/// The manifests of `manifest`'s chain, in chain order, each checked against the SHA-256
/// recorded when `manifest` was taken; a missing or changed one is named.
pub async fn load_chain(repo: &Repo, manifest: &Manifest) -> Result<Vec<Manifest>, EngineError> {
    let mut out = Vec::with_capacity(manifest.chain.len());
    for link in &manifest.chain {
        match load_anchored(repo, &link.name, Some(&link.manifest_sha256)).await {
            Ok((m, _)) => out.push(m),
            Err(EngineError::BackupNotFound { location, .. }) => {
                return Err(EngineError::ChainBroken(Box::new(MissingLink {
                    backup: manifest.name.clone(),
                    missing: link.name.clone(),
                    location,
                })));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The chunks of one stored part that a restore or verify reads: the part's key and, for
/// each chunk, the index of its file in the manifest.
pub(crate) struct PartToRead {
    /// Key of the part object.
    pub key: String,
    /// (file index, chunk) pairs.
    pub chunks: Vec<(usize, Chunk)>,
}

/// Every stored part `manifest`'s files refer to (its own and its chain's, whose manifests
/// are `chain`), with the chunks read from it; a part past its backup's count is refused.
pub(crate) fn parts_to_read(
    manifest: &Manifest,
    chain: &[Manifest],
) -> Result<Vec<PartToRead>, EngineError> {
    let mut by_part: BTreeMap<(u32, u32), Vec<(usize, Chunk)>> = BTreeMap::new();
    let own = chain.len() as u32;
    for (i, f) in manifest.files.iter().enumerate() {
        for c in &f.chunks {
            let source = c.source.unwrap_or(own);
            let owner = chain.get(source as usize).unwrap_or(manifest);
            if c.part >= owner.parts {
                return Err(EngineError::BadManifest {
                    key: layout::manifest_key(&manifest.name),
                    reason: format!(
                        "file {} refers to part {} of backup {}, which has {}",
                        f.path, c.part, owner.name, owner.parts
                    ),
                });
            }
            by_part.entry((source, c.part)).or_default().push((i, *c));
        }
    }
    Ok(by_part
        .into_iter()
        .map(|((source, part), chunks)| {
            let owner = chain.get(source as usize).unwrap_or(manifest);
            PartToRead {
                key: layout::part_key(&owner.name, part),
                chunks,
            }
        })
        .collect())
}

/// The chain of a backup incremental over `parent` (whose stored manifest has `sha256`).
pub(crate) fn chain_over(parent: &Manifest, sha256: &str) -> Vec<ChainLink> {
    let mut chain = parent.chain.clone();
    chain.push(ChainLink {
        name: parent.name.clone(),
        manifest_sha256: sha256.to_string(),
    });
    chain
}

/// Bytes of stored parts a restore of `manifest` reads, given its chain's manifests; a chain
/// member without per-part sizes (written before incrementals) counts whole.
pub(crate) fn restore_bytes(manifest: &Manifest, chain: &[Manifest]) -> u64 {
    let used: BTreeSet<(Option<u32>, u32)> = manifest
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| (c.source, c.part)))
        .collect();
    let mut whole = BTreeSet::new();
    let mut bytes = manifest
        .size
        .compressed
        .saturating_sub(own_part_bytes(manifest));
    for (source, part) in used {
        let owner = match source {
            None => manifest,
            Some(i) => &chain[i as usize],
        };
        match owner.part_bytes.get(part as usize) {
            Some(b) => bytes += b,
            None if whole.insert(source) => bytes += owner.size.compressed,
            None => {}
        }
    }
    bytes
}

fn own_part_bytes(m: &Manifest) -> u64 {
    m.part_bytes.iter().sum()
}

/// When a scheduled incremental starts a new chain instead (a `backups[]` entry's policy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChainPolicy {
    /// A full backup after this many backups in a chain (the full one included).
    pub full_every: Option<u32>,
    /// A full backup once the chain's incrementals together stored more than this fraction
    /// of its full backup.
    pub max_fraction: Option<f64>,
}

/// Whether the next backup of a member whose backups are `backups` (oldest first) should be
/// full under `policy`: when there is none, or the newest one's chain is long or large enough.
pub fn needs_full(backups: &[BackupSummary], policy: &ChainPolicy) -> bool {
    let Some(newest) = backups.last() else {
        return true;
    };
    let length = newest.chain.len() + 1;
    if policy.full_every.is_some_and(|n| length >= n as usize) {
        return true;
    }
    let Some(fraction) = policy.max_fraction else {
        return false;
    };
    let by_name = |name: &str| backups.iter().find(|b| b.name == name);
    let full = newest
        .chain
        .first()
        .and_then(|n| by_name(n))
        .unwrap_or(newest);
    let incrementals: u64 = newest
        .chain
        .iter()
        .skip(1)
        .filter_map(|n| by_name(n))
        .chain((newest.parent.is_some()).then_some(newest))
        .map(|b| b.size.compressed)
        .sum();
    incrementals as f64 > fraction * full.size.compressed as f64
}

/// For retention: every backup that is not in `kept` but that a kept incremental refers to,
/// with the kept backups that need it (a backup's chain is its summary's `chain`).
pub fn needed_by_kept(
    backups: &[BackupSummary],
    kept: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in backups.iter().filter(|b| kept.contains(&b.name)) {
        for link in b.chain.iter().filter(|l| !kept.contains(*l)) {
            out.entry(link.clone()).or_default().push(b.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(timeline: u32, start: &str, end: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": 1, "name": "p", "startLsn": start, "endLsn": end, "timeline": timeline,
            "startWalFile": "", "endWalFile": "", "walSegmentSize": 16777216,
            "systemIdentifier": "7", "postgresVersion": "15.8", "postgresVersionNum": 150008,
            "fromReplica": false, "controlData": {}, "compression": "none",
            "size": {"compressed": 0, "uncompressed": 0},
            "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z",
            "hostname": "h", "pgdata": "/d", "parts": 0, "hasTablespaceMap": false,
            "tablespaces": [], "directories": [], "files": []
        }))
        .unwrap()
    }

    fn current(timeline: u32, start: &str) -> Current {
        Current {
            system_identifier: "7".into(),
            version_num: 150010,
            block_size: 8192,
            timeline,
            start_lsn: start.parse().unwrap(),
        }
    }

    #[test]
    fn a_parent_must_be_of_this_cluster_and_history() {
        let p = manifest(1, "0/3000028", "0/3000100");
        assert_eq!(parent_problem(&p, &current(1, "0/5000028"), None), None);
        let other = Current {
            system_identifier: "8".into(),
            ..current(1, "0/5000028")
        };
        assert!(
            parent_problem(&p, &other, None)
                .unwrap()
                .contains("another cluster")
        );
        assert!(
            parent_problem(&p, &current(1, "0/3000028"), None)
                .unwrap()
                .contains("not before")
        );
        assert!(
            parent_problem(&p, &current(2, "0/5000028"), None)
                .unwrap()
                .contains("not archived")
        );
        let after = "1\t0/4000000\tno recovery target specified\n";
        assert_eq!(
            parent_problem(&p, &current(2, "0/5000028"), Some(after)),
            None
        );
        let before = "1\t0/3000050\tbefore the parent was consistent\n";
        assert!(
            parent_problem(&p, &current(2, "0/5000028"), Some(before))
                .unwrap()
                .contains("before the parent was consistent at 0/3000100")
        );
        let elsewhere = "3\t0/4000000\tx\n";
        assert!(
            parent_problem(&p, &current(4, "0/5000028"), Some(elsewhere))
                .unwrap()
                .contains("does not descend")
        );
    }

    #[test]
    fn a_chain_ends_after_n_backups_or_once_it_outgrows_its_fraction() {
        let summary = |name: &str, chain: &[&str], stored: u64| {
            let mut m = manifest(1, "0/1", "0/2");
            m.name = name.into();
            m.size.compressed = stored;
            let mut s = m.summary();
            s.chain = chain.iter().map(|c| c.to_string()).collect();
            s.parent = s.chain.last().cloned();
            s
        };
        let every = |n| ChainPolicy {
            full_every: Some(n),
            max_fraction: None,
        };
        assert!(needs_full(&[], &ChainPolicy::default()));
        let backups = [
            summary("f", &[], 1000),
            summary("i1", &["f"], 100),
            summary("i2", &["f", "i1"], 150),
        ];
        assert!(!needs_full(&backups, &ChainPolicy::default()));
        assert!(!needs_full(&backups, &every(4)));
        assert!(needs_full(&backups, &every(3)));
        let fraction = |f| ChainPolicy {
            full_every: None,
            max_fraction: Some(f),
        };
        assert!(needs_full(&backups, &fraction(0.2)));
        assert!(!needs_full(&backups, &fraction(0.3)));
        assert!(!needs_full(&backups[..1], &fraction(0.0)));
    }

    #[test]
    fn kept_incrementals_keep_their_chain() {
        let summary = |name: &str, chain: &[&str]| {
            let mut m = manifest(1, "0/1", "0/2");
            m.name = name.into();
            let mut s = m.summary();
            s.chain = chain.iter().map(|c| c.to_string()).collect();
            s
        };
        let backups = [
            summary("f1", &[]),
            summary("i1", &["f1"]),
            summary("i2", &["f1", "i1"]),
            summary("f2", &[]),
            summary("i3", &["f2"]),
        ];
        let kept: BTreeSet<String> = ["i2", "f2", "i3"].map(String::from).into();
        let needed = needed_by_kept(&backups, &kept);
        assert_eq!(
            needed,
            BTreeMap::from([
                ("f1".to_string(), vec!["i2".to_string()]),
                ("i1".to_string(), vec!["i2".to_string()]),
            ])
        );
    }
}
