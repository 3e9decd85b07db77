//! The SGShardedCluster controller: the cluster becomes servers run by the cluster runtime,
//! kept running; a cluster with `initialData.restore` is first checked, then each member is
//! restored from its SGBackup. Deleting the cluster stops and removes it (a finalizer).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use kube::{Client, Resource, ResourceExt};
use shardvault_api::backup::SGBackup;
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_api::shardedcluster::{
    Condition, InstanceStatus, MemberArchiving, MemberRestoreStatus, MemberStatus, Restore,
    RestorePhase, RestoreStatus, SGShardedCluster, ShardedClusterSpec, ShardedClusterStatus,
    ShardingType,
};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::runtime::cluster::{
    Bootstrap, ClusterObserved, InstanceState, MemberPlan, RecoveryTarget, Sharding,
};
use shardvault_pg::runtime::{ClusterId, DesiredCluster, RuntimeError};

use crate::archive::{ArchiveError, seal};
use crate::context::Context;
use crate::destination::member_destinations;
use crate::events::{self, EventType};
use crate::lookup::{self, LookupError};
use crate::resources::{BackupLocationError, backup_destination};
use crate::restore_check::{ClusterTarget, StoredMember, check_restore, check_stored};
use crate::restore_points::{ConsistentPointError, consistent_point};
use crate::restore_progress;
use crate::runner::{self, ReconcileFailure, Running};
use crate::status;

/// Finalizer that stops and removes the cluster's servers.
pub const FINALIZER: &str = "shardvault.io/cluster-servers";

/// Condition type saying whether every member's WAL archiving works.
const ARCHIVING: &str = "WALArchiving";

/// How often running clusters are checked (dead servers restarted).
const SUPERVISE_EVERY: Duration = Duration::from_secs(5);

/// How long a refused cluster waits before it is looked at again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// How often the progress of a restore is written while bytes move.
const RESTORE_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How often the runtime's restore board is looked at.
const RESTORE_LOOK_EVERY: Duration = Duration::from_millis(250);

/// Restore attempts a member gets before the restore is given up as Failed.
const RESTORE_ATTEMPTS: u32 = 3;

/// Why a sharded cluster could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API could not be read or written.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// `spec.postgres.version` cannot run here.
    #[error("spec.postgres.version: {version:?}: {cause}")]
    UnsupportedVersion {
        /// The version asked for.
        version: String,
        /// Why the runtime cannot run it.
        cause: RuntimeError,
    },
    /// A referenced storage or Secret is missing or unusable.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The restore cannot be done as asked; nothing was changed.
    #[error("{0}")]
    RestoreRefused(String),
    /// The storage of a member's SGBackup cannot be located.
    #[error(transparent)]
    BackupLocation(#[from] BackupLocationError),
    /// The restore point of a consistent timestamp restore cannot be chosen.
    #[error(transparent)]
    ConsistentPoint(#[from] ConsistentPointError),
    /// A source member could not be sealed before a timestamp restore.
    #[error("source member {member}: {cause}")]
    Seal {
        /// The source member.
        member: String,
        /// What failed.
        cause: ArchiveError,
    },
    /// A member restore failed too often and was given up.
    #[error("{0}")]
    RestoreGivenUp(String),
    /// The runtime could not create, start or wire the servers.
    #[error("{0}")]
    Runtime(RuntimeError),
    /// The runtime could not remove the servers.
    #[error("removing the servers: {0}")]
    Delete(RuntimeError),
}

impl ReconcileFailure for ClusterError {
    fn reason(&self) -> &str {
        match self {
            ClusterError::Api(_) => "ApiError",
            ClusterError::UnsupportedVersion { .. } => "UnsupportedVersion",
            ClusterError::Lookup(e) => e.reason(),
            ClusterError::RestoreRefused(_) => "RestoreRefused",
            ClusterError::BackupLocation(e) => e.reason(),
            ClusterError::ConsistentPoint(e) => e.reason(),
            ClusterError::Seal { .. } | ClusterError::RestoreGivenUp(_) => "RestoreFailed",
            ClusterError::Runtime(_) => "ReconcileFailed",
            ClusterError::Delete(_) => "DeleteFailed",
        }
    }
}

/// The cluster controller, ready to run.
pub fn controller(ctx: Arc<Context>) -> Running {
    runner::running(
        "servers",
        runner::controller::<SGShardedCluster>(&ctx),
        reconcile,
        ctx,
    )
}

/// Reconciles one SGShardedCluster: runs it, or removes it when it is being deleted.
pub async fn reconcile(
    obj: Arc<SGShardedCluster>,
    ctx: Arc<Context>,
) -> Result<Action, finalizer::Error<ClusterError>> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<SGShardedCluster> = Api::namespaced(ctx.client.clone(), &ns);
    // Said once, on the first pass (before the finalizer is added).
    if !obj.finalizers().iter().any(|f| f == FINALIZER)
        && obj.meta().deletion_timestamp.is_none()
        && let Some(message) = shardvault_api::ignored::not_acted_on_message(&obj.spec)
    {
        events::record(
            &ctx.client,
            &*obj,
            EventType::Normal,
            "FieldsNotActedOn",
            &message,
        )
        .await;
    }
    finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(&obj, &ctx, &api).await,
            Event::Cleanup(obj) => {
                let id = ClusterId::new(&ns, obj.name_any());
                ctx.runtime
                    .destroy(&id)
                    .await
                    .map_err(ClusterError::Delete)?;
                Ok(Action::await_change())
            }
        }
    })
    .await
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

