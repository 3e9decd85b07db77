//! The SGShardedCluster controller: the cluster becomes local PostgreSQL servers (through
//! the runtime), kept running; a cluster with `initialData.restore` is first checked, then
//! each member is restored from its SGBackup. Deleting the cluster stops and removes it.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::shardedbackup::{ShardedBackupSpec, ShardedBackupStatus};
use shardvault_api::shardedcluster::{
    Condition, InstanceStatus, MemberRestoreStatus, MemberStatus, RestorePhase, RestoreStatus,
    ShardedClusterSpec, ShardedClusterStatus, ShardingType,
};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::runtime::cluster::{
    self as rt, Bootstrap, ClusterObserved, ClusterPlan, MemberPlan, RecoveryTarget, Sharding,
};
use shardvault_store::EventType;

use crate::archive::seal;
use crate::destination::member_destinations;
use crate::framework::{Action, Ctx, ReconcileError, Reconciler, has_finalizer, is_deleting};
use crate::resources::{
    Secrets, backup_destination, cluster_storages, name_of, namespace_of, spec_of, status_of,
};
use crate::restore_check::{ClusterTarget, StoredMember, check_restore, check_stored};

/// Finalizer that stops and removes the cluster's servers.
pub const FINALIZER: &str = "shardvault.io/cluster-servers";

/// Condition type saying whether every member's WAL archiving works.
const ARCHIVING: &str = "WALArchiving";

/// How often running clusters are checked (dead servers restarted).
const SUPERVISE_EVERY: Duration = Duration::from_secs(5);

/// Runs sharded clusters on this host.
pub struct ClusterController {
    bin: PathBuf,
    extra_settings: Vec<(String, String)>,
}

impl ClusterController {
    /// A controller whose servers archive with `shardvault_bin`; `extra_settings` are added to
    /// every server (tests use them to make servers lighter).
    pub fn new(
        shardvault_bin: PathBuf,
        extra_settings: Vec<(String, String)>,
    ) -> ClusterController {
        ClusterController {
            bin: shardvault_bin,
            extra_settings,
        }
    }
}

impl Reconciler for ClusterController {
    fn kind(&self) -> Kind {
        Kind::SGShardedCluster
    }

    fn reconcile(
        &self,
        obj: Value,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
        let bin = self.bin.clone();
        let extra = self.extra_settings.clone();
        Box::pin(async move { reconcile(obj, ctx, bin, extra).await })
    }
}

/// The runtime directory of a cluster.
pub fn cluster_dir(ctx: &Ctx, namespace: &str, name: &str) -> PathBuf {
    ctx.state_dir.join("clusters").join(namespace).join(name)
}

fn condition(ready: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(jiff::Timestamp::now().to_string()),
    }
}

async fn write_status(
    ctx: &Ctx,
    obj: &Value,
    mut status: ShardedClusterStatus,
) -> Result<(), ReconcileError> {
    // Keep the transition time when the condition did not change, so status stays quiet.
    let old: ShardedClusterStatus = status_of(obj);
    for c in &mut status.conditions {
        if let Some(o) = old.conditions.iter().find(|o| o.type_ == c.type_)
            && o.status == c.status
            && o.reason == c.reason
            && o.message == c.message
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    let value = serde_json::to_value(&status).expect("status serializes");
    if obj.get("status") != Some(&value) {
        ctx.update_status(obj, value).await?;
    }
    Ok(())
}

async fn refuse(
    ctx: &Ctx,
    obj: &Value,
    reason: &str,
    message: String,
) -> Result<Action, ReconcileError> {
    let old: ShardedClusterStatus = status_of(obj);
    let already = old.conditions.iter().any(|c| {
        c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message.as_str())
    });
    if !already {
        ctx.event(obj, EventType::Warning, reason, &message).await;
    }
    let status = ShardedClusterStatus {
        conditions: vec![condition(false, reason, message)],
        ..old
    };
    write_status(ctx, obj, status).await?;
    Ok(Action::Requeue(Duration::from_secs(30)))
}

