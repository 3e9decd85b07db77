//! The SGShardedBackup controller: takes the cluster's backup lock, creates one SGBackup per
//! member, runs the sharded backup (member backups, cluster-wide restore point, archive
//! proof) in a worker with `timeout` and `maxRetries`, and writes status and the storage
//! catalog record. Deleting a sharded backup removes its objects from storage, once no
//! incremental that stays needs it ([`held`]). Planning is
//! in [`plan`], the member SGBackups in [`children`], the worker in [`worker`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use shardvault_api::backup::{BackupPhase, SGBackup};
use shardvault_api::shardedbackup::{
    BACKUP_TYPE_ANNOTATION, DEFAULT_MAX_RETRIES, SGShardedBackup, SHARDED_BACKUP_LABEL,
    ShardedBackupStatus,
};
use shardvault_api::shardedcluster::SGShardedCluster;
use shardvault_pg::engine::Repo;
use shardvault_pg::engine::prune::delete_backup;

use crate::context::Context;
use crate::destination::cluster_destination;
use crate::events::{self, EventType};
use crate::import::{self, IMPORTED_ANNOTATION, IMPORTED_PATH_ANNOTATION};
use crate::lookup::{self, LookupError};
use crate::records::Records;
use crate::resources::{BackupLocationError, backup_destination};
use crate::runner::{self, ReconcileFailure, Running};
use crate::status;

mod children;
mod held;
mod plan;
mod progress;
mod worker;

use children::ensure_children;
use plan::plan_backup;
use worker::{Retries, run_worker};

/// Finalizer that removes a sharded backup's objects from storage.
pub const FINALIZER: &str = "shardvault.io/backup-objects";

/// Annotation choosing the backups[] entry (index) a manual backup goes to (default 0).
pub const ENTRY_ANNOTATION: &str = "shardvault.io/backup-entry";

/// How often a running backup, or one waiting for its cluster, is looked at again.
const RUNNING_EVERY: Duration = Duration::from_secs(5);

/// How long a backup waiting for its cluster (not Ready, or another backup running) waits.
const WAITING_RETRY: Duration = Duration::from_secs(3);

/// Why a sharded backup cannot be planned, or its objects not deleted.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The API could not be read or written.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// A referenced storage or Secret is missing or unusable.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A member backup's recorded location cannot be used.
    #[error(transparent)]
    Located(#[from] BackupLocationError),
    /// The cluster's members cannot be observed (not started yet, or stopped).
    #[error("SGShardedCluster {cluster}: {message}")]
    ClusterNotRunning {
        /// The cluster.
        cluster: String,
        /// What could not be read.
        message: String,
    },
    /// The cluster has nowhere to back up to.
    #[error(
        "SGShardedCluster {0} has no spec.configurations.backups: add one with an sgObjectStorage"
    )]
    NoBackupConfiguration(String),
    /// The backups[] entry annotation is not a valid index.
    #[error("metadata.annotations[{ENTRY_ANNOTATION:?}]: {0}")]
    InvalidAnnotation(String),
    /// The backup-type annotation is neither full nor incremental.
    #[error("metadata.annotations[{BACKUP_TYPE_ANNOTATION:?}]: {0}")]
    InvalidBackupType(String),
    /// Storage failed while deleting the backup's objects.
    #[error("{0}")]
    Storage(String),
    /// Deleting it would break an incremental that stays.
    #[error(
        "SGShardedBackup {needed_by} is an incremental over it and restores only with it: delete {needed_by} too, and both go"
    )]
    NeededByIncremental {
        /// The incremental that needs it.
        needed_by: String,
    },
}

