//! The backup scheduler: each `backups[]` entry of an SGShardedCluster with a `cronSchedule`
//! (5 fields, UTC) gets managed SGShardedBackups named `<cluster>-YYYY-MM-DD-HH-MM-SS`.
//!
//! Concurrency is Forbid: a run due while the entry's previous scheduled backup is still
//! Pending or Running is skipped (Event `ScheduleSkipped`). Runs missed while the daemon was
//! down collapse into at most one catch-up run, made only within the starting deadline.
//!
//! The schedule state lives in the cluster's annotation `shardvault.io/backup-schedule` (a
//! JSON list, one item per entry). An annotation is written with the object's
//! resourceVersion, so it never overwrites a concurrent change, survives daemon restarts, and
//! leaves `status` to the cluster controller, which rewrites it from its own fields.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_api::shardedcluster::ShardedClusterSpec;
use shardvault_store::{EventType, StoreError};

use crate::backup_controller::ENTRY_ANNOTATION;
use crate::clock::Clock;
use crate::framework::{Action, Ctx, ReconcileError, Reconciler, is_deleting};
use crate::resources::{name_of, namespace_of, spec_of};

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

/// The schedule state recorded on a cluster (empty when none or unreadable).
pub fn recorded(cluster: &Value) -> Vec<EntrySchedule> {
    annotation(cluster, SCHEDULE_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Creates scheduled SGShardedBackups for every backups[] entry with a `cronSchedule`.
#[derive(Debug)]
pub struct Scheduler {
    clock: Arc<dyn Clock>,
    deadline: SignedDuration,
}

impl Scheduler {
    /// A scheduler on `clock` with the default starting deadline (300 s).
    pub fn new(clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            clock,
            deadline: STARTING_DEADLINE,
        }
    }
}

impl Reconciler for Scheduler {
    fn kind(&self) -> Kind {
        Kind::SGShardedCluster
    }

    fn reconcile(
        &self,
        obj: Value,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
        let (clock, deadline) = (self.clock.clone(), self.deadline);
        Box::pin(async move { reconcile(obj, ctx, clock, deadline).await })
    }
}

/// True when a scheduled backup of `entry` of `cluster` is Pending or Running.
async fn entry_busy(ctx: &Ctx, ns: &str, cluster: &str, entry: usize) -> Result<bool, StoreError> {
    let selector = format!("{CLUSTER_LABEL}={cluster},{ENTRY_LABEL}={entry}");
    Ok(ctx
        .list(Kind::SGShardedBackup, Some(ns), &selector)
        .await?
        .iter()
        .any(|b| {
            !is_deleting(b)
                && !matches!(
                    b.pointer("/status/process/status").and_then(Value::as_str),
                    Some("Completed" | "Failed")
                )
        }))
}

/// Creates the backup of `entry` scheduled as `name` and returns its name: `name` itself,
/// or `name-<entry>` when another entry's run of the same time already took `name`.
async fn create_backup(
    ctx: &Ctx,
    cluster: &Value,
    spec: &ShardedClusterSpec,
    entry: usize,
    name: &str,
) -> Result<String, StoreError> {
    let e = &spec.backups()[entry];
    let ns = namespace_of(cluster);
    let mut bspec = json!({"sgShardedCluster": name_of(cluster), "managedLifecycle": true});
    if let Some(t) = &e.timeout {
        bspec["timeout"] = json!(t);
    }
    if let Some(r) = e.max_retries {
        bspec["maxRetries"] = json!(r);
    }
    let mut doc = json!({
        "apiVersion": Kind::SGShardedBackup.api_version(),
        "kind": "SGShardedBackup",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {CLUSTER_LABEL: name_of(cluster), ENTRY_LABEL: entry.to_string()},
            "annotations": {ENTRY_ANNOTATION: entry.to_string()},
        },
        "spec": bspec,
    });
    for candidate in [name.to_string(), format!("{name}-{entry}")] {
        doc["metadata"]["name"] = json!(candidate);
        match ctx.create(doc.clone()).await {
            Ok(_) => return Ok(candidate),
            Err(StoreError::AlreadyExists { .. }) => {
                let existing = ctx.get(Kind::SGShardedBackup, ns, &candidate).await?;
                let same_entry = existing.as_ref().is_some_and(|b| {
                    b.pointer(&format!(
                        "/metadata/labels/{}",
                        ENTRY_LABEL.replace('/', "~1")
                    )) == Some(&json!(entry.to_string()))
                });
                if same_entry {
                    // Created before a crash that lost the state write: the run is made.
                    return Ok(candidate);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::BadRequest(format!(
        "backups[{entry}]: SGShardedBackups {name} and {name}-{entry} exist and are not this entry's: rename or delete them"
    )))
}

/// Sets annotation `key` to `text` on the newest version of `cluster` (retried on conflict).
pub(crate) async fn set_annotation(
    ctx: &Ctx,
    cluster: &Value,
    key: &str,
    text: &str,
) -> Result<(), StoreError> {
    for _ in 0..3 {
        let Some(mut fresh) = ctx
            .get(
                Kind::SGShardedCluster,
                namespace_of(cluster),
                name_of(cluster),
            )
            .await?
        else {
            return Ok(());
        };
        if fresh
            .pointer("/metadata/annotations")
            .is_none_or(Value::is_null)
        {
            fresh["metadata"]["annotations"] = json!({});
        }
        fresh["metadata"]["annotations"][key] = json!(text);
        match ctx.update(fresh).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => return other.map(drop),
        }
    }
    Err(StoreError::BadRequest(format!(
        "SGShardedCluster {}: annotation {key} kept conflicting with other writers",
        name_of(cluster)
    )))
}

/// The value of annotation `key` of `obj`.
pub(crate) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
        .and_then(Value::as_str)
}

async fn reconcile(
    obj: Value,
    ctx: Ctx,
    clock: Arc<dyn Clock>,
    deadline: SignedDuration,
) -> Result<Action, ReconcileError> {
    if is_deleting(&obj) {
        return Ok(Action::AwaitChange);
    }
    let spec: ShardedClusterSpec = spec_of(&obj)?;
    let (ns, cluster) = (namespace_of(&obj).to_string(), name_of(&obj).to_string());
    let old = recorded(&obj);
    let now = clock.now();
    let mut states = Vec::new();
    let mut wake = clock.poll();
    for (i, entry) in spec.backups().iter().enumerate() {
        let Some(expr) = entry.cron_schedule.as_deref() else {
            continue;
        };
        let cron = parse_cron(expr).map_err(|e| {
            ReconcileError::new(
                "InvalidSchedule",
                format!("spec.configurations.backups[{i}].cronSchedule: {e}"),
            )
        })?;
        let state = old.iter().find(|s| s.entry == i);
        let due = state.is_some_and(|s| s.cron_schedule == expr && now >= s.next_schedule_time);
        let busy = due && entry_busy(&ctx, &ns, &cluster, i).await?;
        let (next, decision) = decide(&cron, expr, i, state, now, busy, deadline);
        match decision {
            Decision::Wait => {}
            Decision::Run(at) => {
                let name = create_backup(&ctx, &obj, &spec, i, &backup_name(&cluster, at)).await?;
                ctx.event(
                    &obj,
                    EventType::Normal,
                    "BackupScheduled",
                    &format!("backups[{i}] ({expr}): created SGShardedBackup {name}"),
                )
                .await;
            }
            Decision::Skip(at) => {
                ctx.event(
                    &obj,
                    EventType::Warning,
                    "ScheduleSkipped",
                    &format!(
                        "backups[{i}] ({expr}): run of {at} skipped: the previous scheduled backup is still Pending or Running (concurrency Forbid)"
                    ),
                )
                .await;
            }
            Decision::Missed { at, missed } => {
                ctx.event(
                    &obj,
                    EventType::Warning,
                    "ScheduleMissed",
                    &format!(
                        "backups[{i}] ({expr}): {missed} run(s) missed, the latest at {at} is more than {} s late (starting deadline)",
                        deadline.as_secs()
                    ),
                )
                .await;
            }
        }
        let until = next.next_schedule_time.duration_since(now);
        wake = wake.min(
            Duration::try_from(until)
                .unwrap_or_default()
                .max(Duration::from_millis(100)),
        );
        states.push(next);
    }
    if states != old {
        let text = serde_json::to_string(&states).expect("schedule serializes");
        set_annotation(&ctx, &obj, SCHEDULE_ANNOTATION, &text).await?;
    }
    if states.is_empty() {
        return Ok(Action::AwaitChange);
    }
    Ok(Action::Requeue(wake))
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