/// Keeps the transition time of conditions that did not change, so status stays quiet.
fn keep_transition_times(old: &ShardedClusterStatus, new: &mut ShardedClusterStatus) {
    for c in &mut new.conditions {
        if let Some(o) = old.conditions.iter().find(|o| o.type_ == c.type_)
            && o.status == c.status
            && o.reason == c.reason
            && o.message == c.message
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// One reconcile's view of a cluster: the object, its API, and the status as last written.
struct Pass<'a> {
    obj: &'a SGShardedCluster,
    api: &'a Api<SGShardedCluster>,
    client: &'a Client,
    current: ShardedClusterStatus,
}

impl Pass<'_> {
    async fn write(&mut self, mut status: ShardedClusterStatus) -> Result<(), ClusterError> {
        keep_transition_times(&self.current, &mut status);
        status::replace(self.api, self.obj, &self.current, &status).await?;
        self.current = status;
        Ok(())
    }

    async fn event(&self, kind: EventType, reason: &str, message: &str) {
        events::record(self.client, self.obj, kind, reason, message).await;
    }

    /// Says why the cluster cannot be run (once per new reason and message) and looks
    /// again later.
    async fn refuse(&mut self, e: ClusterError) -> Result<Action, ClusterError> {
        let (reason, message) = (e.reason().to_string(), e.message());
        let already = self.current.conditions.iter().any(|c| {
            c.reason.as_deref() == Some(reason.as_str())
                && c.message.as_deref() == Some(message.as_str())
        });
        if !already {
            self.event(EventType::Warning, &reason, &message).await;
        }
        let status = ShardedClusterStatus {
            conditions: vec![condition(false, &reason, message)],
            ..self.current.clone()
        };
        self.write(status).await?;
        Ok(Action::requeue(REFUSED_RETRY))
    }
}

