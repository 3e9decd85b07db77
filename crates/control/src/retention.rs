//! Retention per `backups[]` entry: keep the newest `retention` Completed managed
//! SGShardedBackups of the entry, delete the older managed ones (their objects go with them,
//! through the backup controller's finalizer), then delete, per member, the WAL that no
//! remaining backup in the entry's storage needs.
//!
//! A backup in progress, an unmanaged or imported backup is never deleted; the WAL an
//! unmanaged backup needs is kept unless the entry says `retainWalsForUnmanagedLifecycle:
//! false`. WAL is compared by timeline and segment position: a file is deleted only when it
//! lies before the start segment of every backup still counted, on the same or an older
//! timeline. Timeline `.history` files are always kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::backup::BackupPhase;
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::secret::base64_decode;
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_api::shardedcluster::{DEFAULT_RETENTION, SGShardedCluster, ShardedClusterSpec};
use shardvault_pg::engine::manifest::list_backups;
use shardvault_pg::engine::prune::{self, WalPrune};
use shardvault_pg::engine::{EngineError, Repo};
use shardvault_storage::{Destination, StorageError};
use shardvault_store::EventType;

use crate::backup_controller::ENTRY_ANNOTATION;
use crate::destination::{
    ResolvedStorage, SecretLookup, cluster_destination, member_destinations, resolve_storage,
};
use crate::framework::{Action, Ctx, ReconcileError, Reconciler, is_deleting};
use crate::import::IMPORTED_ANNOTATION;
use crate::records::Records;
use crate::resources::{cluster_storages, name_of, namespace_of, spec_of, uid_of};

/// Why a retention plan could not be made or carried out.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The cluster's spec is unreadable.
    #[error("SGShardedCluster {cluster}: spec: {message}")]
    Spec {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
    /// A storage of a backups[] entry cannot be resolved.
    #[error("spec.configurations.backups[{entry}].sgObjectStorage: {message}")]
    Storage {
        /// Index of the entry.
        entry: usize,
        /// What is wrong and what to do.
        message: String,
    },
    /// Reading or deleting in a member's storage failed.
    #[error("{member} ({location}): {source}")]
    Objects {
        /// Member cluster name.
        member: String,
        /// Where its objects are.
        location: String,
        /// The failure.
        source: EngineError,
    },
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

/// The backups[] entry a sharded backup object belongs to (annotation, default 0).
pub fn entry_of(backup: &Value) -> usize {
    entry_index(
        backup
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ENTRY_ANNOTATION))
            .and_then(Value::as_str),
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
        entry_index(self.annotations().get(ENTRY_ANNOTATION).map(String::as_str))
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
    /// Completed managed backups beyond the retention, newest first.
    pub delete: Vec<String>,
    /// The oldest restore point a remaining backup restores to: restore point records
    /// older than it cannot be reached (None: no remaining completed backup).
    pub floor: Option<Timestamp>,
}

/// Selects, among a cluster's sharded backups `ours`, the `retention` newest Completed
/// managed backups of entry `entry` to keep and the older ones to delete; a backup in
/// progress, unmanaged or imported is never deleted.
pub fn select(
    ours: &[&SGShardedBackup],
    entry: usize,
    retention: usize,
    retain_unmanaged_wal: bool,
) -> Selection {
    let mut candidates: Vec<&SGShardedBackup> = ours
        .iter()
        .copied()
        .filter(|b| b.entry() == entry && b.managed() && b.completed() && !b.deleting())
        .collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.started()));
    let names = |bs: &[&SGShardedBackup]| bs.iter().map(|b| b.name_any()).collect::<Vec<_>>();
    let (kept, deleted) = candidates.split_at(retention.min(candidates.len()));
    let (keep, delete) = (names(kept), names(deleted));
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
        delete,
        floor,
    }
}