impl ReconcileFailure for BackupError {
    fn reason(&self) -> &str {
        match self {
            BackupError::Api(_) => "ApiError",
            BackupError::Lookup(e) => e.reason(),
            BackupError::Located(e) => e.reason(),
            BackupError::ClusterNotRunning { .. } => "ClusterNotRunning",
            BackupError::NoBackupConfiguration(_) => "NoBackupConfiguration",
            BackupError::InvalidAnnotation(_) | BackupError::InvalidBackupType(_) => {
                "InvalidAnnotation"
            }
            BackupError::Storage(_) => "StorageError",
            BackupError::NeededByIncremental { .. } => "DeletionHeld",
        }
    }
}

impl BackupError {
    pub(super) fn storage(e: impl std::fmt::Display) -> BackupError {
        BackupError::Storage(e.to_string())
    }
}

/// Running backup workers by uid, and the lock under which a backup decides to start (so
/// two backups of one cluster never both see the other not running yet).
#[derive(Clone, Default)]
struct Workers {
    running: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
    starting: Arc<tokio::sync::Mutex<()>>,
}

impl Workers {
    /// True when the worker of `uid` is still at work.
    fn alive(&self, uid: &str) -> bool {
        self.running
            .lock()
            .expect("not poisoned")
            .get(uid)
            .is_some_and(|w| !w.is_finished())
    }

    /// Stops the worker of `uid` and waits until it is gone (its node work is killed with
    /// it), so nothing is written after this returns.
    async fn stop(&self, uid: &str) {
        let worker = self.running.lock().expect("not poisoned").remove(uid);
        if let Some(w) = worker {
            w.abort();
            let _ = w.await;
        }
    }
}

/// The sharded backup controller, ready to run.
pub fn controller(ctx: Arc<Context>) -> Running {
    let workers = Workers::default();
    // A change to an incremental (its deletion above all) looks at its parent again, so a
    // parent held for it goes as soon as it may.
    let parents = runner::controller::<SGShardedBackup>(&ctx).watches(
        Api::<SGShardedBackup>::all(ctx.client.clone()),
        watcher::Config::default(),
        |b| {
            let ns = b.namespace()?;
            held::parent(&b).map(|p| ObjectRef::new(p).within(&ns))
        },
    );
    runner::running(
        "backups",
        parents,
        move |obj, ctx| reconcile(obj, ctx, workers.clone()),
        ctx,
    )
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.namespace().unwrap_or_else(|| "default".into())
}

fn phase(obj: &SGShardedBackup) -> BackupPhase {
    obj.status
        .as_ref()
        .map_or(BackupPhase::Pending, |s| s.process.status)
}

