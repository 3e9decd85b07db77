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
use serde::Serialize;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::secret::base64_decode;
use shardvault_api::shardedcluster::{DEFAULT_RETENTION, ShardedClusterSpec};
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

/// The backups[] entry a sharded backup belongs to (annotation, default 0).
pub fn entry_of(backup: &Value) -> usize {
    backup
        .pointer(&format!(
            "/metadata/annotations/{}",
            ENTRY_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn managed(backup: &Value) -> bool {
    backup.pointer("/spec/managedLifecycle") == Some(&Value::Bool(true))
        && backup
            .pointer(&format!(
                "/metadata/annotations/{}",
                IMPORTED_ANNOTATION.replace('/', "~1")
            ))
            .is_none()
}

fn completed(backup: &Value) -> bool {
    backup
        .pointer("/status/process/status")
        .and_then(Value::as_str)
        == Some("Completed")
}

/// When a backup started, for ordering (creation time when it has not started).
fn started(backup: &Value) -> jiff::Timestamp {
    [
        "/status/process/timing/start",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| backup.pointer(p)?.as_str()?.parse().ok())
    .unwrap_or_default()
}

fn records_err(entry: usize, err: StorageError) -> RetentionError {
    RetentionError::Objects {
        member: "restore point records".into(),
        location: format!("backups[{entry}]"),
        source: err.into(),
    }
}

/// Whether member backup `member_backup` still needs its WAL.
fn counts(
    owner_of: &HashMap<&str, &Value>,
    delete: &[String],
    retain_unmanaged_wal: bool,
    member_backup: &str,
) -> bool {
    match owner_of.get(member_backup) {
        Some(b) if is_deleting(b) || delete.iter().any(|d| d == name_of(b)) => false,
        Some(b) if managed(b) => true,
        // Unmanaged, imported, or not ours at all: its WAL stays unless told otherwise.
        _ => retain_unmanaged_wal,
    }
}

/// Plans one retention pass over `cluster`, given the SGShardedBackups of its namespace and
/// the resolved storage of each backups[] entry. Reads storage, deletes nothing.
pub async fn plan(
    cluster: &Value,
    backups: &[Value],
    storages: &[ResolvedStorage],
) -> Result<RetentionPlan, RetentionError> {
    let name = name_of(cluster);
    let ns = namespace_of(cluster);
    let spec: ShardedClusterSpec =
        serde_json::from_value(cluster["spec"].clone()).map_err(|e| RetentionError::Spec {
            cluster: name.to_string(),
            message: e.to_string(),
        })?;
    let ours: Vec<&Value> = backups
        .iter()
        .filter(|b| b.pointer("/spec/sgShardedCluster").and_then(Value::as_str) == Some(name))
        .collect();
    // Which sharded backup each member backup (SGBackup name) belongs to.
    let owner_of: HashMap<&str, &Value> = ours
        .iter()
        .flat_map(|b| {
            b.pointer("/status/sgBackups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(move |m| (m, *b))
        })
        .collect();
    let dests = member_destinations(name, ns, &spec, storages);
    let members = spec.member_names(name);
    let mut entries = Vec::new();
    for (e, entry) in spec.backups().iter().enumerate() {
        let retention = entry.retention.unwrap_or(DEFAULT_RETENTION).max(1) as usize;
        let mut candidates: Vec<&Value> = ours
            .iter()
            .copied()
            .filter(|b| entry_of(b) == e && managed(b) && completed(b) && !is_deleting(b))
            .collect();
        candidates.sort_by_key(|b| std::cmp::Reverse(started(b)));
        let keep: Vec<String> = candidates
            .iter()
            .take(retention)
            .map(|b| name_of(b).to_string())
            .collect();
        let delete: Vec<String> = candidates
            .iter()
            .skip(retention)
            .map(|b| name_of(b).to_string())
            .collect();
        let retain_unmanaged_wal = entry.retain_wals_for_unmanaged_lifecycle != Some(false);
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
        let floor = ours
            .iter()
            .filter(|b| {
                entry_of(b) == e
                    && completed(b)
                    && !is_deleting(b)
                    && !delete.iter().any(|d| d == name_of(b))
                    && (managed(b) || retain_unmanaged_wal)
            })
            .filter_map(|b| {
                b.pointer("/status/restorePoint/time")?
                    .as_str()?
                    .parse::<jiff::Timestamp>()
                    .ok()
            })
            .min();
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
        entries.push(EntryPlan {
            entry: e,
            retention,
            keep,
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
fn view(cluster: &Value, backups: &[Value]) -> String {
    let states: BTreeSet<String> = backups
        .iter()
        .map(|b| {
            format!(
                "{}:{}:{}:{}",
                name_of(b),
                b.pointer("/status/process/status").unwrap_or(&Value::Null),
                managed(b),
                is_deleting(b)
            )
        })
        .collect();
    format!("{}|{states:?}", cluster["spec"]["configurations"])
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
            let backups: Vec<Value> = ctx
                .list(Kind::SGShardedBackup, Some(ns), "")
                .await?
                .into_iter()
                .filter(|b| {
                    b.pointer("/spec/sgShardedCluster").and_then(Value::as_str)
                        == Some(name_of(&obj))
                })
                .collect();
            let v = view(&obj, &backups);
            if seen.lock().expect("not poisoned").get(uid_of(&obj)) == Some(&v) {
                return Ok(Action::Requeue(poll));
            }
            let storages: Vec<ResolvedStorage> = cluster_storages(&ctx, ns, &spec)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let plan = plan(&obj, &backups, &storages)
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