async fn reconcile(
    obj: Value,
    ctx: Ctx,
    bin: PathBuf,
    extra_settings: Vec<(String, String)>,
) -> Result<Action, ReconcileError> {
    let ns = namespace_of(&obj).to_string();
    let name = name_of(&obj).to_string();
    let dir = cluster_dir(&ctx, &ns, &name);
    if is_deleting(&obj) {
        if has_finalizer(&obj, FINALIZER) {
            rt::destroy(&dir)
                .await
                .map_err(|e| ReconcileError::new("DeleteFailed", e))?;
            ctx.remove_finalizer(&obj, FINALIZER).await?;
        }
        return Ok(Action::AwaitChange);
    }
    let spec: ShardedClusterSpec = spec_of(&obj)?;
    // Said once, on the first pass (before the finalizer is added).
    if !has_finalizer(&obj, FINALIZER)
        && let Some(message) = shardvault_api::ignored::not_acted_on_message(&spec)
    {
        ctx.event(&obj, EventType::Normal, "FieldsNotActedOn", &message)
            .await;
    }
    let version = spec
        .postgres
        .as_ref()
        .map(|p| p.version.as_str())
        .unwrap_or("");
    let pg_bin = match rt_find_pg_bin(version) {
        Ok(b) => b,
        Err(message) => return refuse(&ctx, &obj, "UnsupportedVersion", message).await,
    };
    let storages = match cluster_storages(&ctx, &ns, &spec).await {
        Ok(s) => s,
        Err(e) => return refuse(&ctx, &obj, &e.reason, e.message).await,
    };
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let dests = member_destinations(&name, &ns, &spec, &resolved);
    let old: ShardedClusterStatus = status_of(&obj);
    let restored = old
        .restore
        .as_ref()
        .filter(|r| {
            !r.members.is_empty() && r.members.iter().all(|m| m.phase == RestorePhase::Completed)
        })
        .map(|r| r.from_backup.clone());
    let restore = match spec.initial_data.as_ref().and_then(|d| d.restore.as_ref()) {
        Some(_) if restored.is_some() => None,
        Some(r) => {
            if let Some(message) = old.restore.as_ref().and_then(given_up) {
                return refuse(&ctx, &obj, "RestoreFailed", message).await;
            }
            match plan_restore(&ctx, &ns, &name, &spec, r).await {
                Ok(mut p) => {
                    p.keep_progress(old.restore.as_ref());
                    Some(p)
                }
                Err(e) => return refuse(&ctx, &obj, &e.reason, e.message).await,
            }
        }
        None => None,
    };
    let existing = restored.as_ref().map(|from| Bootstrap::Existing {
        origin: format!("restored from backup {from}"),
    });
    let obj = ctx.add_finalizer(&obj, FINALIZER).await?;
    let instances = |n: i64| n.max(1) as u32;
    let plan = ClusterPlan {
        name: name.clone(),
        dir: dir.clone(),
        pg_bin,
        shardvault_bin: bin,
        database: spec.database.clone().unwrap_or_else(|| "postgres".into()),
        sharding: match spec.sharding_type() {
            ShardingType::Citus => Sharding::Citus,
            ShardingType::Ddp => Sharding::Ddp,
        },
        members: spec
            .member_names(&name)
            .into_iter()
            .zip(dests)
            .enumerate()
            .map(|(i, (member, destinations))| MemberPlan {
                name: member,
                instances: if i == 0 {
                    instances(spec.coordinator.as_ref().map_or(1, |c| c.instances))
                } else {
                    instances(spec.shards.as_ref().map_or(1, |s| s.instances_per_cluster))
                },
                destinations,
                bootstrap: match (&restore, &existing) {
                    (Some(r), _) => r.bootstraps[i].clone(),
                    (None, Some(e)) => e.clone(),
                    (None, None) => Bootstrap::Initdb,
                },
            })
            .collect(),
        extra_settings,
    };
    if let Some(r) = &restore {
        let status = ShardedClusterStatus {
            conditions: vec![condition(
                false,
                "Restoring",
                format!("restoring from {}", r.status.from_backup),
            )],
            members: old.members.clone(),
            restore: Some(r.status.clone()),
        };
        write_status(&ctx, &obj, status).await?;
        if let Some(sources) = &r.seal_sources {
            for cfg in sources {
                seal(cfg, true, None, Duration::from_secs(120))
                    .await
                    .map_err(|e| {
                        ReconcileError::new(
                            "RestoreFailed",
                            format!("source member {}: {e}", cfg.member),
                        )
                    })?;
            }
        }
    }
    let observed = match rt::reconcile(&plan).await {
        Ok(o) => o,
        Err(e) => {
            let message = e.to_string();
            ctx.event(&obj, EventType::Warning, "ReconcileFailed", &message)
                .await;
            let status = ShardedClusterStatus {
                conditions: vec![condition(false, "ReconcileFailed", message.clone())],
                ..status_of(&obj)
            };
            write_status(&ctx, &obj, status).await?;
            return Err(ReconcileError::new("ReconcileFailed", message));
        }
    };
    for action in &observed.actions {
        ctx.event(&obj, EventType::Normal, "Reconciled", action)
            .await;
    }
    if let Some(w) = &observed.wiring_error {
        // Said once per new message: reconciles repeat every few seconds.
        let message = format!("sharding wiring: {w}");
        let said = old
            .conditions
            .iter()
            .any(|c| c.message.as_deref() == Some(message.as_str()));
        if !said {
            tracing::warn!(cluster = %name, namespace = %ns, "{message}");
            ctx.event(&obj, EventType::Warning, "WiringFailed", &message)
                .await;
        }
    }
    let mut restore_status = restore.map(|r| r.status).or(old.restore);
    if let Some(r) = restore_status.as_mut().filter(|_| restored.is_none()) {
        for event in record_restore_outcome(r, &observed) {
            ctx.event(&obj, EventType::Warning, "RestoreFailed", &event)
                .await;
        }
    }
    let status = observed_status(&observed, restore_status);
    if let Some(c) = status.conditions.iter().find(|c| c.type_ == ARCHIVING)
        && c.status == "False"
        && !old
            .conditions
            .iter()
            .any(|o| o.type_ == ARCHIVING && o.status == "False")
    {
        let message = c.message.clone().unwrap_or_default();
        ctx.event(&obj, EventType::Warning, "ArchiveFailing", &message)
            .await;
        tracing::warn!(cluster = %name, "{message}");
    }
    let obj = ctx
        .get(Kind::SGShardedCluster, &ns, &name)
        .await?
        .unwrap_or(obj);
    write_status(&ctx, &obj, status).await?;
    Ok(Action::Requeue(SUPERVISE_EVERY))
}