async fn apply(
    obj: &SGShardedCluster,
    ctx: &Context,
    api: &Api<SGShardedCluster>,
) -> Result<Action, ClusterError> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let id = ClusterId::new(&ns, &name);
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let mut pass = Pass {
        obj,
        api,
        client: &ctx.client,
        current: old.clone(),
    };
    let version = spec
        .postgres
        .as_ref()
        .map(|p| p.version.clone())
        .unwrap_or_default();
    if let Err(source) = ctx.runtime.check_version(&version) {
        return pass
            .refuse(ClusterError::UnsupportedVersion {
                version,
                cause: source,
            })
            .await;
    }
    let storages = match lookup::cluster_storages(&ctx.client, &ns, spec).await {
        Ok(s) => s,
        Err(e) => return pass.refuse(e.into()).await,
    };
    let resolved: Vec<_> = storages.iter().map(|(_, r)| r.clone()).collect();
    let dests = member_destinations(&name, &ns, spec, &resolved);
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
                return pass.refuse(ClusterError::RestoreGivenUp(message)).await;
            }
            match plan_restore(ctx, &ns, &name, spec, r).await {
                Ok(mut p) => {
                    p.keep_progress(old.restore.as_ref());
                    Some(p)
                }
                Err(e) => return pass.refuse(e).await,
            }
        }
        None => None,
    };
    let existing = restored.as_ref().map(|from| Bootstrap::Existing {
        origin: format!("restored from backup {from}"),
    });
    let desired = desired_cluster(id.clone(), spec, version, dests, |i| {
        match (&restore, &existing) {
            (Some(r), _) => r.bootstraps[i].clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => Bootstrap::Initdb,
        }
    });
    if let Some(r) = &restore {
        // Once, when the restore begins (the status below records that it did): later
        // passes restore from the same archive, and the source may be gone by then.
        let begun = old
            .restore
            .as_ref()
            .is_some_and(|o| o.from_backup == r.status.from_backup);
        for cfg in r.seal_sources.iter().flatten().filter(|_| !begun) {
            seal(cfg, true, None, Duration::from_secs(120))
                .await
                .map_err(|source| ClusterError::Seal {
                    member: cfg.member.clone(),
                    cause: source,
                })?;
        }
        let status = ShardedClusterStatus {
            conditions: vec![condition(
                false,
                "Restoring",
                format!("restoring from {}", r.status.from_backup),
            )],
            members: old.members.clone(),
            restore: Some(r.status.clone()),
        };
        pass.write(status).await?;
    }
    let reconciled = ctx.runtime.reconcile(desired);
    let reconciled = match &restore {
        Some(r) => follow_restore(&mut pass, ctx, &id, &r.target_lsns, reconciled).await?,
        None => reconciled.await,
    };
    let observed = match reconciled {
        Ok(o) => o,
        Err(e) => {
            let e = ClusterError::Runtime(e);
            let status = ShardedClusterStatus {
                conditions: vec![condition(false, e.reason(), e.message())],
                ..pass.current.clone()
            };
            pass.write(status).await?;
            return Err(e);
        }
    };
    for action in &observed.actions {
        pass.event(EventType::Normal, "Reconciled", action).await;
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
            pass.event(EventType::Warning, "WiringFailed", &message)
                .await;
        }
    }
    let mut restore_status = restore.map(|r| r.status).or(old.restore.clone());
    if let Some(r) = restore_status.as_mut().filter(|_| restored.is_none()) {
        for event in record_restore_outcome(r, &observed) {
            pass.event(EventType::Warning, "RestoreFailed", &event)
                .await;
        }
    }
    let status = observed_status(&observed, restore_status);
    if let Some(c) = archiving_newly_failing(&old, &status) {
        let message = c.message.clone().unwrap_or_default();
        pass.event(EventType::Warning, "ArchiveFailing", &message)
            .await;
        tracing::warn!(cluster = %name, "{message}");
    }
    pass.write(status).await?;
    Ok(Action::requeue(SUPERVISE_EVERY))
}

