//! The SGShardedBackup controller: takes the cluster's backup lock, creates one SGBackup per
//! member, runs the sharded backup (member backups, cluster-wide restore point, archive
//! proof) in a worker with `timeout` and `maxRetries`, and writes status and the storage
//! catalog record. Deleting a sharded backup removes its objects from storage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_api::backup::{BackupPhase, BackupSize, BackupStatus};
use shardvault_api::shardedbackup::{
    DEFAULT_MAX_RETRIES, RestorePoint, SHARDED_BACKUP_LABEL, ShardedBackupInformation,
    ShardedBackupSpec, ShardedBackupStatus,
};
use shardvault_api::shardedcluster::{ShardedClusterSpec, ShardingType};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::Repo;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::engine::prune::delete_backup;
use shardvault_pg::runtime::cluster::ClusterObserved;
use shardvault_store::EventType;
use tokio::sync::mpsc;

use crate::cut::CutMode;
use crate::destination::{cluster_destination, member_destinations};
use crate::framework::{Action, Ctx, ReconcileError, Reconciler, has_finalizer, is_deleting};
use crate::import::{self, IMPORTED_ANNOTATION, IMPORTED_PATH_ANNOTATION};
use crate::records::{MemberRecord, Records, SHARDED_FORMAT, ShardedRecord};
use crate::resources::{
    Secrets, backup_config, backup_destination, cluster_storages, name_of, namespace_of,
    owner_reference, spec_of, status_of, uid_of,
};
use crate::sharded_backup::{self, MemberJob, Progress, ShardedBackupJob};

/// Finalizer that removes a sharded backup's objects from storage.
pub const FINALIZER: &str = "shardvault.io/backup-objects";

/// Annotation choosing the backups[] entry (index) a manual backup goes to (default 0).
pub const ENTRY_ANNOTATION: &str = "shardvault.io/backup-entry";

/// Directory under the state directory holding the node configs of running backup jobs.
const WORK_DIR: &str = "work";

