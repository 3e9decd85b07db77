//! Retention per `backups[]` entry: keep the newest `retention` Completed managed
//! SGShardedBackups of the entry, delete the older managed ones (their objects go with them,
//! through the backup controller's finalizer), then delete, per member, the WAL that no
//! remaining backup in the entry's storage needs.
//!
//! A backup in progress, an unmanaged or imported backup is never deleted, nor one whose
//! member backups a remaining incremental reads (its parent or further up its chain, as the
//! manifests in storage say): the plan keeps it and says for which. The WAL an
//! unmanaged backup needs is kept unless the entry says `retainWalsForUnmanagedLifecycle:
//! false`. WAL is compared by timeline and segment position: a file is deleted only when it
//! lies before the start segment of every backup still counted, on the same or an older
//! timeline. Timeline `.history` files are always kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use shardvault_api::backup::BackupPhase;
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::secret::base64_decode;
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_api::shardedcluster::{DEFAULT_RETENTION, SGShardedCluster, ShardedClusterSpec};
use shardvault_pg::engine::chain::needed_by_kept;
use shardvault_pg::engine::manifest::{BackupSummary, list_backups};
use shardvault_pg::engine::prune::{self, WalPrune};
use shardvault_pg::engine::{EngineError, Repo};
use shardvault_storage::{Destination, StorageError};

use crate::backup_controller::ENTRY_ANNOTATION;
use crate::context::Context;
use crate::destination::{
    ResolvedStorage, SecretLookup, cluster_destination, member_destinations, resolve_storage,
};
use crate::events::{self, EventType};
use crate::import::IMPORTED_ANNOTATION;
use crate::lookup::{self, LookupError};
use crate::records::Records;
use crate::resources::name_of;
use crate::runner::{self, ReconcileFailure, Running};

/// Why a retention plan could not be made or carried out.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A storage of a backups[] entry cannot be resolved.
    #[error("spec.configurations.backups[{entry}].sgObjectStorage: {message}")]
    Storage {
        /// Index of the entry.
        entry: usize,
        /// What is wrong and what to do.
        message: String,
    },
    /// The API could not be read or written.
    #[error("reading or writing the API: {0}")]
    Api(#[from] kube::Error),
    /// The storages of the cluster's backups[] entries cannot be looked up.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Reading or deleting in a member's storage failed.
    #[error("{member} ({location}): {cause}")]
    Objects {
        /// Member cluster name.
        member: String,
        /// Where its objects are.
        location: String,
        /// The failure.
        cause: EngineError,
    },
}

impl ReconcileFailure for RetentionError {
    fn reason(&self) -> &str {
        match self {
            RetentionError::Lookup(e) => e.reason(),
            RetentionError::Api(_) => "ApiError",
            _ => "RetentionFailed",
        }
    }
}

/// What one retention pass over a cluster deletes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPlan {
    /// SGShardedCluster name.
    pub cluster: String,
    /// One plan per backups[] entry.
    pub entries: Vec<EntryPlan>,
}

/// What retention deletes for one backups[] entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPlan {
    /// Index in `spec.configurations.backups`.
    pub entry: usize,
    /// How many Completed managed backups are kept.
    pub retention: usize,
    /// Completed managed backups kept, newest first.
    pub keep: Vec<String>,
    /// Managed backups beyond the retention kept for the incrementals that need them.
    pub held: Vec<Held>,
    /// Managed backups to delete, newest first.
    pub delete: Vec<String>,
    /// The volume snapshots deleted with them (their subvolumes go with the backups).
    pub snapshots: Vec<String>,
    /// Whether unmanaged backups keep their WAL.
    pub retain_unmanaged_wal: bool,
    /// WAL to delete, per member.
    pub wal: Vec<MemberWal>,
    /// Cluster-wide restore point records no remaining backup can reach, oldest first.
    pub restore_points: Vec<String>,
    /// Where the restore point records are (cluster prefix, coordinator prefix).
    #[serde(skip)]
    record_dests: Vec<Destination>,
}

/// The WAL of one member in one entry's storage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberWal {
    /// Member cluster name.
    pub member: String,
    /// Where the member's objects are (no credentials).
    pub location: String,
    /// Oldest start segment of a backup still counted; nothing is deleted without one.
    pub keep_from: Option<String>,
    /// WAL files to delete, oldest first.
    pub delete: Vec<String>,
    #[serde(skip)]
    dest: Option<Destination>,
}

