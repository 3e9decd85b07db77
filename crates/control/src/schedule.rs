//! The backup scheduler: each `backups[]` entry of an SGShardedCluster with a `cronSchedule`
//! (5 fields, UTC) gets managed SGShardedBackups named `<cluster>-YYYY-MM-DD-HH-MM-SS`.
//!
//! Concurrency is Forbid: a run due while the entry's previous scheduled backup is still
//! Pending or Running is skipped (Event `ScheduleSkipped`). Runs missed while the daemon was
//! down collapse into at most one catch-up run, made only within the starting deadline.
//!
//! The schedule state lives in the cluster's annotation `shardvault.io/backup-schedule` (a
//! JSON list, one item per entry), written as a merge patch of that one annotation through
//! the API: it overwrites no other writer's change, survives daemon restarts, and leaves
//! `status` to the cluster controller, which rewrites it from its own fields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use shardvault_api::backup::BackupPhase;
use shardvault_api::shardedbackup::{SGShardedBackup, ShardedBackupSpec};
use shardvault_api::shardedcluster::SGShardedCluster;

use crate::backup_controller::ENTRY_ANNOTATION;
use crate::context::Context;
use crate::events::{self, EventType};
use crate::runner::{self, ReconcileFailure, Running};

/// Annotation holding the schedule state of every entry of a cluster.
pub const SCHEDULE_ANNOTATION: &str = "shardvault.io/backup-schedule";

/// Label naming the SGShardedCluster of a scheduled SGShardedBackup.
pub const CLUSTER_LABEL: &str = "stackgres.io/cluster-name";

/// Label naming the backups[] entry (index) of a scheduled SGShardedBackup.
pub const ENTRY_LABEL: &str = "shardvault.io/backup-entry";

/// How late a run may start and still be made (as a CronJob's startingDeadlineSeconds).
pub const STARTING_DEADLINE: SignedDuration = SignedDuration::from_secs(300);

/// The schedule state of one backups[] entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntrySchedule {
    /// Index in `spec.configurations.backups`.
    pub entry: usize,
    /// The cron expression this state was computed for.
    pub cron_schedule: String,
    /// Scheduled time of the last backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
    /// When the next run is due.
    pub next_schedule_time: Timestamp,
}

/// What to do about one entry now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due.
    Wait,
    /// Create the backup of this scheduled time.
    Run(Timestamp),
    /// The run of this time is skipped: the previous one is still going.
    Skip(Timestamp),
    /// The run of this time is past the starting deadline; `missed` runs were lost.
    Missed {
        /// The latest scheduled time that was due.
        at: Timestamp,
        /// How many scheduled times passed without a run.
        missed: usize,
    },
}

/// Parses a 5-field cron expression (UTC).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    shardvault_api::validate::check_cron(expr)
}

fn utc(t: Timestamp) -> jiff::Zoned {
    t.to_zoned(TimeZone::UTC)
}

/// The first scheduled time strictly after `t`.
pub fn next_after(cron: &Cron, t: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&utc(t), false)
        .ok()
        .map(|z| z.timestamp())
}