/// Awaits a reconcile that restores members, writing where each member's restore is
/// meanwhile: at once when a member moves to its next step, else every few seconds.
async fn follow_restore(
    pass: &mut Pass<'_>,
    ctx: &Context,
    id: &ClusterId,
    target_lsns: &[Option<String>],
    reconciled: BoxFuture<'static, Result<ClusterObserved, RuntimeError>>,
) -> Result<Result<ClusterObserved, RuntimeError>, ClusterError> {
    let mut reconciled = reconciled;
    let mut look = tokio::time::interval(RESTORE_LOOK_EVERY);
    let mut rates = restore_progress::Rates::default();
    let mut written = tokio::time::Instant::now();
    loop {
        tokio::select! {
            r = &mut reconciled => return Ok(r),
            _ = look.tick() => {
                let seen = ctx.runtime.restore_progress(id);
                let mut status = pass.current.clone();
                let Some(restore) = status.restore.as_mut() else { continue };
                let steps = |r: &shardvault_api::shardedcluster::RestoreStatus| -> Vec<_> {
                    r.members.iter().map(|m| m.progress.as_ref().map(|p| p.phase)).collect()
                };
                let before = steps(restore);
                let changed = restore_progress::apply(restore, &seen, target_lsns, &mut rates);
                let stepped = steps(restore) != before;
                if stepped || (changed && written.elapsed() >= RESTORE_PROGRESS_EVERY) {
                    pass.write(status).await?;
                    written = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// The WALArchiving condition of `new` when it is False and was not False in `old`.
fn archiving_newly_failing<'a>(
    old: &ShardedClusterStatus,
    new: &'a ShardedClusterStatus,
) -> Option<&'a Condition> {
    new.conditions
        .iter()
        .find(|c| c.type_ == ARCHIVING && c.status == "False")
        .filter(|_| {
            !old.conditions
                .iter()
                .any(|o| o.type_ == ARCHIVING && o.status == "False")
        })
}

/// What the runtime should run for `spec`: members in order, each started as `bootstrap`
/// says.
fn desired_cluster(
    id: ClusterId,
    spec: &ShardedClusterSpec,
    postgres_version: String,
    dests: Vec<Vec<shardvault_storage::Destination>>,
    bootstrap: impl Fn(usize) -> Bootstrap,
) -> DesiredCluster {
    let instances = |n: i64| n.max(1) as u32;
    DesiredCluster {
        members: spec
            .member_names(&id.name)
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
                bootstrap: bootstrap(i),
            })
            .collect(),
        id,
        postgres_version,
        database: spec.database.clone().unwrap_or_else(|| "postgres".into()),
        sharding: match spec.sharding_type() {
            ShardingType::Citus => Sharding::Citus,
            ShardingType::Ddp => Sharding::Ddp,
        },
    }
}

fn lowercase_name<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
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
        .filter_map(|m| {
            let failure = m.archiving.as_ref()?.failure.as_ref()?;
            Some(format!("{}: {failure}", m.name))
        })
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
                        role: lowercase_name(i.role),
                        port: i.port,
                        state: lowercase_name(i.state),
                        reason: i.reason.clone(),
                    })
                    .collect(),
                archiving: m.archiving.as_ref().map(|a| MemberArchiving {
                    last_archived_wal: a.last_archived_wal.clone(),
                    last_archived_time: a.last_archived_time.clone(),
                    pending_segments: a.pending_segments,
                    pending_bytes: a.pending_bytes,
                    failing: a.failure.is_some(),
                }),
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
    /// Where each member's replay stops, when the target is the backup's own restore point.
    target_lsns: Vec<Option<String>>,
}