/// Secrets given as stored `Secret` objects (`data` base64-encoded).
pub struct SecretObjects<'a>(pub &'a [Value]);

impl SecretLookup for SecretObjects<'_> {
    fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let s = self.0.iter().find(|s| name_of(s) == name)?;
        let bytes = base64_decode(s.pointer(&format!("/data/{key}"))?.as_str()?)?;
        String::from_utf8(bytes).ok()
    }
}

/// Resolves the storage of every backups[] entry from SGObjectStorage objects and Secrets.
pub fn resolve_entries(
    spec: &ShardedClusterSpec,
    storages: &[Value],
    secrets: &dyn SecretLookup,
) -> Result<Vec<ResolvedStorage>, RetentionError> {
    spec.backups()
        .iter()
        .enumerate()
        .map(|(entry, e)| {
            let obj = storages
                .iter()
                .find(|s| name_of(s) == e.sg_object_storage)
                .ok_or_else(|| RetentionError::Storage {
                    entry,
                    message: format!(
                        "SGObjectStorage {:?} not found: apply it first",
                        e.sg_object_storage
                    ),
                })?;
            let ospec: ObjectStorageSpec =
                serde_json::from_value(obj["spec"].clone()).map_err(|err| {
                    RetentionError::Storage {
                        entry,
                        message: format!("SGObjectStorage {}: spec: {err}", e.sg_object_storage),
                    }
                })?;
            resolve_storage(&ospec, secrets).map_err(|err| RetentionError::Storage {
                entry,
                message: err.to_string(),
            })
        })
        .collect()
}

/// The backups[] entry an [`ENTRY_ANNOTATION`] value names (default 0).
fn entry_index(annotation: Option<&str>) -> usize {
    annotation.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The backups[] entry a sharded backup belongs to (annotation, default 0).
pub fn entry_of(backup: &SGShardedBackup) -> usize {
    entry_index(
        backup
            .annotations()
            .get(ENTRY_ANNOTATION)
            .map(String::as_str),
    )
}

/// What retention reads of a sharded backup.
trait Retained {
    /// The backups[] entry it belongs to.
    fn entry(&self) -> usize;
    /// Whether retention may delete it: managed, and taken here (not imported).
    fn managed(&self) -> bool;
    /// Whether it completed.
    fn completed(&self) -> bool;
    /// Whether it is being deleted.
    fn deleting(&self) -> bool;
    /// When it started, for ordering (creation time when it has not started).
    fn started(&self) -> Timestamp;
    /// When its restore point was taken.
    fn restore_point_time(&self) -> Option<Timestamp>;
}

impl Retained for SGShardedBackup {
    fn entry(&self) -> usize {
        entry_of(self)
    }

    fn managed(&self) -> bool {
        self.spec.managed_lifecycle == Some(true)
            && !self.annotations().contains_key(IMPORTED_ANNOTATION)
    }

    fn completed(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.process.status == BackupPhase::Completed)
    }

    fn deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn started(&self) -> Timestamp {
        self.status
            .as_ref()
            .and_then(|s| s.process.timing.start.as_deref()?.parse().ok())
            .or_else(|| self.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or_default()
    }

    fn restore_point_time(&self) -> Option<Timestamp> {
        self.status
            .as_ref()?
            .restore_point
            .as_ref()?
            .time
            .parse()
            .ok()
    }
}

/// Which sharded backups of one backups[] entry retention keeps and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Completed managed backups kept, newest first.
    pub keep: Vec<String>,
    /// Completed managed backups beyond the retention that a remaining incremental needs,
    /// newest first: kept too.
    pub held: Vec<Held>,
    /// Completed managed backups beyond the retention, newest first.
    pub delete: Vec<String>,
    /// The oldest restore point a remaining backup restores to: restore point records
    /// older than it cannot be reached (None: no remaining completed backup).
    pub floor: Option<Timestamp>,
}

/// A sharded backup beyond the retention kept because remaining incrementals need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The sharded backup kept.
    pub backup: String,
    /// Sharded backups whose members' parents are its members.
    pub parent_of: Vec<String>,
    /// Sharded backups further down the chain that also read it.
    pub chain_of: Vec<String>,
}