/// Removes what an earlier run left in the work directory (node configs with secrets of
/// jobs that were cut short); called at start, before any job runs.
pub fn sweep_work(state: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(state.join(WORK_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why a sharded backup cannot be planned, or its objects not deleted.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
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
    /// The work directory of the backup's node configs cannot be made.
    #[error("{}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Storage failed while deleting the backup's objects.
    #[error("{0}")]
    Storage(String),
    /// The resources could not be read or written.
    #[error(transparent)]
    Resources(#[from] ReconcileError),
}

impl BackupError {
    /// The reason of the Event a failure is recorded as.
    pub fn reason(&self) -> &str {
        match self {
            BackupError::ClusterNotRunning { .. } => "ClusterNotRunning",
            BackupError::NoBackupConfiguration(_) => "NoBackupConfiguration",
            BackupError::InvalidAnnotation(_) => "InvalidAnnotation",
            BackupError::StateDir { .. } => "StateDir",
            BackupError::Storage(_) => "StorageError",
            BackupError::Resources(e) => &e.reason,
        }
    }

    fn storage(e: impl std::fmt::Display) -> BackupError {
        BackupError::Storage(e.to_string())
    }
}

impl From<shardvault_store::StoreError> for BackupError {
    fn from(e: shardvault_store::StoreError) -> BackupError {
        BackupError::Resources(e.into())
    }
}

impl From<BackupError> for ReconcileError {
    fn from(e: BackupError) -> ReconcileError {
        match e {
            BackupError::Resources(e) => e,
            e => ReconcileError::new(e.reason().to_string(), e),
        }
    }
}

/// Runs sharded backups.
pub struct ShardedBackupController {
    bin: PathBuf,
    workers: Workers,
}

/// Running backup workers by uid, and the lock under which a backup decides to start (so
/// two backups of one cluster never both see the other not running yet).
#[derive(Clone, Default)]
struct Workers {
    running: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
    starting: Arc<tokio::sync::Mutex<()>>,
}

impl ShardedBackupController {
    /// A controller whose engine runs from `shardvault_bin`.
    pub fn new(shardvault_bin: PathBuf) -> ShardedBackupController {
        ShardedBackupController {
            bin: shardvault_bin,
            workers: Workers::default(),
        }
    }
}

impl Reconciler for ShardedBackupController {
    fn kind(&self) -> Kind {
        Kind::SGShardedBackup
    }

    fn reconcile(
        &self,
        obj: Value,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
        let bin = self.bin.clone();
        let workers = self.workers.clone();
        Box::pin(async move { reconcile(obj, ctx, bin, workers).await })
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn member_suffix(i: usize) -> String {
    if i == 0 {
        "coord".into()
    } else {
        format!("shard{}", i - 1)
    }
}

async fn set_status(
    ctx: &Ctx,
    obj: &Value,
    status: &ShardedBackupStatus,
) -> Result<Value, ReconcileError> {
    let status = serde_json::to_value(status).expect("status serializes");
    if obj.get("status") == Some(&status) {
        return Ok(obj.clone());
    }
    Ok(ctx.update_status(obj, status).await?)
}

async fn reconcile(
    obj: Value,
    ctx: Ctx,
    bin: PathBuf,
    workers: Workers,
) -> Result<Action, ReconcileError> {
    let Workers {
        running: workers,
        starting,
    } = workers;
    let uid = uid_of(&obj).to_string();
    if let Some(storage) = annotation(&obj, IMPORTED_ANNOTATION) {
        // Found in storage, not taken here: nothing to run, and its objects are not ours
        // to delete; its status comes from its record.
        let pending = status_of::<ShardedBackupStatus>(&obj).process.status == BackupPhase::Pending;
        if is_deleting(&obj) || !pending {
            return Ok(Action::AwaitChange);
        }
        return fill_imported(&ctx, &obj, storage).await;
    }
    if is_deleting(&obj) {
        let worker = workers.lock().expect("not poisoned").remove(&uid);
        if let Some(w) = worker {
            // Wait until it is gone (its node work is killed with it), so nothing is
            // written after the objects are deleted.
            w.abort();
            let _ = w.await;
        }
        if has_finalizer(&obj, FINALIZER) {
            delete_objects(&ctx, &obj).await?;
            ctx.remove_finalizer(&obj, FINALIZER).await?;
        }
        return Ok(Action::AwaitChange);
    }
    let obj = ctx.add_finalizer(&obj, FINALIZER).await?;
    let spec: ShardedBackupSpec = spec_of(&obj)?;
    let mut status: ShardedBackupStatus = status_of(&obj);
    let ns = namespace_of(&obj).to_string();
    match status.process.status {
        BackupPhase::Completed | BackupPhase::Failed => return Ok(Action::AwaitChange),
        BackupPhase::Running => {
            let alive = workers
                .lock()
                .expect("not poisoned")
                .get(&uid)
                .is_some_and(|w| !w.is_finished());
            if alive {
                return Ok(Action::Requeue(Duration::from_secs(5)));
            }
            // Running with no worker here: the daemon restarted mid-backup. That attempt is
            // lost; its objects are removed and the backup starts again as a new attempt.
            ctx.event(
                &obj,
                EventType::Warning,
                "Interrupted",
                "the backup was interrupted (daemon restart); retrying",
            )
            .await;
        }
        BackupPhase::Pending => {}
    }
    let cluster_name = spec.sg_sharded_cluster.clone();
    let start_guard = starting.lock().await;
    let Some(cluster) = ctx.get(Kind::SGShardedCluster, &ns, &cluster_name).await? else {
        status.process.status = BackupPhase::Failed;
        status.process.failure = Some(format!(
            "spec.sgShardedCluster: SGShardedCluster {cluster_name:?} not found in namespace {ns}"
        ));
        set_status(&ctx, &obj, &status).await?;
        return Ok(Action::AwaitChange);
    };
    let ready = cluster
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    let others_running = ctx
        .list(Kind::SGShardedBackup, Some(&ns), "")
        .await?
        .into_iter()
        .any(|b| {
            uid_of(&b) != uid
                && b.pointer("/spec/sgShardedCluster").and_then(Value::as_str)
                    == Some(&cluster_name)
                && b.pointer("/status/process/status").and_then(Value::as_str) == Some("Running")
        });
    if status.process.status == BackupPhase::Pending && (!ready || others_running) {
        let why = if others_running {
            "another sharded backup of this cluster is running"
        } else {
            "the cluster is not Ready yet"
        };
        status.process.failure = Some(format!("waiting: {why}"));
        set_status(&ctx, &obj, &status).await?;
        return Ok(Action::Requeue(Duration::from_secs(3)));
    }
    let plan = match plan_backup(&ctx, &obj, &cluster, &bin).await {
        Ok(p) => p,
        // The cluster was Ready a moment ago: its state being unreadable now passes.
        Err(e @ BackupError::ClusterNotRunning { .. })
            if status.process.status == BackupPhase::Pending =>
        {
            status.process.failure = Some(format!("waiting: {e}"));
            set_status(&ctx, &obj, &status).await?;
            return Ok(Action::Requeue(Duration::from_secs(3)));
        }
        Err(e) => {
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(e.to_string());
            set_status(&ctx, &obj, &status).await?;
            ctx.event(&obj, EventType::Warning, e.reason(), &e.to_string())
                .await;
            return Ok(Action::AwaitChange);
        }
    };
    let attempt = status.attempts.unwrap_or(0) + 1;
    status.process.status = BackupPhase::Running;
    status.process.failure = None;
    status.process.timing.start.get_or_insert_with(now);
    status.attempts = Some(attempt);
    status.sg_backups = plan.job.members.iter().map(|m| m.backup.clone()).collect();
    let obj = set_status(&ctx, &obj, &status).await?;
    drop(start_guard);
    ensure_children(&ctx, &obj, &spec, &plan).await?;
    let max_retries = spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES).max(0);
    let timeout = spec
        .timeout
        .as_ref()
        .and_then(|t| t.seconds().ok())
        .map(Duration::from_secs);
    if plan.volume_snapshot && attempt == 1 {
        ctx.event(
            &obj,
            EventType::Normal,
            "VolumeSnapshotUnavailable",
            "useVolumeSnapshot is set, but the local runtime has no CSI volume snapshots: taking a regular backup",
        )
        .await;
    }
    let worker = tokio::spawn(run_worker(
        ctx.clone(),
        obj,
        plan,
        attempt,
        max_retries,
        timeout,
    ));
    workers.lock().expect("not poisoned").insert(uid, worker);
    Ok(Action::Requeue(Duration::from_secs(5)))
}

/// The value of annotation `key` of `obj`.
fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Writes the status of an imported sharded backup and of its SGBackups from its record in
/// SGObjectStorage `storage` (at the prefix its annotation names), once the importer has
/// created every SGBackup.
async fn fill_imported(ctx: &Ctx, obj: &Value, storage: &str) -> Result<Action, ReconcileError> {
    let (ns, name) = (namespace_of(obj), name_of(obj));
    let field = format!("metadata.annotations[{IMPORTED_ANNOTATION:?}]");
    let secrets = Secrets::load(ctx, ns).await?;
    let (spec, resolved) = crate::resources::storage(ctx, &secrets, ns, storage, &field).await?;
    let prefix = annotation(obj, IMPORTED_PATH_ANNOTATION).unwrap_or_default();
    let dest = shardvault_storage::Destination {
        storage: resolved.config,
        prefix: prefix.to_string(),
        compression: Default::default(),
        performance: Default::default(),
        encryption: resolved.encryption,
    };
    let read = async { Records::open(&dest)?.backup(name).await };
    let record = match read.await {
        Ok(r) => r,
        Err(e) => {
            let mut status = ShardedBackupStatus::default();
            status.process.status = BackupPhase::Failed;
            status.process.failure = Some(format!(
                "the record of this imported backup cannot be read from SGObjectStorage {storage}: {e}"
            ));
            set_status(ctx, obj, &status).await?;
            return Ok(Action::AwaitChange);
        }
    };
    let imported = import::statuses(&record, prefix, storage, &spec);
    let mut children = Vec::new();
    for (member, status) in &imported.members {
        match ctx.get(Kind::SGBackup, ns, member).await? {
            Some(child) => children.push((child, status)),
            // The importer creates the SGBackups right after this object.
            None => return Ok(Action::Requeue(Duration::from_millis(300))),
        }
    }
    for (child, status) in children {
        ctx.update_status(
            &child,
            serde_json::to_value(status).expect("status serializes"),
        )
        .await?;
    }
    set_status(ctx, obj, &imported.backup).await?;
    Ok(Action::AwaitChange)
}

/// Everything a worker needs about one sharded backup.
struct BackupPlan {
    job: ShardedBackupJob,
    cluster: String,
    sharding: ShardingType,
    managed: bool,
    configs: Vec<Value>,
    catalog_dest: shardvault_storage::Destination,
    /// `catalog_dest` in the shape of an `sgBackupConfig`, kept in status.
    catalog_config: Value,
    /// The entry asks for volume snapshots, which the local runtime does not have.
    volume_snapshot: bool,
}

async fn plan_backup(
    ctx: &Ctx,
    obj: &Value,
    cluster: &Value,
    bin: &std::path::Path,
) -> Result<BackupPlan, BackupError> {
    let ns = namespace_of(obj);
    let name = name_of(obj);
    let cluster_name = name_of(cluster);
    let cspec: ShardedClusterSpec = spec_of(cluster)?;
    if cspec.backups().is_empty() {
        return Err(BackupError::NoBackupConfiguration(cluster_name.to_string()));
    }
    let entry_index: usize = annotation(obj, ENTRY_ANNOTATION)
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
    let storages = cluster_storages(ctx, ns, &cspec).await?;
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let dests = member_destinations(cluster_name, ns, &cspec, &resolved);
    let cluster_dir = ctx.state_dir.join("clusters").join(ns).join(cluster_name);
    let not_running = |e: &dyn std::fmt::Display| BackupError::ClusterNotRunning {
        cluster: cluster_name.to_string(),
        message: e.to_string(),
    };
    let observed = ClusterObserved::load(&cluster_dir).map_err(|e| not_running(&e))?;
    let work = work_dir(&ctx.state_dir, ns, name)
        .map_err(|(path, source)| BackupError::StateDir { path, source })?;
    let mut members = Vec::new();
    let mut configs = Vec::new();
    for (i, m) in observed.members.iter().enumerate() {
        let mut cfg = NodeConfig::load(&m.node_config).map_err(|e| not_running(&e))?;
        let dest = dests[i][entry_index].clone();
        configs.push(backup_config(entry, &storages[entry_index].0, &dest.prefix));
        cfg.destinations = vec![dest];
        // Back up from a streaming replica when one runs, sparing the primary the reads.
        let mut backup_from = cfg.clone();
        if let Some(replica) = m
            .instances
            .iter()
            .skip(1)
            .find(|r| r.state == shardvault_pg::runtime::cluster::InstanceState::Running)
        {
            backup_from.port = replica.port;
            backup_from.pgdata = replica.pgdata.clone();
        }
        members.push(MemberJob {
            name: m.name.clone(),
            backup: format!("{name}-{}", member_suffix(i)),
            node_config: cfg,
            backup_from,
            config_path: work.join(format!("{}.json", m.name)),
        });
    }
    let performance = crate::destination::entry_codec(entry).1;
    let sharding = cspec.sharding_type();
    let catalog_dest = cluster_destination(entry, &storages[entry_index].1, ns, cluster_name);
    Ok(BackupPlan {
        job: ShardedBackupJob {
            name: name.to_string(),
            members,
            database: observed.database.clone(),
            cut_mode: match sharding {
                ShardingType::Citus => CutMode::Citus,
                ShardingType::Ddp => CutMode::default(),
            },
            parallelism: performance.upload_concurrency.max(2),
            shardvault_bin: bin.to_path_buf(),
            archive_wait: Duration::from_secs(120),
        },
        cluster: cluster_name.to_string(),
        sharding,
        volume_snapshot: entry.use_volume_snapshot.unwrap_or(false),
        managed: obj
            .pointer("/spec/managedLifecycle")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        configs,
        catalog_config: backup_config(entry, &storages[entry_index].0, &catalog_dest.prefix),
        catalog_dest,
    })
}

async fn ensure_children(
    ctx: &Ctx,
    obj: &Value,
    spec: &ShardedBackupSpec,
    plan: &BackupPlan,
) -> Result<(), ReconcileError> {
    let ns = namespace_of(obj);
    for (m, config) in plan.job.members.iter().zip(&plan.configs) {
        if let Some(child) = ctx.get(Kind::SGBackup, ns, &m.backup).await? {
            if child.pointer("/status/sgBackupConfig").is_none() {
                set_child(ctx, ns, &m.backup, &pending_child(config)).await;
            }
            continue;
        }
        ctx.create(json!({
            "apiVersion": Kind::SGBackup.api_version(),
            "kind": "SGBackup",
            "metadata": {
                "name": m.backup,
                "namespace": ns,
                "labels": {
                    SHARDED_BACKUP_LABEL: name_of(obj),
                    "stackgres.io/cluster-name": m.name,
                },
                "ownerReferences": [owner_reference(obj)],
            },
            "spec": {
                "sgCluster": m.name,
                "managedLifecycle": spec.managed_lifecycle.unwrap_or(false),
            },
        }))
        .await?;
        // Where it goes is known before any work starts, so a deletion finds every object.
        set_child(ctx, ns, &m.backup, &pending_child(config)).await;
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

/// Member progress as store updates, applied in order by one task.
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

async fn set_child(ctx: &Ctx, ns: &str, name: &str, status: &BackupStatus) {
    match ctx.get(Kind::SGBackup, ns, name).await {
        Ok(Some(child)) => {
            if let Err(e) = ctx
                .update_status(
                    &child,
                    serde_json::to_value(status).expect("status serializes"),
                )
                .await
            {
                tracing::warn!("SGBackup {name}: cannot write status: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("SGBackup {name}: {e}"),
    }
}

async fn run_worker(
    ctx: Ctx,
    obj: Value,
    plan: BackupPlan,
    first_attempt: i64,
    max_retries: i64,
    timeout: Option<Duration>,
) {
    let ns = namespace_of(&obj).to_string();
    let name = name_of(&obj).to_string();
    let started = tokio::time::Instant::now();
    let mut attempt = first_attempt;
    if attempt > 1 {
        cleanup_attempt(&plan).await;
    }
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let updater = {
            let ctx = ctx.clone();
            let ns = ns.clone();
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
                            set_child(&ctx, &ns, &members[i], &s).await;
                        }
                        Update::Done(i, summary) => {
                            set_child(
                                &ctx,
                                &ns,
                                &members[i],
                                &member_status(&summary, &configs[i]),
                            )
                            .await;
                        }
                    }
                }
            })
        };
        let run = sharded_backup::run(&plan.job, Arc::new(ChannelProgress(tx)));
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t.saturating_sub(started.elapsed()), run).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("timed out after {} s (spec.timeout)", t.as_secs())),
            },
            None => run.await.map_err(|e| e.to_string()),
        };
        let _ = updater.await;
        let current = match ctx.get(Kind::SGShardedBackup, &ns, &name).await {
            Ok(Some(o)) if uid_of(&o) == uid_of(&obj) => o,
            _ => return, // deleted meanwhile
        };
        let mut status: ShardedBackupStatus = status_of(&current);
        match result {
            Ok(outcome) => {
                if let Err(e) = complete(&ctx, &current, &mut status, &plan, &outcome).await {
                    status.process.status = BackupPhase::Failed;
                    status.process.failure = Some(e);
                    let _ = set_status(&ctx, &current, &status).await;
                }
                return;
            }
            Err(message) => {
                ctx.event(
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
                    set_child(&ctx, &ns, &m.backup, &s).await;
                }
                cleanup_attempt(&plan).await;
                let out_of_time = timeout.is_some_and(|t| started.elapsed() >= t);
                if attempt > max_retries || out_of_time {
                    status.process.status = BackupPhase::Failed;
                    status.process.failure = Some(message);
                    status.process.timing.end = Some(now());
                    let _ = set_status(&ctx, &current, &status).await;
                    return;
                }
                attempt += 1;
                status.attempts = Some(attempt);
                status.process.failure = Some(format!("retrying after: {message}"));
                let _ = set_status(&ctx, &current, &status).await;
                tokio::time::sleep(Duration::from_secs(2u64.pow(attempt.min(6) as u32))).await;
            }
        }
    }
}