async fn plan_restore(
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &ShardedClusterSpec,
    restore: &Restore,
) -> Result<RestorePlan, ClusterError> {
    let from = &restore.from_backup;
    let backups: Api<SGShardedBackup> = ctx.api(ns);
    let backup = backups.get_opt(&from.name).await?;
    let status = backup
        .as_ref()
        .map(|b| b.status.clone().unwrap_or_default());
    let mut target = check_restore(spec, from, status.as_ref(), jiff::Timestamp::now())
        .map_err(|e| ClusterError::RestoreRefused(e.to_string()))?;
    let (Some(backup), Some(status)) = (backup, status) else {
        unreachable!("check_restore refuses a missing backup");
    };
    let secrets = lookup::secrets(&ctx.client, ns).await?;
    let concurrency = restore.download_disk_concurrency.unwrap_or(2).max(1) as usize;
    let recovery = match &target {
        ClusterTarget::RestorePoint(name) => RecoveryTarget::Name(name.clone()),
        ClusterTarget::Time { time, inclusive } => RecoveryTarget::Time {
            time: time.clone(),
            inclusive: *inclusive,
        },
    };
    let members_api: Api<SGBackup> = ctx.api(ns);
    let mut bootstraps = Vec::new();
    let mut members = Vec::new();
    let mut stored = Vec::new();
    for (i, sg_backup) in status.sg_backups.iter().enumerate() {
        let child = members_api.get_opt(sg_backup).await?.ok_or_else(|| {
            ClusterError::RestoreRefused(format!(
                "spec.initialData.restore.fromBackup.name: SGBackup {sg_backup} of {:?} is missing",
                from.name
            ))
        })?;
        let child_status = child.status.unwrap_or_default();
        let config = child_status.sg_backup_config.as_ref().ok_or_else(|| {
            ClusterError::RestoreRefused(format!(
                "SGBackup {sg_backup} has no status.sgBackupConfig"
            ))
        })?;
        let source = backup_destination(config, &secrets, sg_backup)?;
        let manifest_sha256 = child_status
            .backup_information
            .and_then(|b| b.manifest_sha256);
        stored.push((source.clone(), manifest_sha256));
        // A volume snapshot backup is cloned (its data is not in storage).
        bootstraps.push(match child_status.volume_snapshot {
            Some(snapshot) => Bootstrap::CloneSnapshot {
                source,
                backup: sg_backup.clone(),
                snapshot: snapshot.name,
                target: recovery.clone(),
            },
            None => Bootstrap::Restore {
                source,
                backup: sg_backup.clone(),
                target: recovery.clone(),
                concurrency,
            },
        });
        members.push(MemberRestoreStatus {
            name: spec.member_names(name)[i].clone(),
            sg_backup: sg_backup.clone(),
            phase: RestorePhase::Restoring,
            failure: None,
            failed_attempts: 0,
            progress: None,
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
        .map_err(ClusterError::RestoreRefused)?;
    // Extension `pointInTimeRecovery.consistent`: every member stops at the newest
    // cluster-wide restore point at or before the time (see restore_points).
    if let (
        ClusterTarget::Time { time, .. },
        Some(Bootstrap::Restore { source, .. } | Bootstrap::CloneSnapshot { source, .. }),
        Some(rp),
    ) = (&target, bootstraps.first(), status.restore_point.as_ref())
        && from
            .point_in_time_recovery
            .as_ref()
            .and_then(|p| p.consistent)
            == Some(true)
    {
        let point = consistent_point(source, time, rp).await?;
        for b in &mut bootstraps {
            if let Bootstrap::Restore { target, .. } | Bootstrap::CloneSnapshot { target, .. } = b {
                *target = RecoveryTarget::Name(point.clone());
            }
        }
        target = ClusterTarget::RestorePoint(point);
    }
    let target_lsns = match (&target, status.restore_point.as_ref()) {
        (ClusterTarget::RestorePoint(n), Some(rp)) if *n == rp.name => {
            rp.members.iter().map(|m| Some(m.lsn.clone())).collect()
        }
        _ => Vec::new(),
    };
    let seal_sources = match target {
        ClusterTarget::Time { .. } => source_configs(ctx, ns, &backup),
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
        target_lsns,
    })
}

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
                m.progress = o.progress.clone();
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
            Some(p) if p.state == InstanceState::Running => {
                m.phase = RestorePhase::Completed;
                m.failure = None;
                m.progress = None;
            }
            Some(p) => {
                m.progress = None;
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

/// The node configs of the backup's source cluster, when it still runs.
fn source_configs(ctx: &Context, ns: &str, backup: &SGShardedBackup) -> Option<Vec<NodeConfig>> {
    let id = ClusterId::new(ns, &backup.spec.sg_sharded_cluster);
    let endpoints = ctx.runtime.endpoints(&id).ok()?;
    Some(
        endpoints
            .members
            .into_iter()
            .map(|m| m.node_config)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardvault_pg::runtime::archiver::{ArchiveFailure, ArchiveState};
    use shardvault_pg::runtime::cluster::{InstanceObserved, MemberObserved, Role};

    fn instance(
        name: &str,
        role: Role,
        state: InstanceState,
        reason: Option<&str>,
    ) -> InstanceObserved {
        InstanceObserved {
            name: name.into(),
            role,
            port: 5432,
            state,
            reason: reason.map(str::to_string),
            pgdata: format!("/nowhere/{name}/data").into(),
        }
    }

    fn observed(primary_state: InstanceState, reason: Option<&str>) -> ClusterObserved {
        ClusterObserved {
            name: "c".into(),
            pg_bin: "/usr/lib/postgresql/15/bin".into(),
            socket_dir: "/nowhere/sock".into(),
            database: "db".into(),
            members: ["c-coord", "c-shard0"]
                .into_iter()
                .map(|m| MemberObserved {
                    name: m.into(),
                    node_config: "/nowhere/node.json".into(),
                    instances: vec![
                        instance(&format!("{m}-0"), Role::Primary, primary_state, reason),
                        instance(
                            &format!("{m}-1"),
                            Role::Replica,
                            InstanceState::Running,
                            None,
                        ),
                    ],
                    archiving: None,
                })
                .collect(),
            wiring_error: None,
            actions: Vec::new(),
        }
    }

    fn restoring(attempts: u32, phase: RestorePhase) -> RestoreStatus {
        RestoreStatus {
            from_backup: "b1".into(),
            target: Some("restore point b1".into()),
            members: ["c-coord", "c-shard0"]
                .into_iter()
                .enumerate()
                .map(|(i, m)| MemberRestoreStatus {
                    name: m.into(),
                    sg_backup: format!("b1-{}", if i == 0 { "coord" } else { "shard0" }),
                    phase,
                    failure: (phase == RestorePhase::Failed).then(|| "bad WAL".into()),
                    failed_attempts: attempts,
                    progress: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_running_cluster_is_ready_with_every_instance_in_status() {
        let status = observed_status(&observed(InstanceState::Running, None), None);
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(
            ready.message.as_deref(),
            Some("2 members, 4 servers running")
        );
        assert_eq!(status.conditions[1].type_, ARCHIVING);
        assert_eq!(status.conditions[1].status, "True");
        let first = &status.members[0].instances[0];
        assert_eq!(
            (first.role.as_str(), first.state.as_str()),
            ("primary", "running")
        );
        assert_eq!(status.members[1].instances[1].role, "replica");
    }

    #[test]
    fn a_failed_server_makes_the_cluster_not_ready_with_its_reason() {
        let status = observed_status(
            &observed(InstanceState::Failed, Some("could not start")),
            None,
        );
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("NotReady"))
        );
        assert_eq!(
            ready.message.as_deref(),
            Some("c-coord-0: could not start; c-shard0-0: could not start")
        );
    }

    #[test]
    fn archive_failures_are_a_false_condition_said_once() {
        let mut o = observed(InstanceState::Running, None);
        o.members[1].archiving = Some(ArchiveState {
            last_archived_wal: Some("000000010000000000000001".into()),
            last_archived_time: Some("2026-12-01 09:59:00 UTC".into()),
            pending_segments: 1,
            pending_bytes: 1 << 24,
            failure: Some(ArchiveFailure {
                last_failed_wal: "000000010000000000000002".into(),
                last_failed_time: "2026-12-01 10:00:00 UTC".into(),
                failed_count: 3,
                pg_wal_bytes: 1 << 24,
            }),
        });
        let failing = observed_status(&o, None);
        let c = archiving_newly_failing(&ShardedClusterStatus::default(), &failing)
            .expect("newly failing");
        assert!(
            c.message.as_deref().unwrap().starts_with("c-shard0: "),
            "{c:?}"
        );
        assert!(archiving_newly_failing(&failing, &failing).is_none());
    }

    #[test]
    fn a_restored_member_completes_only_when_its_primary_runs() {
        let mut r = restoring(0, RestorePhase::Restoring);
        assert!(record_restore_outcome(&mut r, &observed(InstanceState::Running, None)).is_empty());
        assert!(r.members.iter().all(|m| m.phase == RestorePhase::Completed));
        let mut r = restoring(0, RestorePhase::Restoring);
        let failures =
            record_restore_outcome(&mut r, &observed(InstanceState::Failed, Some("bad WAL")));
        assert_eq!(failures.len(), 2);
        assert!(
            failures[0].contains("attempt 1 of 3): bad WAL"),
            "{failures:?}"
        );
        assert!(
            r.members
                .iter()
                .all(|m| m.phase == RestorePhase::Failed && m.failed_attempts == 1)
        );
    }

    #[test]
    fn a_restore_is_given_up_after_three_failed_attempts_never_before() {
        assert_eq!(given_up(&restoring(2, RestorePhase::Failed)), None);
        assert_eq!(given_up(&restoring(3, RestorePhase::Completed)), None);
        let message = given_up(&restoring(3, RestorePhase::Failed)).expect("given up");
        assert!(
            message.contains("member c-coord from SGBackup b1-coord failed 3 times"),
            "{message}"
        );
        assert!(message.contains("the member was not created"), "{message}");
        assert!(message.contains("Last error: bad WAL"), "{message}");
    }

    #[test]
    fn a_new_plan_keeps_the_progress_of_the_same_restore_only() {
        let mut plan = RestorePlan {
            bootstraps: Vec::new(),
            status: restoring(0, RestorePhase::Restoring),
            seal_sources: None,
            target_lsns: Vec::new(),
        };
        plan.keep_progress(Some(&restoring(2, RestorePhase::Failed)));
        assert!(
            plan.status
                .members
                .iter()
                .all(|m| m.failed_attempts == 2 && m.phase == RestorePhase::Failed)
        );
        let mut other = restoring(1, RestorePhase::Failed);
        other.from_backup = "b2".into();
        let mut plan = RestorePlan {
            bootstraps: Vec::new(),
            status: restoring(0, RestorePhase::Restoring),
            seal_sources: None,
            target_lsns: Vec::new(),
        };
        plan.keep_progress(Some(&other));
        assert!(plan.status.members.iter().all(|m| m.failed_attempts == 0));
    }

    #[test]
    fn the_desired_cluster_has_the_coordinator_first_and_restores_every_member() {
        let spec: ShardedClusterSpec = serde_json::from_value(serde_json::json!({
            "type": "ddp", "database": "db", "postgres": {"version": "15"},
            "coordinator": {"instances": 2}, "shards": {"clusters": 2, "instancesPerCluster": 1},
        }))
        .unwrap_or_else(|e| panic!("spec fixture: {e}"));
        let d = desired_cluster(
            ClusterId::new("ns", "c"),
            &spec,
            "15".into(),
            vec![Vec::new(); 3],
            |_| Bootstrap::Existing {
                origin: "restored from backup b1".into(),
            },
        );
        let names: Vec<_> = d
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.instances))
            .collect();
        assert_eq!(names, [("c-coord", 2), ("c-shard0", 1), ("c-shard1", 1)]);
        assert!(
            d.members
                .iter()
                .all(|m| matches!(m.bootstrap, Bootstrap::Existing { .. }))
        );
        assert_eq!((d.database.as_str(), d.sharding), ("db", Sharding::Ddp));
    }
}