/// Reconciles one SGShardedBackup: fills an imported one from its record, starts (or
/// restarts) the worker of one of ours, removes the objects of one being deleted.
async fn reconcile(
    obj: Arc<SGShardedBackup>,
    ctx: Arc<Context>,
    workers: Workers,
) -> Result<Action, finalizer::Error<BackupError>> {
    let api: Api<SGShardedBackup> = ctx.api(&namespace_of(&*obj));
    if let Some(storage) = obj.annotations().get(IMPORTED_ANNOTATION).cloned() {
        // Found in storage, not taken here: nothing to run, and its objects are not ours
        // to delete; its status comes from its record.
        if obj.meta().deletion_timestamp.is_some() || phase(&obj) != BackupPhase::Pending {
            return Ok(Action::await_change());
        }
        return fill_imported(&ctx, &api, &obj, &storage)
            .await
            .map_err(finalizer::Error::ApplyFailed);
    }
    finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(&obj, &ctx, &api, &workers).await,
            Event::Cleanup(obj) => {
                let all = api.list(&ListParams::default()).await?.items;
                if let Some(b) = held::needed_by(&obj, &all) {
                    return Err(BackupError::NeededByIncremental {
                        needed_by: b.name_any(),
                    });
                }
                workers.stop(&obj.uid().unwrap_or_default()).await;
                delete_objects(&ctx, &obj).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
}

/// Starts the backup's worker once its cluster is Ready and no other backup of it runs.
async fn apply(
    cached: &SGShardedBackup,
    ctx: &Arc<Context>,
    api: &Api<SGShardedBackup>,
    workers: &Workers,
) -> Result<Action, BackupError> {
    let uid = cached.uid().unwrap_or_default();
    if matches!(phase(cached), BackupPhase::Completed | BackupPhase::Failed) {
        return Ok(Action::await_change());
    }
    if workers.alive(&uid) {
        return Ok(Action::requeue(RUNNING_EVERY));
    }
    let start_guard = workers.starting.lock().await;
    // The cache may lag behind what a worker just wrote: decide on the stored object.
    let Some(obj) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if obj.uid() != cached.uid() {
        return Ok(Action::await_change());
    }
    let ns = namespace_of(&obj);
    let mut status = obj.status.clone().unwrap_or_default();
    match status.process.status {
        BackupPhase::Completed | BackupPhase::Failed => return Ok(Action::await_change()),
        BackupPhase::Running => {
            // Running with no worker here: the daemon restarted mid-backup. That attempt is
            // lost; its objects are removed and the backup starts again as a new attempt.
            events::record(
                &ctx.client,
                &obj,
                EventType::Warning,
                "Interrupted",
                "the backup was interrupted (daemon restart); retrying",
            )
            .await;
        }
        BackupPhase::Pending => {}
    }
    let cluster_name = obj.spec.sg_sharded_cluster.clone();
    let clusters: Api<SGShardedCluster> = ctx.api(&ns);
    let Some(cluster) = clusters.get_opt(&cluster_name).await? else {
        status.process.status = BackupPhase::Failed;
        status.process.failure = Some(format!(
            "spec.sgShardedCluster: SGShardedCluster {cluster_name:?} not found in namespace {ns}"
        ));
        set_status(api, &obj, &status).await?;
        return Ok(Action::await_change());
    };
    if status.process.status == BackupPhase::Pending {
        let backups = api.list(&ListParams::default()).await?.items;
        if let Some(why) = waiting_for(&obj, &cluster, &backups) {
            status.process.failure = Some(format!("waiting: {why}"));
            set_status(api, &obj, &status).await?;
            return Ok(Action::requeue(WAITING_RETRY));
        }
    }
    let plan = match plan_backup(ctx, &obj, &cluster).await {
        Ok(p) => p,
        // The cluster was Ready a moment ago: its state being unreadable now passes.
        Err(e @ BackupError::ClusterNotRunning { .. })
            if status.process.status == BackupPhase::Pending =>
        {
            status.process.failure = Some(format!("waiting: {e}"));
            set_status(api, &obj, &status).await?;
            return Ok(Action::requeue(WAITING_RETRY));
        }
        Err(e) => {
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(e.to_string());
            set_status(api, &obj, &status).await?;
            events::record(
                &ctx.client,
                &obj,
                EventType::Warning,
                e.reason(),
                &e.message(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let attempt = status.attempts.unwrap_or(0) + 1;
    status.process.status = BackupPhase::Running;
    status.process.failure = None;
    status.process.timing.start.get_or_insert_with(now);
    status.attempts = Some(attempt);
    status.sg_backups = plan.job.members.iter().map(|m| m.backup.clone()).collect();
    set_status(api, &obj, &status).await?;
    drop(start_guard);
    ensure_children(ctx, &obj, &plan).await?;
    let max_retries = obj.spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES).max(0);
    let timeout = obj
        .spec
        .timeout
        .as_ref()
        .and_then(|t| t.seconds().ok())
        .map(Duration::from_secs);
    let worker = tokio::spawn(run_worker(
        ctx.clone(),
        obj,
        plan,
        Retries {
            first_attempt: attempt,
            max_retries,
            timeout,
        },
    ));
    workers
        .running
        .lock()
        .expect("not poisoned")
        .insert(uid, worker);
    Ok(Action::requeue(RUNNING_EVERY))
}

/// Why pending backup `obj` of `cluster` cannot start now (`None`: it can): the cluster's
/// backup lock is held by another of `backups` that runs, or the cluster is not Ready.
fn waiting_for(
    obj: &SGShardedBackup,
    cluster: &SGShardedCluster,
    backups: &[SGShardedBackup],
) -> Option<&'static str> {
    let others_running = backups.iter().any(|b| {
        b.uid() != obj.uid()
            && b.spec.sg_sharded_cluster == obj.spec.sg_sharded_cluster
            && phase(b) == BackupPhase::Running
    });
    let ready = cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    if others_running {
        Some("another sharded backup of this cluster is running")
    } else if !ready {
        Some("the cluster is not Ready yet")
    } else {
        None
    }
}

/// Writes the status of an imported sharded backup and of its SGBackups from its record in
/// SGObjectStorage `storage` (at the prefix its annotation names), once the importer has
/// created every SGBackup.
async fn fill_imported(
    ctx: &Context,
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    storage: &str,
) -> Result<Action, BackupError> {
    let (ns, name) = (namespace_of(obj), obj.name_any());
    let field = format!("metadata.annotations[{IMPORTED_ANNOTATION:?}]");
    let secrets = lookup::secrets(&ctx.client, &ns).await?;
    let (spec, resolved) = lookup::storage(&ctx.client, &secrets, &ns, storage, &field).await?;
    let prefix = obj
        .annotations()
        .get(IMPORTED_PATH_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let dest = shardvault_storage::Destination {
        storage: resolved.config,
        prefix: prefix.clone(),
        compression: Default::default(),
        performance: Default::default(),
        encryption: resolved.encryption,
    };
    let read = async { Records::open(&dest)?.backup(&name).await };
    let record = match read.await {
        Ok(r) => r,
        Err(e) => {
            let mut status = ShardedBackupStatus::default();
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(format!(
                "the record of this imported backup cannot be read from SGObjectStorage {storage}: {e}"
            ));
            set_status(api, obj, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let imported = import::statuses(&record, &prefix, storage, &spec);
    let members: Api<SGBackup> = ctx.api(&ns);
    let mut children = Vec::new();
    for (member, status) in &imported.members {
        match members.get_opt(member).await? {
            Some(child) => children.push((child, status)),
            // The importer creates the SGBackups right after this object.
            None => return Ok(Action::requeue(Duration::from_millis(300))),
        }
    }
    for (child, status) in children {
        status::replace(&members, &child, &child.status, &Some(status.clone())).await?;
    }
    set_status(api, obj, &imported.backup).await?;
    Ok(Action::await_change())
}

/// Replaces the status of `obj` (as it was read) with `new`, unless they are equal.
async fn set_status(
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    new: &ShardedBackupStatus,
) -> Result<(), kube::Error> {
    status::replace(api, obj, &obj.status, &Some(new.clone())).await
}

/// Deletes the member backups and the catalog record of a sharded backup being deleted.
async fn delete_objects(ctx: &Context, obj: &SGShardedBackup) -> Result<(), BackupError> {
    let ns = namespace_of(obj);
    let name = obj.name_any();
    let secrets = lookup::secrets(&ctx.client, &ns).await?;
    let children: Api<SGBackup> = ctx.api(&ns);
    let selector = format!("{SHARDED_BACKUP_LABEL}={name}");
    for child in children
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        let Some(config) = child
            .status
            .as_ref()
            .and_then(|s| s.sg_backup_config.as_ref())
        else {
            continue;
        };
        if let Some(snapshot) = child
            .status
            .as_ref()
            .and_then(|s| s.volume_snapshot.as_ref())
        {
            ctx.runtime
                .delete_snapshot(&ns, &snapshot.name)
                .map_err(BackupError::storage)?;
        }
        let dest = backup_destination(config, &secrets, &child.name_any())?;
        let repo = Repo::open(&dest).map_err(BackupError::storage)?;
        delete_backup(&repo, &child.name_any())
            .await
            .map_err(BackupError::storage)?;
    }
    // The record is found from the backup itself, so it goes even when the cluster or its
    // backups[] entry is gone; backups of older versions fall back to the cluster's entries.
    if let Some(config) = obj
        .status
        .as_ref()
        .and_then(|s| s.sharded_record_config.as_ref())
    {
        let dest = backup_destination(config, &secrets, &name)?;
        return Records::open(&dest)
            .map_err(BackupError::storage)?
            .delete_backup(&name)
            .await
            .map_err(BackupError::storage);
    }
    let clusters: Api<SGShardedCluster> = ctx.api(&ns);
    if let Some(cluster) = clusters.get_opt(&obj.spec.sg_sharded_cluster).await? {
        let cspec = &cluster.spec;
        let storages = lookup::cluster_storages(&ctx.client, &ns, cspec).await?;
        for (entry, (_, storage)) in cspec.backups().iter().zip(storages) {
            Records::open(&cluster_destination(
                entry,
                &storage,
                &ns,
                &cluster.name_any(),
            ))
            .map_err(BackupError::storage)?
            .delete_backup(&name)
            .await
            .map_err(BackupError::storage)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shardvault_api::shardedbackup::ShardedBackupSpec;

    use super::*;

    fn backup(name: &str, cluster: &str, phase: Option<BackupPhase>) -> SGShardedBackup {
        let spec: ShardedBackupSpec =
            serde_json::from_value(json!({ "sgShardedCluster": cluster }))
                .unwrap_or_else(|e| panic!("spec fixture: {e}"));
        let mut b = SGShardedBackup::new(name, spec);
        b.metadata.uid = Some(format!("uid-{name}"));
        b.status = phase.map(|p| {
            let mut s = ShardedBackupStatus::default();
            s.process.status = p;
            s
        });
        b
    }

    fn cluster(ready: &str) -> SGShardedCluster {
        serde_json::from_value(json!({
            "apiVersion": "stackgres.io/v1alpha1", "kind": "SGShardedCluster",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"type": "ddp", "database": "db", "postgres": {"version": "15"},
                     "coordinator": {"instances": 1}, "shards": {"clusters": 2, "instancesPerCluster": 1}},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap_or_else(|e| panic!("cluster fixture: {e}"))
    }

    #[test]
    fn a_backup_starts_only_on_a_ready_cluster_with_no_other_backup_running() {
        let me = backup("b", "c", None);
        assert_eq!(
            waiting_for(&me, &cluster("True"), std::slice::from_ref(&me)),
            None
        );
        assert_eq!(
            waiting_for(&me, &cluster("False"), &[]),
            Some("the cluster is not Ready yet")
        );
        let others = [
            backup("done", "c", Some(BackupPhase::Completed)),
            backup("elsewhere", "d", Some(BackupPhase::Running)),
            backup("waiting", "c", Some(BackupPhase::Pending)),
        ];
        assert_eq!(
            waiting_for(&me, &cluster("True"), &others),
            None,
            "only a running backup of the same cluster holds its lock"
        );
        let running = backup("a", "c", Some(BackupPhase::Running));
        assert_eq!(
            waiting_for(&me, &cluster("True"), &[running]),
            Some("another sharded backup of this cluster is running")
        );
        let mut me_running = me.clone();
        me_running.status = backup("b", "c", Some(BackupPhase::Running)).status;
        assert_eq!(
            waiting_for(&me, &cluster("True"), &[me_running]),
            None,
            "a backup never waits for itself"
        );
    }

    #[test]
    fn backup_errors_keep_their_event_reasons() {
        let e = BackupError::NoBackupConfiguration("c".into());
        assert_eq!(e.reason(), "NoBackupConfiguration");
        assert!(e.message().contains("spec.configurations.backups"), "{e}");
        let inner = BackupLocationError::Invalid {
            backup: "b".into(),
            what: "has no prefix".into(),
        };
        let message = inner.to_string();
        let e = BackupError::from(inner);
        assert_eq!((e.reason(), e.message()), ("InvalidBackup", message));
    }
}