/// Removes what a failed attempt stored, so nothing half-written looks like a backup.
async fn cleanup_attempt(plan: &BackupPlan) {
    for m in &plan.job.members {
        for dest in &m.node_config.destinations {
            if let Ok(repo) = Repo::open(dest)
                && let Err(e) = delete_backup(&repo, &m.backup).await
            {
                tracing::warn!("{}: cannot remove failed backup {}: {e}", m.name, m.backup);
            }
        }
    }
}

async fn complete(
    ctx: &Ctx,
    obj: &Value,
    status: &mut ShardedBackupStatus,
    plan: &BackupPlan,
    outcome: &sharded_backup::ShardedBackupOutcome,
) -> Result<(), String> {
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
        name: name_of(obj).to_string(),
        namespace: namespace_of(obj).to_string(),
        cluster: plan.cluster.clone(),
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
    set_status(ctx, obj, status)
        .await
        .map_err(|e| e.to_string())?;
    ctx.event(
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
async fn delete_objects(ctx: &Ctx, obj: &Value) -> Result<(), BackupError> {
    let ns = namespace_of(obj);
    let secrets = Secrets::load(ctx, ns).await?;
    let children = ctx
        .list(
            Kind::SGBackup,
            Some(ns),
            &format!("{SHARDED_BACKUP_LABEL}={}", name_of(obj)),
        )
        .await?;
    for child in children {
        let Some(config) = child.pointer("/status/sgBackupConfig") else {
            continue;
        };
        let dest = backup_destination(config, &secrets, name_of(&child))?;
        let repo = Repo::open(&dest).map_err(BackupError::storage)?;
        delete_backup(&repo, name_of(&child))
            .await
            .map_err(BackupError::storage)?;
    }
    // The record is found from the backup itself, so it goes even when the cluster or its
    // backups[] entry is gone; backups of older versions fall back to the cluster's entries.
    let status: ShardedBackupStatus = status_of(obj);
    if let Some(config) = &status.sharded_record_config {
        let dest = backup_destination(config, &secrets, name_of(obj))?;
        return Records::open(&dest)
            .map_err(BackupError::storage)?
            .delete_backup(name_of(obj))
            .await
            .map_err(BackupError::storage);
    }
    let spec: ShardedBackupSpec = spec_of(obj)?;
    if let Some(cluster) = ctx
        .get(Kind::SGShardedCluster, ns, &spec.sg_sharded_cluster)
        .await?
    {
        let cspec: ShardedClusterSpec = spec_of(&cluster)?;
        for (entry, (_, storage)) in cspec
            .backups()
            .iter()
            .zip(cluster_storages(ctx, ns, &cspec).await?)
        {
            Records::open(&cluster_destination(entry, &storage, ns, name_of(&cluster)))
                .map_err(BackupError::storage)?
                .delete_backup(name_of(obj))
                .await
                .map_err(BackupError::storage)?;
        }
    }
    Ok(())
}

/// Creates `<state>/work/<ns>/<name>` for one backup's node configs: the first two ours
/// (0711), the last private to the server user that reads them (0700).
fn work_dir(
    state: &std::path::Path,
    ns: &str,
    name: &str,
) -> Result<std::path::PathBuf, (std::path::PathBuf, std::io::Error)> {
    let top = state.join(WORK_DIR);
    for dir in [top.clone(), top.join(ns)] {
        shardvault_pg::statefile::create_own_dir(&dir, 0o711).map_err(|e| (dir.clone(), e))?;
    }
    let work = top.join(ns).join(name);
    shardvault_pg::user::create_dir_all_for_server(&work)
        .and_then(|()| shardvault_pg::user::make_private_for_server(&work))
        .map_err(|e| (work.clone(), e))?;
    Ok(work)
}

#[cfg(test)]
mod tests {
    use shardvault_pg::engine::layout::Lsn;
    use shardvault_pg::engine::manifest::Sizes;

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
        let r = ReconcileError::from(e);
        assert_eq!(r.reason, "NoBackupConfiguration");
        assert!(r.message.contains("spec.configurations.backups"), "{r}");
        let inner = ReconcileError::new("MissingReference", "SGObjectStorage \"s\" not found");
        assert_eq!(
            ReconcileError::from(BackupError::from(inner.clone())),
            inner
        );
    }
}