/// Decides what to do for one entry at `now`, and the state to record afterwards. `busy`
/// tells whether the entry's previous scheduled backup is still Pending or Running.
pub fn decide(
    cron: &Cron,
    expr: &str,
    entry: usize,
    state: Option<&EntrySchedule>,
    now: Timestamp,
    busy: bool,
    deadline: SignedDuration,
) -> (EntrySchedule, Decision) {
    let fresh = |last: Option<Timestamp>| EntrySchedule {
        entry,
        cron_schedule: expr.to_string(),
        last_schedule_time: last,
        next_schedule_time: next_after(cron, now).unwrap_or(now),
    };
    let Some(state) = state.filter(|s| s.cron_schedule == expr) else {
        // A new or changed schedule starts from now: nothing before it is owed.
        return (
            fresh(state.and_then(|s| s.last_schedule_time)),
            Decision::Wait,
        );
    };
    if now < state.next_schedule_time {
        return (state.clone(), Decision::Wait);
    }
    let due = cron
        .find_previous_occurrence(&utc(now), true)
        .map(|z| z.timestamp())
        .unwrap_or(state.next_schedule_time);
    let decision = if now.duration_since(due) > deadline {
        let missed = cron
            .iter_from(utc(state.next_schedule_time), croner::Direction::Forward)
            .take_while(|z| z.timestamp() <= due)
            .count();
        Decision::Missed { at: due, missed }
    } else if busy {
        Decision::Skip(due)
    } else {
        Decision::Run(due)
    };
    let last = match decision {
        Decision::Run(at) => Some(at),
        _ => state.last_schedule_time,
    };
    (fresh(last), decision)
}

/// The name of the backup scheduled at `at`: `<cluster>-YYYY-MM-DD-HH-MM-SS` (UTC).
pub fn backup_name(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-{}", at.strftime("%Y-%m-%d-%H-%M-%S"))
}

/// The schedule state recorded in a cluster's [`SCHEDULE_ANNOTATION`] (empty when none or
/// unreadable).
pub fn recorded(annotation: Option<&str>) -> Vec<EntrySchedule> {
    annotation
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Why the scheduler could not look after a cluster's schedules.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The API could not be read or written.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// A `cronSchedule` is not a 5-field cron expression.
    #[error("spec.configurations.backups[{entry}].cronSchedule: {message}")]
    InvalidSchedule {
        /// Index of the entry.
        entry: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Both names a scheduled run may take belong to other backups.
    #[error(
        "backups[{entry}]: SGShardedBackups {name} and {name}-{entry} exist and are not this entry's: rename or delete them"
    )]
    NameTaken {
        /// Index of the entry.
        entry: usize,
        /// The scheduled name.
        name: String,
    },
}

impl ReconcileFailure for ScheduleError {
    fn reason(&self) -> &str {
        match self {
            ScheduleError::Api(_) => "ApiError",
            ScheduleError::InvalidSchedule { .. } => "InvalidSchedule",
            ScheduleError::NameTaken { .. } => "ScheduleFailed",
        }
    }
}

/// The scheduler, ready to run: creates scheduled SGShardedBackups for every backups[] entry
/// with a `cronSchedule`.
pub fn controller(ctx: Arc<Context>) -> Running {
    runner::running(
        "schedules",
        runner::controller::<SGShardedCluster>(&ctx),
        reconcile,
        ctx,
    )
}

/// True when a scheduled backup of `entry` of `cluster` is Pending or Running.
async fn entry_busy(
    api: &Api<SGShardedBackup>,
    cluster: &str,
    entry: usize,
) -> Result<bool, kube::Error> {
    let selector = format!("{CLUSTER_LABEL}={cluster},{ENTRY_LABEL}={entry}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .any(|b| {
            b.meta().deletion_timestamp.is_none()
                && !matches!(
                    b.status.as_ref().map(|s| s.process.status),
                    Some(BackupPhase::Completed | BackupPhase::Failed)
                )
        }))
}

/// The SGShardedBackup of run `name` of `entry` of `cluster`.
fn scheduled_backup(cluster: &SGShardedCluster, entry: usize, name: &str) -> SGShardedBackup {
    let e = &cluster.spec.backups()[entry];
    let mut backup = SGShardedBackup::new(
        name,
        ShardedBackupSpec {
            sg_sharded_cluster: cluster.name_any(),
            managed_lifecycle: Some(true),
            timeout: e.timeout.clone(),
            max_retries: e.max_retries,
            reconciliation_timeout: None,
        },
    );
    backup.metadata.namespace = cluster.namespace();
    backup.metadata.labels = Some(BTreeMap::from([
        (CLUSTER_LABEL.to_string(), cluster.name_any()),
        (ENTRY_LABEL.to_string(), entry.to_string()),
    ]));
    backup.metadata.annotations = Some(BTreeMap::from([(
        ENTRY_ANNOTATION.to_string(),
        entry.to_string(),
    )]));
    backup
}