impl Held {
    /// Why it is kept, e.g. `parent of b5; in the chain of b6, b7`.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if !self.parent_of.is_empty() {
            parts.push(format!("parent of {}", self.parent_of.join(", ")));
        }
        if !self.chain_of.is_empty() {
            parts.push(format!("in the chain of {}", self.chain_of.join(", ")));
        }
        parts.join("; ")
    }
}

/// Selects, among a cluster's sharded backups `ours`, the `retention` newest Completed
/// managed backups of entry `entry` to keep and the older ones to delete; a backup in
/// progress, unmanaged or imported is never deleted, nor one whose member backups a
/// remaining incremental needs (`members`: each member's backups in the entry's storage).
pub fn select(
    ours: &[&SGShardedBackup],
    entry: usize,
    retention: usize,
    retain_unmanaged_wal: bool,
    members: &[Vec<BackupSummary>],
) -> Selection {
    let mut candidates: Vec<&SGShardedBackup> = ours
        .iter()
        .copied()
        .filter(|b| b.entry() == entry && b.managed() && b.completed() && !b.deleting())
        .collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.started()));
    let names = |bs: &[&SGShardedBackup]| bs.iter().map(|b| b.name_any()).collect::<Vec<_>>();
    let (kept, deleted) = candidates.split_at(retention.min(candidates.len()));
    let (keep, mut delete) = (names(kept), names(deleted));
    let held = held_by_chains(ours, &delete, members);
    delete.retain(|d| !held.iter().any(|h| &h.backup == d));
    let floor = ours
        .iter()
        .filter(|b| {
            b.entry() == entry
                && b.completed()
                && !b.deleting()
                && !delete.contains(&b.name_any())
                && (b.managed() || retain_unmanaged_wal)
        })
        .filter_map(|b| b.restore_point_time())
        .min();
    Selection {
        keep,
        held,
        delete,
        floor,
    }
}

/// Which sharded backup each member backup (SGBackup name) belongs to.
fn owners<'a>(ours: &[&'a SGShardedBackup]) -> HashMap<&'a str, &'a SGShardedBackup> {
    ours.iter()
        .flat_map(|b| {
            b.status
                .iter()
                .flat_map(|s| &s.sg_backups)
                .map(move |m| (m.as_str(), *b))
        })
        .collect()
}

/// Which of the sharded backups in `delete` a remaining incremental needs: per member, the
/// member backups that the kept ones' chains name (`chain::needed_by_kept`), mapped to the
/// sharded backups they belong to.
fn held_by_chains(
    ours: &[&SGShardedBackup],
    delete: &[String],
    members: &[Vec<BackupSummary>],
) -> Vec<Held> {
    let owner_of = owners(ours);
    let leaving = |member_backup: &str| {
        owner_of
            .get(member_backup)
            .is_some_and(|b| b.deleting() || delete.contains(&b.name_any()))
    };
    let owner = |member_backup: &str| {
        owner_of
            .get(member_backup)
            .map_or(member_backup.to_string(), |b| b.name_any())
    };
    let mut held: Vec<Held> = Vec::new();
    for backups in members {
        let kept: BTreeSet<String> = backups
            .iter()
            .filter(|b| !leaving(&b.name))
            .map(|b| b.name.clone())
            .collect();
        for (needed, by) in needed_by_kept(backups, &kept) {
            let Some(doomed) = owner_of.get(needed.as_str()).map(|b| b.name_any()) else {
                continue;
            };
            if !delete.contains(&doomed) {
                continue;
            }
            let i = match held.iter().position(|h| h.backup == doomed) {
                Some(i) => i,
                None => {
                    held.push(Held {
                        backup: doomed.clone(),
                        parent_of: Vec::new(),
                        chain_of: Vec::new(),
                    });
                    held.len() - 1
                }
            };
            for kept_member in by {
                let direct = backups
                    .iter()
                    .any(|b| b.name == kept_member && b.parent.as_deref() == Some(needed.as_str()));
                let list = if direct {
                    &mut held[i].parent_of
                } else {
                    &mut held[i].chain_of
                };
                let name = owner(&kept_member);
                if !list.contains(&name) {
                    list.push(name);
                }
            }
        }
    }
    for h in &mut held {
        let parent_of = h.parent_of.clone();
        h.chain_of.retain(|c| !parent_of.contains(c));
        h.parent_of.sort();
        h.chain_of.sort();
    }
    held.sort_by_key(|h| delete.iter().position(|d| *d == h.backup));
    held
}

