//! The SGShardedBackup controller: takes the cluster's backup lock, creates one SGBackup per
//! member, runs the sharded backup (member backups, cluster-wide restore point, archive
//! proof) in a worker with `timeout` and `maxRetries`, and writes status and the storage
//! catalog record. Deleting a sharded backup removes its objects from storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use shardvault_api::backup::{BackupPhase, BackupSize, BackupSpec, BackupStatus, SGBackup};
use shardvault_api::shardedbackup::{
    DEFAULT_MAX_RETRIES, RestorePoint, SGShardedBackup, SHARDED_BACKUP_LABEL,
    ShardedBackupInformation, ShardedBackupStatus,
};
use shardvault_api::shardedcluster::{SGShardedCluster, ShardingType};
use shardvault_pg::engine::Repo;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::engine::prune::delete_backup;
use shardvault_pg::runtime::ClusterId;
use shardvault_pg::runtime::cluster::InstanceState;
use tokio::sync::mpsc;

use crate::context::Context;
use crate::cut::CutMode;
use crate::destination::{cluster_destination, member_destinations};
use crate::events::{self, EventType};
use crate::framework::ReconcileError;
use crate::import::{self, IMPORTED_ANNOTATION, IMPORTED_PATH_ANNOTATION};
use crate::lookup::{self, LookupError};
use crate::records::{MemberRecord, Records, SHARDED_FORMAT, ShardedRecord};
use crate::resources::{backup_config, backup_destination};
use crate::runner::{self, ReconcileFailure, Running};
use crate::sharded_backup::{self, MemberJob, Progress, ShardedBackupJob};
use crate::snapshot_backup::{self, SnapshotSettings};
use crate::status;

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
    /// A member backup's recorded location cannot be used (its reason kept).
    #[error(transparent)]
    Located(#[from] ReconcileError),
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
    /// Storage failed while deleting the backup's objects.
    #[error("{0}")]
    Storage(String),
}

impl ReconcileFailure for BackupError {
    fn reason(&self) -> &str {
        match self {
            BackupError::Api(_) => "ApiError",
            BackupError::Lookup(e) => e.reason(),
            BackupError::Located(e) => &e.reason,
            BackupError::ClusterNotRunning { .. } => "ClusterNotRunning",
            BackupError::NoBackupConfiguration(_) => "NoBackupConfiguration",
            BackupError::InvalidAnnotation(_) => "InvalidAnnotation",
            BackupError::Storage(_) => "StorageError",
        }
    }

    fn message(&self) -> String {
        match self {
            BackupError::Located(e) => e.message.clone(),
            other => other.to_string(),
        }
    }
}