fn rt_find_pg_bin(version: &str) -> Result<PathBuf, String> {
    let major = version.split('.').next().unwrap_or("");
    shardvault_pg::runtime::find_pg_bin(major)
        .map_err(|e| format!("spec.postgres.version: {version:?}: {e}"))
}

fn observed_status(o: &ClusterObserved, restore: Option<RestoreStatus>) -> ShardedClusterStatus {
    let ready = o.ready();
    let message = if ready {
        format!(
            "{} members, {} servers running",
            o.members.len(),
            o.members.iter().map(|m| m.instances.len()).sum::<usize>()
        )
    } else if let Some(w) = &o.wiring_error {
        format!("sharding wiring: {w}")
    } else {
        o.members
            .iter()
            .flat_map(|m| &m.instances)
            .filter_map(|i| i.reason.as_ref().map(|r| format!("{}: {r}", i.name)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let failing: Vec<String> = o
        .members
        .iter()
        .filter_map(|m| Some(format!("{}: {}", m.name, m.archive_failure.as_ref()?)))
        .collect();
    let archiving = if failing.is_empty() {
        condition(
            true,
            "Archiving",
            "WAL archiving works on every member".into(),
        )
    } else {
        condition(
            false,
            "ArchiveFailing",
            format!(
                "{}; check the storage of spec.configurations.backups (space, permissions, credentials)",
                failing.join("; ")
            ),
        )
    };
    ShardedClusterStatus {
        conditions: vec![
            condition(ready, if ready { "Running" } else { "NotReady" }, message),
            Condition {
                type_: ARCHIVING.into(),
                ..archiving
            },
        ],
        members: o
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                instances: m
                    .instances
                    .iter()
                    .map(|i| InstanceStatus {
                        name: i.name.clone(),
                        role: serde_json::to_value(i.role)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        port: i.port,
                        state: serde_json::to_value(i.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        reason: i.reason.clone(),
                    })
                    .collect(),
            })
            .collect(),
        restore,
    }
}

/// A checked restore: how each member starts, and what to seal first.
struct RestorePlan {
    bootstraps: Vec<Bootstrap>,
    status: RestoreStatus,
    /// Source members to give a commit record after now (timestamp targets, live source).
    seal_sources: Option<Vec<NodeConfig>>,
}

async fn plan_restore(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    spec: &ShardedClusterSpec,
    restore: &shardvault_api::shardedcluster::Restore,
) -> Result<RestorePlan, ReconcileError> {
    let from = &restore.from_backup;
    let backup = ctx.get(Kind::SGShardedBackup, ns, &from.name).await?;
    let status: Option<ShardedBackupStatus> = backup.as_ref().map(status_of);
    let mut target = check_restore(spec, from, status.as_ref(), jiff::Timestamp::now())
        .map_err(|e| ReconcileError::new("RestoreRefused", e))?;
    let status = status.expect("checked above");
    let backup = backup.expect("checked above");
    let secrets = Secrets::load(ctx, ns).await?;
    let concurrency = restore.download_disk_concurrency.unwrap_or(2).max(1) as usize;
    let recovery = match &target {
        ClusterTarget::RestorePoint(name) => RecoveryTarget::Name(name.clone()),
        ClusterTarget::Time { time, inclusive } => RecoveryTarget::Time {
            time: time.clone(),
            inclusive: *inclusive,
        },
    };
    let mut bootstraps = Vec::new();
    let mut members = Vec::new();
    let mut stored = Vec::new();
    for (i, sg_backup) in status.sg_backups.iter().enumerate() {
        let child = ctx.get(Kind::SGBackup, ns, sg_backup).await?.ok_or_else(|| {
            ReconcileError::new(
                "RestoreRefused",
                format!("spec.initialData.restore.fromBackup.name: SGBackup {sg_backup} of {:?} is missing", from.name),
            )
        })?;
        let config = child.pointer("/status/sgBackupConfig").ok_or_else(|| {
            ReconcileError::new(
                "RestoreRefused",
                format!("SGBackup {sg_backup} has no status.sgBackupConfig"),
            )
        })?;
        let source = backup_destination(config, &secrets, sg_backup)?;
        let manifest_sha256 = child
            .pointer("/status/backupInformation/manifestSha256")
            .and_then(Value::as_str)
            .map(str::to_string);
        stored.push((source.clone(), manifest_sha256));
        bootstraps.push(Bootstrap::Restore {
            source,
            backup: sg_backup.clone(),
            target: recovery.clone(),
            concurrency,
        });
        members.push(MemberRestoreStatus {
            name: spec.member_names(name)[i].clone(),
            sg_backup: sg_backup.clone(),
            phase: RestorePhase::Restoring,
            failure: None,
            failed_attempts: 0,
        });
    }
    let record = status
        .sharded_record_config
        .as_ref()
        .map(|c| backup_destination(c, &secrets, &from.name))
        .transpose()?;
    let stored: Vec<StoredMember> = stored
        .iter()
        .zip(&status.sg_backups)
        .map(|((destination, manifest_sha256), sg_backup)| StoredMember {
            sg_backup,
            destination,
            manifest_sha256: manifest_sha256.clone(),
        })
        .collect();
    check_stored(&from.name, &status, &stored, record.as_ref())
        .await
        .map_err(|e| ReconcileError::new("RestoreRefused", e))?;
    // Extension `pointInTimeRecovery.consistent`: every member stops at the newest
    // cluster-wide restore point at or before the time (see restore_points).
    if let (ClusterTarget::Time { time, .. }, Some(Bootstrap::Restore { source, .. }), Some(rp)) =
        (&target, bootstraps.first(), status.restore_point.as_ref())
        && from
            .point_in_time_recovery
            .as_ref()
            .and_then(|p| p.consistent)
            == Some(true)
    {
        let point = crate::restore_points::consistent_point(source, time, rp).await?;
        for b in &mut bootstraps {
            if let Bootstrap::Restore { target, .. } = b {
                *target = RecoveryTarget::Name(point.clone());
            }
        }
        target = ClusterTarget::RestorePoint(point);
    }
    let seal_sources = match target {
        ClusterTarget::Time { .. } => source_configs(ctx, ns, &backup).await,
        ClusterTarget::RestorePoint(_) => None,
    };
    Ok(RestorePlan {
        bootstraps,
        status: RestoreStatus {
            from_backup: from.name.clone(),
            target: Some(match &target {
                ClusterTarget::RestorePoint(n) => format!("restore point {n}"),
                ClusterTarget::Time { time, .. } => format!("time {time}"),
            }),
            members,
        },
        seal_sources,
    })
}

/// Restore attempts a member gets before the restore is given up as Failed.
const RESTORE_ATTEMPTS: u32 = 3;

impl RestorePlan {
    /// Carries the phases and failed attempts of earlier passes into this plan's status.
    fn keep_progress(&mut self, old: Option<&RestoreStatus>) {
        let Some(old) = old.filter(|o| o.from_backup == self.status.from_backup) else {
            return;
        };
        for m in &mut self.status.members {
            if let Some(o) = old.members.iter().find(|o| o.name == m.name) {
                m.phase = o.phase;
                m.failure = o.failure.clone();
                m.failed_attempts = o.failed_attempts;
            }
        }
    }
}

/// The message of a restore given up after too many failed attempts of a member.
fn given_up(restore: &RestoreStatus) -> Option<String> {
    let m = restore
        .members
        .iter()
        .find(|m| m.phase == RestorePhase::Failed && m.failed_attempts >= RESTORE_ATTEMPTS)?;
    Some(format!(
        "the restore of member {} from SGBackup {} failed {} times and was given up; the member \
         was not created. Last error: {}. Check the backup with `shardvault verify \
         sgshardedbackup {}`, then delete this cluster and restore from a good backup",
        m.name,
        m.sg_backup,
        m.failed_attempts,
        m.failure.as_deref().unwrap_or("unknown"),
        restore.from_backup
    ))
}

/// Sets each restoring member's phase from what the runtime saw of its primary (Completed
/// only when it runs); returns a sentence for each member that failed in this pass.
fn record_restore_outcome(restore: &mut RestoreStatus, observed: &ClusterObserved) -> Vec<String> {
    let mut failures = Vec::new();
    for m in &mut restore.members {
        if m.phase == RestorePhase::Completed {
            continue;
        }
        let primary = observed
            .members
            .iter()
            .find(|o| o.name == m.name)
            .and_then(|o| o.instances.first());
        match primary {
            Some(p) if p.state == rt::InstanceState::Running => {
                m.phase = RestorePhase::Completed;
                m.failure = None;
            }
            Some(p) => {
                let reason = p.reason.clone().unwrap_or_else(|| "not running".into());
                m.phase = RestorePhase::Failed;
                m.failed_attempts += 1;
                failures.push(format!(
                    "restore of member {} from SGBackup {} failed (attempt {} of {RESTORE_ATTEMPTS}): {reason}",
                    m.name, m.sg_backup, m.failed_attempts
                ));
                m.failure = Some(reason);
            }
            None => {}
        }
    }
    failures
}

/// The node configs of the backup's source cluster, when it still runs here.
async fn source_configs(ctx: &Ctx, ns: &str, backup: &Value) -> Option<Vec<NodeConfig>> {
    let spec: ShardedBackupSpec = spec_of(backup).ok()?;
    let observed = ClusterObserved::load(&cluster_dir(ctx, ns, &spec.sg_sharded_cluster)).ok()?;
    observed
        .members
        .iter()
        .map(|m| NodeConfig::load(&m.node_config).ok())
        .collect()
}