fn records_err(entry: usize, err: StorageError) -> RetentionError {
    RetentionError::Objects {
        member: "restore point records".into(),
        location: format!("backups[{entry}]"),
        cause: err.into(),
    }
}

/// Whether member backup `member_backup` still needs its WAL, given which sharded backup
/// each member backup belongs to.
fn counts(
    owner_of: &HashMap<&str, &SGShardedBackup>,
    delete: &[String],
    retain_unmanaged_wal: bool,
    member_backup: &str,
) -> bool {
    match owner_of.get(member_backup) {
        Some(b) if b.deleting() || delete.contains(&b.name_any()) => false,
        Some(b) if b.managed() => true,
        // Unmanaged, imported, or not ours at all: its WAL stays unless told otherwise.
        _ => retain_unmanaged_wal,
    }
}

/// Plans one retention pass over `cluster`, given the SGShardedBackups of its namespace and
/// the resolved storage of each backups[] entry. Reads storage, deletes nothing.
pub async fn plan(
    cluster: &SGShardedCluster,
    backups: &[SGShardedBackup],
    storages: &[ResolvedStorage],
) -> Result<RetentionPlan, RetentionError> {
    let name = cluster.name_any();
    let ns = cluster.namespace().unwrap_or_default();
    let (name, ns, spec) = (name.as_str(), ns.as_str(), &cluster.spec);
    let ours: Vec<&SGShardedBackup> = backups
        .iter()
        .filter(|b| b.spec.sg_sharded_cluster == name)
        .collect();
    let owner_of = owners(&ours);
    let dests = member_destinations(name, ns, spec, storages);
    let members = spec.member_names(name);
    let mut entries = Vec::new();
    for (e, entry) in spec.backups().iter().enumerate() {
        let retention = entry.retention.unwrap_or(DEFAULT_RETENTION).max(1) as usize;
        let retain_unmanaged_wal = entry.retain_wals_for_unmanaged_lifecycle != Some(false);
        let mut repos = Vec::new();
        let mut stored = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let fail = |source: EngineError| RetentionError::Objects {
                member: member.clone(),
                location: format!("backups[{e}]"),
                cause: source,
            };
            let repo = Repo::open(&dests[i][e]).map_err(fail)?;
            let summaries: Vec<BackupSummary> = list_backups(&repo)
                .await
                .map_err(fail)?
                .iter()
                .map(|m| m.summary())
                .collect();
            repos.push(repo);
            stored.push(summaries);
        }
        let Selection {
            keep,
            held,
            delete,
            floor,
        } = select(&ours, e, retention, retain_unmanaged_wal, &stored);
        let mut wal = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let dest = dests[i][e].clone();
            let fail = |source: EngineError| RetentionError::Objects {
                member: member.clone(),
                location: format!("backups[{e}]"),
                cause: source,
            };
            let repo = &repos[i];
            let location = repo.store.describe();
            let starts: Vec<String> = stored[i]
                .iter()
                .filter(|m| counts(&owner_of, &delete, retain_unmanaged_wal, &m.name))
                .map(|m| m.start_wal_file.clone())
                .collect();
            let files = if starts.is_empty() {
                Vec::new()
            } else {
                prune::list_wal(repo).await.map_err(fail)?
            };
            let WalPrune {
                keep_from,
                delete: doomed,
            } = prune::plan_wal_prune(&files, &starts);
            wal.push(MemberWal {
                member: member.clone(),
                location,
                keep_from,
                delete: doomed,
                dest: Some(dest),
            });
        }
        // A restore point older than the restore point of every backup still counted
        // cannot be reached by a restore.
        let record_dests = vec![
            cluster_destination(entry, &storages[e], ns, name),
            dests[0][e].clone(),
        ];
        let mut restore_points = Vec::new();
        if let Some(floor) = floor {
            let records = Records::open(&record_dests[0])
                .map_err(|err| records_err(e, err))?
                .restore_points()
                .await
                .map_err(|err| records_err(e, err))?;
            restore_points = records
                .into_iter()
                .filter(|r| r.time().is_some_and(|t| t < floor))
                .map(|r| r.restore_point.name)
                .collect();
        }
        let snapshots = ours
            .iter()
            .filter(|b| delete.contains(&b.name_any()))
            .flat_map(|b| b.status.iter().flat_map(|s| s.volume_snapshots.clone()))
            .collect();
        entries.push(EntryPlan {
            entry: e,
            retention,
            keep,
            held,
            snapshots,
            delete,
            retain_unmanaged_wal,
            wal,
            restore_points,
            record_dests,
        });
    }
    Ok(RetentionPlan {
        cluster: name.to_string(),
        entries,
    })
}