fn records_err(entry: usize, err: StorageError) -> RetentionError {
    RetentionError::Objects {
        member: "restore point records".into(),
        location: format!("backups[{entry}]"),
        source: err.into(),
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
    // Which sharded backup each member backup (SGBackup name) belongs to.
    let owner_of: HashMap<&str, &SGShardedBackup> = ours
        .iter()
        .flat_map(|b| {
            b.status
                .iter()
                .flat_map(|s| &s.sg_backups)
                .map(move |m| (m.as_str(), *b))
        })
        .collect();
    let dests = member_destinations(name, ns, spec, storages);
    let members = spec.member_names(name);
    let mut entries = Vec::new();
    for (e, entry) in spec.backups().iter().enumerate() {
        let retention = entry.retention.unwrap_or(DEFAULT_RETENTION).max(1) as usize;
        let retain_unmanaged_wal = entry.retain_wals_for_unmanaged_lifecycle != Some(false);
        let Selection {
            keep,
            delete,
            floor,
        } = select(&ours, e, retention, retain_unmanaged_wal);
        let mut wal = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let dest = dests[i][e].clone();
            let fail = |source: EngineError| RetentionError::Objects {
                member: member.clone(),
                location: format!("backups[{e}]"),
                source,
            };
            let repo = Repo::open(&dest).map_err(fail)?;
            let location = repo.store.describe();
            let starts: Vec<String> = list_backups(&repo)
                .await
                .map_err(fail)?
                .into_iter()
                .filter(|m| counts(&owner_of, &delete, retain_unmanaged_wal, &m.name))
                .map(|m| m.start_wal_file)
                .collect();
            let files = if starts.is_empty() {
                Vec::new()
            } else {
                prune::list_wal(&repo).await.map_err(fail)?
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
/// controller's finalizer), then the WAL; every deletion is an Event on the cluster.
pub async fn execute(
    ctx: &Ctx,
    cluster: &Value,
    plan: &RetentionPlan,
) -> Result<(), ReconcileError> {
    let ns = namespace_of(cluster);
    for e in &plan.entries {
        for b in &e.delete {
            ctx.delete(Kind::SGShardedBackup, ns, b).await?;
            ctx.event(
                cluster,
                EventType::Normal,
                "RetentionDeleted",
                &format!(
                    "backups[{}]: deleted SGShardedBackup {b} (retention {} managed backups)",
                    e.entry, e.retention
                ),
            )
            .await;
        }
        if !e.restore_points.is_empty() {
            for dest in &e.record_dests {
                let records =
                    Records::open(dest).map_err(|err| ReconcileError::new("StorageError", err))?;
                for rp in &e.restore_points {
                    records.delete_restore_point(rp).await.map_err(|err| {
                        ReconcileError::new(
                            "RetentionFailed",
                            format!(
                                "{}: deleting restore point record {rp}: {err}",
                                records.describe()
                            ),
                        )
                    })?;
                }
            }
            ctx.event(
                cluster,
                EventType::Normal,
                "RestorePointsDeleted",
                &format!(
                    "backups[{}]: deleted {} restore point record(s) no remaining backup reaches, {} .. {}",
                    e.entry,
                    e.restore_points.len(),
                    e.restore_points[0],
                    e.restore_points[e.restore_points.len() - 1]
                ),
            )
            .await;
        }
        for w in e.wal.iter().filter(|w| !w.delete.is_empty()) {
            let Some(dest) = &w.dest else { continue };
            let repo = Repo::open(dest).map_err(|err| ReconcileError::new("StorageError", err))?;
            prune::delete_wal(&repo, &w.delete).await.map_err(|err| {
                ReconcileError::new(
                    "RetentionFailed",
                    format!("{} ({}): deleting WAL: {err}", w.member, w.location),
                )
            })?;
            ctx.event(
                cluster,
                EventType::Normal,
                "WalDeleted",
                &format!(
                    "backups[{}] {}: deleted {} WAL file(s) {} .. {}, none needed by a remaining backup",
                    e.entry,
                    w.member,
                    w.delete.len(),
                    w.delete[0],
                    w.delete[w.delete.len() - 1]
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// Runs retention on every SGShardedCluster.
pub struct RetentionController {
    poll: Duration,
    /// Per cluster uid, what the last complete pass saw; an unchanged view is not rescanned.
    seen: Arc<Mutex<HashMap<String, String>>>,
}

impl RetentionController {
    /// A controller that looks at each cluster again after `poll`.
    pub fn new(poll: Duration) -> RetentionController {
        RetentionController {
            poll,
            seen: Arc::default(),
        }
    }
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

/// A stored object as its typed resource.
fn typed<K: serde::de::DeserializeOwned>(obj: &Value) -> Result<K, ReconcileError> {
    serde_json::from_value(obj.clone()).map_err(|e| {
        ReconcileError::new(
            "InvalidObject",
            format!(
                "{} {}: {e}",
                obj["kind"].as_str().unwrap_or("object"),
                name_of(obj)
            ),
        )
    })
}

impl Reconciler for RetentionController {
    fn kind(&self) -> Kind {
        Kind::SGShardedCluster
    }

    fn reconcile(
        &self,
        obj: Value,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
        let (poll, seen) = (self.poll, self.seen.clone());
        Box::pin(async move {
            if is_deleting(&obj) {
                seen.lock().expect("not poisoned").remove(uid_of(&obj));
                return Ok(Action::AwaitChange);
            }
            let spec: ShardedClusterSpec = spec_of(&obj)?;
            if spec.backups().is_empty() {
                return Ok(Action::AwaitChange);
            }
            let ns = namespace_of(&obj);
            let cluster: SGShardedCluster = typed(&obj)?;
            let backups = ctx
                .list(Kind::SGShardedBackup, Some(ns), "")
                .await?
                .iter()
                .map(typed::<SGShardedBackup>)
                .filter(|b| {
                    b.as_ref()
                        .map_or(true, |b| b.spec.sg_sharded_cluster == name_of(&obj))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let v = view(&cluster, &backups);
            if seen.lock().expect("not poisoned").get(uid_of(&obj)) == Some(&v) {
                return Ok(Action::Requeue(poll));
            }
            let storages: Vec<ResolvedStorage> = cluster_storages(&ctx, ns, &spec)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let plan = plan(&cluster, &backups, &storages)
                .await
                .map_err(|e| ReconcileError::new("RetentionFailed", e))?;
            execute(&ctx, &obj, &plan).await?;
            if plan.entries.iter().all(|e| e.delete.is_empty()) {
                seen.lock()
                    .expect("not poisoned")
                    .insert(uid_of(&obj).to_string(), v);
            }
            Ok(Action::Requeue(poll))
        })
    }
}

#[cfg(test)]
mod tests {
    use shardvault_api::shardedbackup::{RestorePoint, ShardedBackupSpec, ShardedBackupStatus};

    use super::*;

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
        let s = select(&ours, 0, 2, true);
        assert_eq!(s.keep, ["b4", "b3"]);
        assert_eq!(s.delete, ["b2", "b1"]);
        assert_eq!(s.floor, at(3), "no remaining backup reaches before b3");
        let all_kept = select(&ours, 0, 9, true);
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
        let s = select(&ours, 0, 1, true);
        assert_eq!(
            (s.keep, s.delete),
            (vec!["new".to_string()], vec!["old".to_string()])
        );
        assert_eq!(
            s.floor,
            at(1),
            "the unmanaged backup keeps its restore points reachable"
        );
        let s = select(&ours, 0, 1, false);
        assert_eq!(s.floor, at(6), "retainWalsForUnmanagedLifecycle: false");
        let second = select(&ours, 1, 1, true);
        assert_eq!(
            (second.keep, second.floor),
            (vec!["second-entry".to_string()], at(4))
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