/// Creates the backup of `entry` scheduled as `name` and returns its name: `name` itself,
/// or `name-<entry>` when another entry's run of the same time already took `name`.
async fn create_backup(
    api: &Api<SGShardedBackup>,
    cluster: &SGShardedCluster,
    entry: usize,
    name: &str,
) -> Result<String, ScheduleError> {
    for candidate in [name.to_string(), format!("{name}-{entry}")] {
        let backup = scheduled_backup(cluster, entry, &candidate);
        match api.create(&PostParams::default(), &backup).await {
            Ok(_) => return Ok(candidate),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let same_entry = api
                    .get_opt(&candidate)
                    .await?
                    .is_some_and(|b| b.labels().get(ENTRY_LABEL) == Some(&entry.to_string()));
                if same_entry {
                    // Created before a crash that lost the state write: the run is made.
                    return Ok(candidate);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ScheduleError::NameTaken {
        entry,
        name: name.to_string(),
    })
}

/// Sets annotation `key` of SGShardedCluster `name` to `text` (a merge patch of that one
/// annotation, so it overwrites no other writer's change); nothing when the cluster is gone.
pub(crate) async fn set_annotation(
    api: &Api<SGShardedCluster>,
    name: &str,
    key: &str,
    text: &str,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: text}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

/// The time until `at`, at least 100 ms.
pub(crate) fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or_default()
        .max(Duration::from_millis(100))
}

/// Makes the scheduled runs of a cluster's backups[] entries that are due, and looks again
/// when the next one is due (or at the clock's poll, whichever comes first).
async fn reconcile(obj: Arc<SGShardedCluster>, ctx: Arc<Context>) -> Result<Action, ScheduleError> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (ns, cluster) = (
        obj.namespace().unwrap_or_else(|| "default".into()),
        obj.name_any(),
    );
    let backups: Api<SGShardedBackup> = ctx.api(&ns);
    let old = recorded(
        obj.annotations()
            .get(SCHEDULE_ANNOTATION)
            .map(String::as_str),
    );
    let (clock, deadline) = (&ctx.clock, STARTING_DEADLINE);
    let now = clock.now();
    let mut states = Vec::new();
    let mut wake = clock.poll();
    for (i, entry) in obj.spec.backups().iter().enumerate() {
        let Some(expr) = entry.cron_schedule.as_deref() else {
            continue;
        };
        let cron = parse_cron(expr)
            .map_err(|message| ScheduleError::InvalidSchedule { entry: i, message })?;
        let state = old.iter().find(|s| s.entry == i);
        let due = state.is_some_and(|s| s.cron_schedule == expr && now >= s.next_schedule_time);
        let busy = due && entry_busy(&backups, &cluster, i).await?;
        let (next, decision) = decide(&cron, expr, i, state, now, busy, deadline);
        let said = match decision {
            Decision::Wait => None,
            Decision::Run(at) => {
                let name = create_backup(&backups, &obj, i, &backup_name(&cluster, at)).await?;
                Some((
                    EventType::Normal,
                    "BackupScheduled",
                    format!("backups[{i}] ({expr}): created SGShardedBackup {name}"),
                ))
            }
            Decision::Skip(at) => Some((
                EventType::Warning,
                "ScheduleSkipped",
                format!(
                    "backups[{i}] ({expr}): run of {at} skipped: the previous scheduled backup is still Pending or Running (concurrency Forbid)"
                ),
            )),
            Decision::Missed { at, missed } => Some((
                EventType::Warning,
                "ScheduleMissed",
                format!(
                    "backups[{i}] ({expr}): {missed} run(s) missed, the latest at {at} is more than {} s late (starting deadline)",
                    deadline.as_secs()
                ),
            )),
        };
        if let Some((kind, reason, message)) = said {
            events::record(&ctx.client, &*obj, kind, reason, &message).await;
        }
        wake = wake.min(until(next.next_schedule_time, now));
        states.push(next);
    }
    if states != old {
        let text = serde_json::to_string(&states).expect("schedule serializes");
        set_annotation(&ctx.api(&ns), &cluster, SCHEDULE_ANNOTATION, &text).await?;
    }
    if states.is_empty() {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(wake))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn step(state: Option<&EntrySchedule>, now: &str, busy: bool) -> (EntrySchedule, Decision) {
        let expr = "0 * * * *";
        decide(
            &parse_cron(expr).unwrap(),
            expr,
            0,
            state,
            t(now),
            busy,
            STARTING_DEADLINE,
        )
    }

    #[test]
    fn hourly_runs_once_per_hour_and_forbids_overlap() {
        let (s, d) = step(None, "2030-01-01T00:10:00Z", false);
        assert_eq!(
            d,
            Decision::Wait,
            "a new schedule owes nothing for the past"
        );
        assert_eq!(s.next_schedule_time, t("2030-01-01T01:00:00Z"));
        let (s2, d) = step(Some(&s), "2030-01-01T00:59:59Z", false);
        assert_eq!((d, &s2), (Decision::Wait, &s));
        let (s, d) = step(Some(&s), "2030-01-01T01:00:07Z", false);
        assert_eq!(d, Decision::Run(t("2030-01-01T01:00:00Z")));
        assert_eq!(s.last_schedule_time, Some(t("2030-01-01T01:00:00Z")));
        assert_eq!(s.next_schedule_time, t("2030-01-01T02:00:00Z"));
        let (again, d) = step(Some(&s), "2030-01-01T01:00:08Z", false);
        assert_eq!(
            (d, &again),
            (Decision::Wait, &s),
            "one run per scheduled time"
        );
        let (s, d) = step(Some(&s), "2030-01-01T02:00:01Z", true);
        assert_eq!(d, Decision::Skip(t("2030-01-01T02:00:00Z")));
        assert_eq!(s.last_schedule_time, Some(t("2030-01-01T01:00:00Z")));
        assert_eq!(s.next_schedule_time, t("2030-01-01T03:00:00Z"));
        assert_eq!(
            backup_name("c", t("2030-01-01T02:00:00Z")),
            "c-2030-01-01-02-00-00"
        );
    }

    #[test]
    fn downtime_gives_at_most_one_catch_up_within_the_deadline() {
        let (s, _) = step(None, "2030-01-01T00:10:00Z", false);
        // Down from 00:10 to 05:03: five runs passed; only the 05:00 one is made.
        let (after, d) = step(Some(&s), "2030-01-01T05:03:00Z", false);
        assert_eq!(d, Decision::Run(t("2030-01-01T05:00:00Z")));
        assert_eq!(after.next_schedule_time, t("2030-01-01T06:00:00Z"));
        // Down until 05:06: even the latest is past the 300 s deadline.
        let (after, d) = step(Some(&s), "2030-01-01T05:06:00Z", false);
        assert_eq!(
            d,
            Decision::Missed {
                at: t("2030-01-01T05:00:00Z"),
                missed: 5
            }
        );
        assert_eq!(after.last_schedule_time, None);
        assert_eq!(after.next_schedule_time, t("2030-01-01T06:00:00Z"));
        // A changed expression starts again from now.
        let expr = "30 1 * * *";
        let (changed, d) = decide(
            &parse_cron(expr).unwrap(),
            expr,
            0,
            Some(&after),
            t("2030-01-01T05:06:00Z"),
            false,
            STARTING_DEADLINE,
        );
        assert_eq!(d, Decision::Wait);
        assert_eq!(changed.next_schedule_time, t("2030-01-02T01:30:00Z"));
    }
}