impl RetentionPlan {
    /// True when the pass would delete nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| {
            e.delete.is_empty()
                && e.restore_points.is_empty()
                && e.wal.iter().all(|w| w.delete.is_empty())
        })
    }

    /// The plan as text: backups and WAL ranges to delete, per entry and member.
    pub fn render(&self) -> String {
        let mut out = format!("SGShardedCluster {}\n", self.cluster);
        for e in &self.entries {
            out += &format!(
                "backups[{}] (retention {}): keep {} managed backup(s){}\n",
                e.entry,
                e.retention,
                e.keep.len(),
                if e.retain_unmanaged_wal {
                    ""
                } else {
                    ", unmanaged backups' WAL not retained"
                }
            );
            for h in &e.held {
                out += &format!(
                    "  keep SGShardedBackup {} (kept: {})\n",
                    h.backup,
                    h.reason()
                );
            }
            for b in &e.delete {
                out += &format!("  delete SGShardedBackup {b}\n");
            }
            if !e.snapshots.is_empty() {
                out += &format!(
                    "  delete {} volume snapshot(s) with them: {}\n",
                    e.snapshots.len(),
                    e.snapshots.join(", ")
                );
            }
            if let (Some(first), Some(last)) = (e.restore_points.first(), e.restore_points.last()) {
                out += &format!(
                    "  delete {} restore point record(s), {first} .. {last}\n",
                    e.restore_points.len()
                );
            }
            for w in &e.wal {
                match (w.delete.first(), w.delete.last()) {
                    (Some(first), Some(last)) => {
                        out += &format!(
                            "  delete WAL of {}: {} file(s), {first} .. {last} (keep from {})\n",
                            w.member,
                            w.delete.len(),
                            w.keep_from.as_deref().unwrap_or("-")
                        );
                    }
                    _ => {
                        out += &format!(
                            "  keep all WAL of {} ({})\n",
                            w.member,
                            w.keep_from
                                .as_deref()
                                .map_or("no backup to anchor to".to_string(), |k| format!(
                                    "keep from {k}"
                                ))
                        );
                    }
                }
            }
        }
        if self.is_empty() {
            out += "nothing to delete\n";
        }
        out
    }
}