impl BackupError {
    fn storage(e: impl std::fmt::Display) -> BackupError {
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
    runner::running(
        runner::controller::<SGShardedBackup>(&ctx),
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

fn member_suffix(i: usize) -> String {
    if i == 0 {
        "coord".into()
    } else {
        format!("shard{}", i - 1)
    }
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
    let ready = cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let others_running = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|b| {
            b.uid() != obj.uid()
                && b.spec.sg_sharded_cluster == cluster_name
                && phase(b) == BackupPhase::Running
        });
    if status.process.status == BackupPhase::Pending && (!ready || others_running) {
        let why = if others_running {
            "another sharded backup of this cluster is running"
        } else {
            "the cluster is not Ready yet"
        };
        status.process.failure = Some(format!("waiting: {why}"));
        set_status(api, &obj, &status).await?;
        return Ok(Action::requeue(WAITING_RETRY));
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

/// Everything a worker needs about one sharded backup.
struct BackupPlan {
    job: ShardedBackupJob,
    sharding: ShardingType,
    managed: bool,
    configs: Vec<Value>,
    catalog_dest: shardvault_storage::Destination,
    /// `catalog_dest` in the shape of an `sgBackupConfig`, kept in status.
    catalog_config: Value,
    /// Set when the entry asks for volume snapshots (`useVolumeSnapshot`).
    snapshot: Option<SnapshotSettings>,
}

async fn plan_backup(
    ctx: &Context,
    obj: &SGShardedBackup,
    cluster: &SGShardedCluster,
) -> Result<BackupPlan, BackupError> {
    let ns = namespace_of(obj);
    let name = obj.name_any();
    let cluster_name = cluster.name_any();
    let cspec = &cluster.spec;
    if cspec.backups().is_empty() {
        return Err(BackupError::NoBackupConfiguration(cluster_name));
    }
    let entry_index: usize = obj
        .annotations()
        .get(ENTRY_ANNOTATION)
        .map(|v| {
            v.parse()
                .map_err(|_| BackupError::InvalidAnnotation(format!("{v:?} is not an index")))
        })
        .transpose()?
        .unwrap_or(0);
    let entry = cspec.backups().get(entry_index).ok_or_else(|| {
        BackupError::InvalidAnnotation(format!(
            "{entry_index}: the cluster has {} backups[] entries",
            cspec.backups().len()
        ))
    })?;
    let storages = lookup::cluster_storages(&ctx.client, &ns, cspec).await?;
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let dests = member_destinations(&cluster_name, &ns, cspec, &resolved);
    let id = ClusterId::new(&ns, &cluster_name);
    let endpoints = ctx
        .runtime
        .endpoints(&id)
        .map_err(|e| BackupError::ClusterNotRunning {
            cluster: cluster_name.clone(),
            message: e.to_string(),
        })?;
    let mut members = Vec::new();
    let mut configs = Vec::new();
    for (i, m) in endpoints.members.iter().enumerate() {
        let mut cfg = m.node_config.clone();
        let dest = dests[i][entry_index].clone();
        configs.push(backup_config(entry, &storages[entry_index].0, &dest.prefix));
        cfg.destinations = vec![dest];
        // Back up from a streaming replica when one runs, sparing the primary the reads.
        let mut backup_from = cfg.clone();
        if let Some(replica) = m
            .instances
            .iter()
            .skip(1)
            .find(|r| r.state == InstanceState::Running)
        {
            backup_from.port = replica.port;
            backup_from.pgdata = replica.pgdata.clone();
        }
        members.push(MemberJob {
            name: m.name.clone(),
            backup: format!("{name}-{}", member_suffix(i)),
            node_config: cfg,
            backup_from,
        });
    }
    let performance = crate::destination::entry_codec(entry).1;
    let sharding = cspec.sharding_type();
    let catalog_dest = cluster_destination(entry, &storages[entry_index].1, &ns, &cluster_name);
    Ok(BackupPlan {
        job: ShardedBackupJob {
            name,
            cluster: id.clone(),
            members,
            database: endpoints.database.clone(),
            cut_mode: match sharding {
                ShardingType::Citus => CutMode::Citus,
                ShardingType::Ddp => CutMode::default(),
            },
            parallelism: performance.upload_concurrency.max(2),
            archive_wait: Duration::from_secs(120),
        },
        sharding,
        snapshot: (entry.use_volume_snapshot == Some(true)).then(|| SnapshotSettings {
            cluster: id.clone(),
            class: entry.volume_snapshot_class.clone(),
            fast: entry.fast_volume_snapshot.unwrap_or(false),
        }),
        managed: obj.spec.managed_lifecycle.unwrap_or(false),
        configs,
        catalog_config: backup_config(entry, &storages[entry_index].0, &catalog_dest.prefix),
        catalog_dest,
    })
}

/// Creates the member SGBackups (owned by the sharded backup), each with where it will be
/// stored in its status before any work starts, so a deletion finds every object.
async fn ensure_children(
    ctx: &Context,
    obj: &SGShardedBackup,
    plan: &BackupPlan,
) -> Result<(), BackupError> {
    let api: Api<SGBackup> = ctx.api(&namespace_of(obj));
    for (m, config) in plan.job.members.iter().zip(&plan.configs) {
        if let Some(child) = api.get_opt(&m.backup).await? {
            if child
                .status
                .as_ref()
                .and_then(|s| s.sg_backup_config.as_ref())
                .is_none()
            {
                set_child(&api, &m.backup, &pending_child(config)).await;
            }
            continue;
        }
        let child = SGBackup {
            metadata: ObjectMeta {
                name: Some(m.backup.clone()),
                namespace: obj.namespace(),
                labels: Some(BTreeMap::from([
                    (SHARDED_BACKUP_LABEL.to_string(), obj.name_any()),
                    ("stackgres.io/cluster-name".to_string(), m.name.clone()),
                ])),
                owner_references: obj.controller_owner_ref(&()).map(|r| vec![r]),
                ..ObjectMeta::default()
            },
            spec: BackupSpec {
                sg_cluster: m.name.clone(),
                managed_lifecycle: Some(plan.managed),
                timeout: None,
                max_retries: None,
                reconciliation_timeout: None,
            },
            status: None,
        };
        api.create(&PostParams::default(), &child).await?;
        set_child(&api, &m.backup, &pending_child(config)).await;
    }
    Ok(())
}

/// The status of a member backup not started yet: Pending, with where it will be stored.
fn pending_child(config: &Value) -> BackupStatus {
    BackupStatus {
        sg_backup_config: Some(config.clone()),
        ..Default::default()
    }
}

/// Member progress as status updates, applied in order by one task.
enum Update {
    Started(usize),
    Done(usize, Box<BackupSummary>),
}

struct ChannelProgress(mpsc::UnboundedSender<Update>);

impl Progress for ChannelProgress {
    fn member_started(&self, index: usize) {
        let _ = self.0.send(Update::Started(index));
    }
    fn member_done(&self, index: usize, summary: &BackupSummary) {
        let _ = self.0.send(Update::Done(index, Box::new(summary.clone())));
    }
    fn phase(&self, phase: &str) {
        tracing::info!("sharded backup: {phase}");
    }
}

/// `15.18` of a `server_version` such as `15.18 (Debian 15.18-0+deb12u1)`.
fn plain_version(server_version: &str) -> String {
    server_version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn member_status(summary: &BackupSummary, config: &Value) -> BackupStatus {
    use shardvault_api::backup::{BackupInformation, LsnRange, Process, Timing};
    BackupStatus {
        internal_name: Some(summary.name.clone()),
        backup_path: config["prefix"].as_str().map(str::to_string),
        process: Process {
            status: BackupPhase::Completed,
            failure: None,
            timing: Timing {
                start: Some(summary.start_time.to_string()),
                end: Some(summary.end_time.to_string()),
                stored: Some(now()),
            },
        },
        backup_information: Some(BackupInformation {
            hostname: summary.hostname.clone(),
            system_identifier: summary.system_identifier.clone(),
            postgres_version: plain_version(&summary.postgres_version),
            pg_data: summary.pgdata.display().to_string(),
            size: BackupSize {
                compressed: summary.size.compressed,
                uncompressed: summary.size.uncompressed,
            },
            lsn: LsnRange {
                start: summary.start_lsn.to_string(),
                end: summary.end_lsn.to_string(),
            },
            start_wal_file: summary.start_wal_file.clone(),
            timeline: summary.timeline,
            control_data: None,
            manifest_sha256: Some(summary.manifest_sha256.clone()),
        }),
        sg_backup_config: Some(config.clone()),
        volume_snapshot: None,
    }
}

/// Replaces the status of member SGBackup `name` (when it exists); a failure is logged.
async fn set_child(api: &Api<SGBackup>, name: &str, status: &BackupStatus) {
    let written = async {
        let Some(child) = api.get_opt(name).await? else {
            return Ok(());
        };
        status::replace(api, &child, &child.status, &Some(status.clone())).await
    };
    if let Err(e) = written.await {
        tracing::warn!("SGBackup {name}: cannot write its status: {e}");
    }
}

/// How often and how long a worker tries.
struct Retries {
    first_attempt: i64,
    max_retries: i64,
    timeout: Option<Duration>,
}

/// Runs the sharded backup of `obj` until it completes, or fails more than `maxRetries`
/// times, or runs out of `timeout`; each failed attempt's objects are removed.
async fn run_worker(ctx: Arc<Context>, obj: SGShardedBackup, plan: BackupPlan, retries: Retries) {
    let ns = namespace_of(&obj);
    let name = obj.name_any();
    let api: Api<SGShardedBackup> = ctx.api(&ns);
    let children: Api<SGBackup> = ctx.api(&ns);
    let started = tokio::time::Instant::now();
    let mut attempt = retries.first_attempt;
    if attempt > 1 {
        cleanup_attempt(&ctx, &plan).await;
    }
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let updater = {
            let children = children.clone();
            let members: Vec<String> = plan.job.members.iter().map(|m| m.backup.clone()).collect();
            let configs = plan.configs.clone();
            tokio::spawn(async move {
                while let Some(u) = rx.recv().await {
                    match u {
                        Update::Started(i) => {
                            let mut s = BackupStatus::default();
                            s.process.status = BackupPhase::Running;
                            s.process.timing.start = Some(now());
                            s.sg_backup_config = Some(configs[i].clone());
                            set_child(&children, &members[i], &s).await;
                        }
                        Update::Done(i, summary) => {
                            let s = member_status(&summary, &configs[i]);
                            set_child(&children, &members[i], &s).await;
                        }
                    }
                }
            })
        };
        let progress = Arc::new(ChannelProgress(tx));
        let run = async {
            match &plan.snapshot {
                Some(settings) => {
                    snapshot_backup::run(&plan.job, settings, ctx.runtime.as_ref(), &*progress)
                        .await
                        .map(|o| (o.outcome, o.snapshots))
                }
                None => sharded_backup::run(&plan.job, ctx.runtime.as_ref(), progress)
                    .await
                    .map(|o| (o, Vec::new())),
            }
        };
        let result = match retries.timeout {
            Some(t) => match tokio::time::timeout(t.saturating_sub(started.elapsed()), run).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("timed out after {} s (spec.timeout)", t.as_secs())),
            },
            None => run.await.map_err(|e| e.to_string()),
        };
        let _ = updater.await;
        let current = match api.get_opt(&name).await {
            Ok(Some(o)) if o.uid() == obj.uid() => o,
            _ => return, // deleted meanwhile
        };
        let mut status = current.status.clone().unwrap_or_default();
        let message = match result {
            Ok((outcome, snapshots)) => {
                let done = Done {
                    outcome: &outcome,
                    snapshots: &snapshots,
                };
                if let Err(e) = complete(&ctx, &api, &current, &mut status, &plan, done).await {
                    status.process.status = BackupPhase::Failed;
                    status.process.failure = Some(e);
                    write_status(&api, &current, &status).await;
                }
                return;
            }
            Err(message) => message,
        };
        events::record(
            &ctx.client,
            &current,
            EventType::Warning,
            "BackupFailed",
            &format!("attempt {attempt}: {message}"),
        )
        .await;
        for m in &plan.job.members {
            let mut s = BackupStatus::default();
            s.process.status = BackupPhase::Failed;
            s.process.failure = Some(message.clone());
            set_child(&children, &m.backup, &s).await;
        }
        cleanup_attempt(&ctx, &plan).await;
        let out_of_time = retries.timeout.is_some_and(|t| started.elapsed() >= t);
        if attempt > retries.max_retries || out_of_time {
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(message);
            status.process.timing.end = Some(now());
            write_status(&api, &current, &status).await;
            return;
        }
        attempt += 1;
        status.attempts = Some(attempt);
        status.process.failure = Some(format!("retrying after: {message}"));
        write_status(&api, &current, &status).await;
        tokio::time::sleep(Duration::from_secs(2u64.pow(attempt.min(6) as u32))).await;
    }
}

/// Replaces the status of `obj` (as it was read) with `new`, unless they are equal.
async fn set_status(
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    new: &ShardedBackupStatus,
) -> Result<(), kube::Error> {
    status::replace(api, obj, &obj.status, &Some(new.clone())).await
}

/// Writes a worker's status; a failure is logged (the next reconcile sees the backup as
/// interrupted and starts it again).
async fn write_status(
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    new: &ShardedBackupStatus,
) {
    if let Err(e) = set_status(api, obj, new).await {
        tracing::warn!(
            "SGShardedBackup {}: cannot write its status: {e}",
            obj.name_any()
        );
    }
}

/// Removes what a failed attempt stored (and the volume snapshots it took, named after the
/// member backups), so nothing half-written looks like a backup.
async fn cleanup_attempt(ctx: &Context, plan: &BackupPlan) {
    for m in &plan.job.members {
        if plan.snapshot.is_some()
            && let Err(e) = ctx
                .runtime
                .delete_snapshot(&plan.job.cluster.namespace, &m.backup)
        {
            tracing::warn!(
                "{}: cannot remove the snapshot of failed backup {}: {e}",
                m.name,
                m.backup
            );
        }
        for dest in &m.node_config.destinations {
            if let Ok(repo) = Repo::open(dest)
                && let Err(e) = delete_backup(&repo, &m.backup).await
            {
                tracing::warn!("{}: cannot remove failed backup {}: {e}", m.name, m.backup);
            }
        }
    }
}

/// What a finished attempt produced: its outcome and its volume snapshots (none for a
/// regular backup).
struct Done<'a> {
    outcome: &'a sharded_backup::ShardedBackupOutcome,
    snapshots: &'a [shardvault_pg::runtime::VolumeSnapshot],
}

/// Writes the storage record of a finished backup, then its Completed status (in that
/// order: a backup claims completion only once its record is stored).
async fn complete(
    ctx: &Context,
    api: &Api<SGShardedBackup>,
    obj: &SGShardedBackup,
    status: &mut ShardedBackupStatus,
    plan: &BackupPlan,
    done: Done<'_>,
) -> Result<(), String> {
    let outcome = done.outcome;
    if !done.snapshots.is_empty() {
        // Each SGBackup says it is a snapshot, names it, and that it is on the same disk.
        let children: Api<SGBackup> = ctx.api(&namespace_of(obj));
        for (((m, summary), config), snapshot) in plan
            .job
            .members
            .iter()
            .zip(&outcome.manifests)
            .zip(&plan.configs)
            .zip(done.snapshots)
        {
            let child = BackupStatus {
                volume_snapshot: Some(snapshot_backup::snapshot_status(snapshot)),
                ..member_status(summary, config)
            };
            set_child(&children, &m.backup, &child).await;
        }
        status.volume_snapshots = done.snapshots.iter().map(|s| s.name.clone()).collect();
    }
    let size = outcome
        .manifests
        .iter()
        .fold(BackupSize::default(), |acc, m| BackupSize {
            compressed: acc.compressed + m.size.compressed,
            uncompressed: acc.uncompressed + m.size.uncompressed,
        });
    let restore_point = RestorePoint::from(&outcome.cut);
    let postgres_version = outcome
        .manifests
        .first()
        .map(|m| plain_version(&m.postgres_version))
        .unwrap_or_default();
    let start = status.process.timing.start.clone().unwrap_or_else(now);
    let end = now();
    let record = ShardedRecord {
        format: SHARDED_FORMAT,
        name: obj.name_any(),
        namespace: namespace_of(obj),
        cluster: plan.job.cluster.name.clone(),
        sharding_type: match plan.sharding {
            ShardingType::Citus => "citus".into(),
            ShardingType::Ddp => "ddp".into(),
        },
        database: plan.job.database.clone(),
        postgres_version: postgres_version.clone(),
        managed_lifecycle: plan.managed,
        members: plan
            .job
            .members
            .iter()
            .zip(&outcome.manifests)
            .zip(&plan.configs)
            .map(|((m, s), c)| MemberRecord {
                name: m.name.clone(),
                sg_backup: m.backup.clone(),
                prefix: c["prefix"].as_str().unwrap_or_default().to_string(),
                start_lsn: s.start_lsn.to_string(),
                end_lsn: s.end_lsn.to_string(),
                timeline: s.timeline,
                size: BackupSize {
                    compressed: s.size.compressed,
                    uncompressed: s.size.uncompressed,
                },
                manifest_sha256: Some(s.manifest_sha256.clone()),
            })
            .collect(),
        restore_point: restore_point.clone(),
        size,
        start: start.clone(),
        end: end.clone(),
    };
    Records::open(&plan.catalog_dest)
        .map_err(|e| e.to_string())?
        .write_backup(&record)
        .await
        .map_err(|e| format!("cannot write the catalog record: {e}"))?;
    status.process.status = BackupPhase::Completed;
    status.process.failure = None;
    status.process.timing.end = Some(end);
    status.process.timing.stored = Some(now());
    status.backup_information = Some(ShardedBackupInformation {
        postgres_version,
        size,
    });
    status.restore_point = Some(restore_point);
    status.sharded_record_config = Some(plan.catalog_config.clone());
    set_status(api, obj, status)
        .await
        .map_err(|e| format!("cannot write the status: {e}"))?;
    events::record(
        &ctx.client,
        obj,
        EventType::Normal,
        "BackupCompleted",
        &format!(
            "{} members, restore point {} (write pause {:.1} ms)",
            outcome.manifests.len(),
            outcome.cut.name,
            outcome.cut.write_pause_ms
        ),
    )
    .await;
    Ok(())
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
    use shardvault_pg::engine::layout::Lsn;
    use shardvault_pg::engine::manifest::Sizes;

    use serde_json::json;

    use super::*;

    fn summary() -> BackupSummary {
        BackupSummary {
            name: "b-shard0".into(),
            start_lsn: "0/2000028".parse().unwrap(),
            end_lsn: Lsn(0x0300_0100),
            timeline: 1,
            start_wal_file: "000000010000000000000002".into(),
            end_wal_file: "000000010000000000000003".into(),
            system_identifier: "7301234567890123456".into(),
            postgres_version: "15.18 (Debian 15.18-0+deb12u1)".into(),
            from_replica: true,
            compression: Default::default(),
            size: Sizes {
                compressed: 1000,
                uncompressed: 4000,
                restore: 1000,
            },
            start_time: "2030-01-01T00:00:00Z".parse().unwrap(),
            end_time: "2030-01-01T00:00:05Z".parse().unwrap(),
            hostname: "host".into(),
            pgdata: "/data/c-shard0".into(),
            files: 900,
            parts: 2,
            manifest_sha256: "ab".repeat(32),
            backup_type: Default::default(),
            parent: None,
            chain: Vec::new(),
        }
    }

    #[test]
    fn a_member_summary_becomes_a_completed_sgbackup_status() {
        let config = json!({"sgObjectStorage": "s", "prefix": "shardvault/default/c/c-shard0"});
        let status = member_status(&summary(), &config);
        assert_eq!(status.process.status, BackupPhase::Completed);
        assert_eq!(status.internal_name.as_deref(), Some("b-shard0"));
        assert_eq!(
            status.backup_path.as_deref(),
            Some("shardvault/default/c/c-shard0")
        );
        assert_eq!(
            status.process.timing.end.as_deref(),
            Some("2030-01-01T00:00:05Z")
        );
        let info = status.backup_information.expect("backup information");
        assert_eq!(
            info.postgres_version, "15.18",
            "the plain version, as StackGres shows"
        );
        assert_eq!((info.size.compressed, info.size.uncompressed), (1000, 4000));
        assert_eq!(
            (info.lsn.start.as_str(), info.lsn.end.as_str()),
            ("0/2000028", "0/3000100")
        );
        assert_eq!(info.start_wal_file, "000000010000000000000002");
        assert_eq!(
            info.manifest_sha256,
            Some("ab".repeat(32)),
            "the anchor verify checks"
        );
        assert_eq!(status.sg_backup_config, Some(config));
    }

    #[test]
    fn backup_errors_keep_their_event_reasons() {
        let e = BackupError::NoBackupConfiguration("c".into());
        assert_eq!(e.reason(), "NoBackupConfiguration");
        assert!(e.message().contains("spec.configurations.backups"), "{e}");
        let inner = ReconcileError::new(
            "InvalidBackup",
            "SGBackup b: status.sgBackupConfig has no prefix",
        );
        let e = BackupError::from(inner.clone());
        assert_eq!(
            (e.reason(), e.message()),
            (inner.reason.as_str(), inner.message)
        );
    }
}