/// Carries out a plan: deletes the backups (their objects follow through the backup
/// controller's finalizer), then the restore point records and the WAL no remaining backup
/// needs; every deletion is an Event on the cluster.
pub async fn execute(
    client: &Client,
    cluster: &SGShardedCluster,
    plan: &RetentionPlan,
) -> Result<(), RetentionError> {
    let ns = cluster.namespace().unwrap_or_default();
    let backups: Api<SGShardedBackup> = Api::namespaced(client.clone(), &ns);
    let event = |reason: &'static str, message: String| async move {
        events::record(client, cluster, EventType::Normal, reason, &message).await;
    };
    for e in &plan.entries {
        for b in &e.delete {
            if backups.get_opt(b).await?.is_some() {
                backups.delete(b, &DeleteParams::default()).await?;
            }
            event(
                "RetentionDeleted",
                format!(
                    "backups[{}]: deleted SGShardedBackup {b} (retention {} managed backups)",
                    e.entry, e.retention
                ),
            )
            .await;
        }
        if let (Some(first), Some(last)) = (e.restore_points.first(), e.restore_points.last()) {
            for dest in &e.record_dests {
                let failed = |location: String, err: StorageError| RetentionError::Objects {
                    member: "restore point records".into(),
                    location,
                    cause: err.into(),
                };
                let records =
                    Records::open(dest).map_err(|err| failed(dest.prefix.clone(), err))?;
                for rp in &e.restore_points {
                    records
                        .delete_restore_point(rp)
                        .await
                        .map_err(|err| failed(records.describe(), err))?;
                }
            }
            event(
                "RestorePointsDeleted",
                format!(
                    "backups[{}]: deleted {} restore point record(s) no remaining backup reaches, {first} .. {last}",
                    e.entry,
                    e.restore_points.len(),
                ),
            )
            .await;
        }
        for w in &e.wal {
            let (Some(dest), Some(first), Some(last)) =
                (&w.dest, w.delete.first(), w.delete.last())
            else {
                continue;
            };
            let failed = |source: EngineError| RetentionError::Objects {
                member: w.member.clone(),
                location: w.location.clone(),
                cause: source,
            };
            let repo = Repo::open(dest).map_err(failed)?;
            prune::delete_wal(&repo, &w.delete).await.map_err(failed)?;
            event(
                "WalDeleted",
                format!(
                    "backups[{}] {}: deleted {} WAL file(s) {first} .. {last}, none needed by a remaining backup",
                    e.entry,
                    w.member,
                    w.delete.len(),
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// What a pass depends on among the resources: entries and the backups' states.
fn view(cluster: &SGShardedCluster, backups: &[SGShardedBackup]) -> String {
    let states: BTreeSet<String> = backups
        .iter()
        .map(|b| {
            let phase = b.status.as_ref().map(|s| s.process.status);
            format!(
                "{}:{phase:?}:{}:{}",
                b.name_any(),
                b.managed(),
                b.deleting()
            )
        })
        .collect();
    let entries = serde_json::to_string(cluster.spec.backups()).expect("spec serializes");
    format!("{entries}|{states:?}")
}

/// Per cluster uid, what the last complete pass saw; an unchanged view is not rescanned.
type Seen = Arc<Mutex<HashMap<String, String>>>;

/// One retention pass over `cluster`, again after `poll`.
async fn reconcile(
    cluster: Arc<SGShardedCluster>,
    ctx: Arc<Context>,
    poll: Duration,
    seen: Seen,
) -> Result<Action, RetentionError> {
    let uid = cluster.uid().unwrap_or_default();
    if cluster.metadata.deletion_timestamp.is_some() {
        seen.lock().expect("not poisoned").remove(&uid);
        return Ok(Action::await_change());
    }
    if cluster.spec.backups().is_empty() {
        return Ok(Action::await_change());
    }
    let (ns, name) = (cluster.namespace().unwrap_or_default(), cluster.name_any());
    let backups: Vec<SGShardedBackup> = ctx
        .api::<SGShardedBackup>(&ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.sg_sharded_cluster == name)
        .collect();
    let v = view(&cluster, &backups);
    if seen.lock().expect("not poisoned").get(&uid) == Some(&v) {
        return Ok(Action::requeue(poll));
    }
    let storages: Vec<ResolvedStorage> = lookup::cluster_storages(&ctx.client, &ns, &cluster.spec)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let plan = plan(&cluster, &backups, &storages).await?;
    execute(&ctx.client, &cluster, &plan).await?;
    if plan.entries.iter().all(|e| e.delete.is_empty()) {
        seen.lock().expect("not poisoned").insert(uid, v);
    }
    Ok(Action::requeue(poll))
}

/// The retention controller: a pass over every SGShardedCluster at least every poll of the
/// clock (at most 30 s).
pub fn controller(ctx: Arc<Context>) -> Running {
    let poll = ctx.clock.poll().min(Duration::from_secs(30));
    let seen = Seen::default();
    runner::running(
        "retention",
        runner::controller::<SGShardedCluster>(&ctx),
        move |cluster, ctx| reconcile(cluster, ctx, poll, seen.clone()),
        ctx,
    )
}

#[cfg(test)]
mod tests {
    use shardvault_api::shardedbackup::{RestorePoint, ShardedBackupSpec, ShardedBackupStatus};

    use super::*;
    use crate::incremental::tests::summary;

    /// A managed sharded backup of cluster `c` in entry 0, Completed, started (and its
    /// restore point taken) at minute `minute` of 2030-01-01.
    fn backup(name: &str, minute: u32) -> SGShardedBackup {
        let time = format!("2030-01-01T00:{minute:02}:00Z");
        let mut b = SGShardedBackup::new(
            name,
            ShardedBackupSpec {
                sg_sharded_cluster: "c".into(),
                managed_lifecycle: Some(true),
                timeout: None,
                max_retries: None,
                reconciliation_timeout: None,
            },
        );
        let mut status = ShardedBackupStatus::default();
        status.process.status = BackupPhase::Completed;
        status.process.timing.start = Some(time.clone());
        status.restore_point = Some(RestorePoint {
            name: format!("{name}-rp"),
            time,
            ..RestorePoint::default()
        });
        b.status = Some(status);
        b
    }

    fn annotated(mut b: SGShardedBackup, key: &str, value: &str) -> SGShardedBackup {
        b.annotations_mut().insert(key.into(), value.into());
        b
    }

    fn at(minute: u32) -> Option<Timestamp> {
        format!("2030-01-01T00:{minute:02}:00Z").parse().ok()
    }

    #[test]
    fn the_newest_managed_completed_backups_are_kept_and_the_older_deleted() {
        let all = [
            backup("b1", 1),
            backup("b3", 3),
            backup("b2", 2),
            backup("b4", 4),
        ];
        let ours: Vec<&SGShardedBackup> = all.iter().collect();
        let s = select(&ours, 0, 2, true, &[]);
        assert_eq!(s.keep, ["b4", "b3"]);
        assert_eq!(s.delete, ["b2", "b1"]);
        assert_eq!(s.floor, at(3), "no remaining backup reaches before b3");
        let all_kept = select(&ours, 0, 9, true, &[]);
        assert!(all_kept.delete.is_empty());
        assert_eq!(all_kept.floor, at(1));
    }

    #[test]
    fn running_unmanaged_imported_deleting_and_other_entries_are_never_deleted() {
        let mut running = backup("running", 0);
        running.status.as_mut().unwrap().process.status = BackupPhase::Running;
        let mut unmanaged = backup("unmanaged", 1);
        unmanaged.spec.managed_lifecycle = Some(false);
        let mut deleting = backup("deleting", 2);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(9).unwrap()),
        );
        let all = [
            running,
            unmanaged,
            deleting,
            annotated(backup("imported", 3), IMPORTED_ANNOTATION, "store"),
            annotated(backup("second-entry", 4), ENTRY_ANNOTATION, "1"),
            backup("old", 5),
            backup("new", 6),
        ];
        let ours: Vec<&SGShardedBackup> = all.iter().collect();
        let s = select(&ours, 0, 1, true, &[]);
        assert_eq!(
            (s.keep, s.delete),
            (vec!["new".to_string()], vec!["old".to_string()])
        );
        assert_eq!(
            s.floor,
            at(1),
            "the unmanaged backup keeps its restore points reachable"
        );
        let s = select(&ours, 0, 1, false, &[]);
        assert_eq!(s.floor, at(6), "retainWalsForUnmanagedLifecycle: false");
        let second = select(&ours, 1, 1, true, &[]);
        assert_eq!(
            (second.keep, second.floor),
            (vec!["second-entry".to_string()], at(4))
        );
    }

    /// `b` with member backups `<name>-coord` and `<name>-shard0`.
    fn with_members(mut b: SGShardedBackup) -> SGShardedBackup {
        let name = b.name_any();
        b.status.as_mut().unwrap().sg_backups =
            vec![format!("{name}-coord"), format!("{name}-shard0")];
        b
    }

    /// Both members' backups in storage: `(sharded name, its chain of sharded names)`.
    fn stored(chains: &[(&str, &[&str])]) -> Vec<Vec<BackupSummary>> {
        ["coord", "shard0"]
            .iter()
            .map(|m| {
                chains
                    .iter()
                    .map(|(b, chain)| {
                        let chain: Vec<String> = chain.iter().map(|c| format!("{c}-{m}")).collect();
                        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
                        summary(&format!("{b}-{m}"), &chain, 100)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_backup_a_kept_incremental_needs_is_kept_and_says_why() {
        let all: Vec<SGShardedBackup> = [("f1", 1), ("i1", 2), ("i2", 3), ("f2", 4), ("i3", 5)]
            .into_iter()
            .map(|(n, m)| with_members(backup(n, m)))
            .collect();
        let ours: Vec<&SGShardedBackup> = all.iter().collect();
        let storage = stored(&[
            ("f1", &[]),
            ("i1", &["f1"]),
            ("i2", &["f1", "i1"]),
            ("f2", &[]),
            ("i3", &["f2"]),
        ]);
        // Keeping two (i3, f2): the older chain goes whole.
        let s = select(&ours, 0, 2, true, &storage);
        assert_eq!(s.keep, ["i3", "f2"]);
        assert!(s.held.is_empty(), "{:?}", s.held);
        assert_eq!(s.delete, ["i2", "i1", "f1"]);
        // Keeping three (i3, f2, i2): i2's chain stays, and says why.
        let s = select(&ours, 0, 3, true, &storage);
        assert_eq!(s.keep, ["i3", "f2", "i2"]);
        assert!(s.delete.is_empty(), "{:?}", s.delete);
        let reasons: Vec<(String, String)> = s
            .held
            .iter()
            .map(|h| (h.backup.clone(), h.reason()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("i1".to_string(), "parent of i2".to_string()),
                ("f1".to_string(), "in the chain of i2".to_string()),
            ]
        );
        assert_eq!(s.floor, at(1), "the held backups keep their WAL too");
    }

    #[test]
    fn an_unmanaged_incremental_holds_its_managed_chain_and_a_deleted_one_does_not() {
        let mut manual = with_members(backup("manual", 3));
        manual.spec.managed_lifecycle = Some(false);
        let all = [
            with_members(backup("f1", 1)),
            with_members(backup("f2", 2)),
            manual,
            with_members(backup("f3", 4)),
        ];
        let ours: Vec<&SGShardedBackup> = all.iter().collect();
        let storage = stored(&[("f1", &[]), ("f2", &[]), ("manual", &["f2"]), ("f3", &[])]);
        let s = select(&ours, 0, 1, true, &storage);
        assert_eq!(s.keep, ["f3"]);
        assert_eq!(s.held.len(), 1);
        assert_eq!(
            (s.held[0].backup.as_str(), s.held[0].reason()),
            ("f2", "parent of manual".to_string())
        );
        assert_eq!(s.delete, ["f1"]);
        // An incremental being deleted needs nothing.
        let mut all = all;
        all[2].metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(9).unwrap()),
        );
        let ours: Vec<&SGShardedBackup> = all.iter().collect();
        let s = select(&ours, 0, 1, true, &storage);
        assert!(s.held.is_empty());
        assert_eq!(s.delete, ["f2", "f1"]);
    }

    #[test]
    fn the_plan_says_which_incremental_keeps_a_backup() {
        let plan = RetentionPlan {
            cluster: "c".into(),
            entries: vec![EntryPlan {
                entry: 0,
                retention: 1,
                keep: vec!["b6".into()],
                held: vec![Held {
                    backup: "b5".into(),
                    parent_of: vec!["b6".into()],
                    chain_of: Vec::new(),
                }],
                delete: vec!["b1".into()],
                snapshots: Vec::new(),
                retain_unmanaged_wal: true,
                wal: Vec::new(),
                restore_points: Vec::new(),
                record_dests: Vec::new(),
            }],
        };
        assert_eq!(
            plan.render(),
            "SGShardedCluster c\nbackups[0] (retention 1): keep 1 managed backup(s)\n  keep SGShardedBackup b5 (kept: parent of b6)\n  delete SGShardedBackup b1\n"
        );
    }

    #[test]
    fn a_member_backup_needs_its_wal_while_its_sharded_backup_stays() {
        let (kept, doomed) = (backup("kept", 1), backup("doomed", 0));
        let mut unmanaged = backup("unmanaged", 2);
        unmanaged.spec.managed_lifecycle = Some(false);
        let owner_of: HashMap<&str, &SGShardedBackup> = [
            ("kept-coord", &kept),
            ("doomed-coord", &doomed),
            ("unmanaged-coord", &unmanaged),
        ]
        .into();
        let delete = ["doomed".to_string()];
        assert!(counts(&owner_of, &delete, false, "kept-coord"));
        assert!(!counts(&owner_of, &delete, true, "doomed-coord"));
        assert!(counts(&owner_of, &delete, true, "unmanaged-coord"));
        assert!(!counts(&owner_of, &delete, false, "unmanaged-coord"));
        assert!(counts(&owner_of, &delete, true, "not-ours"));
    }
}
