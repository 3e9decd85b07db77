//! The checks made before a sharded cluster is restored from a backup: refuse, with a
//! clear error and nothing created, anything that cannot restore correctly.

use shardvault_api::FieldError;
use shardvault_api::backup::BackupPhase;
use shardvault_api::shardedbackup::ShardedBackupStatus;
use shardvault_api::shardedcluster::{FromBackup, ShardedClusterSpec};
use shardvault_pg::engine::manifest::load_anchored;
use shardvault_pg::engine::verify::read_backup_label;
use shardvault_pg::engine::{EngineError, Repo};
use shardvault_storage::Destination;

use crate::verify::verify_record;

const FROM: &str = "spec.initialData.restore.fromBackup";

/// Where every member recovers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterTarget {
    /// The backup's cluster-wide restore point.
    RestorePoint(String),
    /// A time (RFC 3339), every member independently.
    Time { time: String, inclusive: bool },
}

fn refuse(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.to_string(),
        message,
    }
}

/// Checks a restore of `spec` from sharded backup `from` (None when it does not exist) and
/// returns the recovery target.
pub fn check_restore(
    spec: &ShardedClusterSpec,
    from: &FromBackup,
    backup: Option<&ShardedBackupStatus>,
    now: jiff::Timestamp,
) -> Result<ClusterTarget, FieldError> {
    let name = &from.name;
    let status = backup.ok_or_else(|| {
        refuse(
            &format!("{FROM}.name"),
            format!("{name:?}: no SGShardedBackup of that name in this namespace: list them with `shardvault get sgshardedbackup`, or import one from storage with `shardvault backups import`"),
        )
    })?;
    if status.process.status != BackupPhase::Completed {
        return Err(refuse(
            &format!("{FROM}.name"),
            format!(
                "{name:?}: the backup is {}, not Completed: wait for it (`shardvault wait sgshardedbackup/{name} --for=jsonpath='{{.status.process.status}}'=Completed`) or choose another",
                status.process.status
            ),
        ));
    }
    let members = spec.member_names("x").len();
    if status.sg_backups.len() != members {
        let shards = status.sg_backups.len().saturating_sub(1);
        return Err(refuse(
            "spec.shards.clusters",
            format!(
                "{}: the backup {name:?} has {shards} shards; a restore needs the same number of shards",
                members - 1
            ),
        ));
    }
    let info = status.backup_information.as_ref();
    let backup_major = info
        .map(|i| {
            i.postgres_version
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let want_major = spec
        .postgres
        .as_ref()
        .map(|p| p.version.split('.').next().unwrap_or("").to_string())
        .unwrap_or_default();
    if !backup_major.is_empty() && backup_major != want_major {
        return Err(refuse(
            "spec.postgres.version",
            format!(
                "{want_major:?}: the backup {name:?} is of PostgreSQL {backup_major}; a physical restore needs the same major version"
            ),
        ));
    }
    let rp = status.restore_point.as_ref().ok_or_else(|| {
        refuse(
            &format!("{FROM}.name"),
            format!("{name:?}: the backup has no restore point recorded; take a new backup"),
        )
    })?;
    match &from.point_in_time_recovery {
        None => Ok(ClusterTarget::RestorePoint(rp.name.clone())),
        Some(pitr) => {
            let path = format!("{FROM}.pointInTimeRecovery.restoreToTimestamp");
            let text = &pitr.restore_to_timestamp;
            let t: jiff::Timestamp = text.parse().map_err(|_| {
                refuse(
                    &path,
                    format!("{text:?}: expected an RFC 3339 time such as 2024-01-15T10:30:00Z"),
                )
            })?;
            let earliest: jiff::Timestamp = rp.time.parse().map_err(|_| {
                refuse(
                    &format!("{FROM}.name"),
                    format!("{name:?}: unreadable restore point time {:?}", rp.time),
                )
            })?;
            if t < earliest {
                return Err(refuse(
                    &path,
                    format!(
                        "{text:?}: before the backup's restore point ({}); the recoverable window of {name:?} starts there: choose a later time or an older backup",
                        rp.time
                    ),
                ));
            }
            if t > now {
                return Err(refuse(
                    &path,
                    format!(
                        "{text:?}: in the future (now is {now}); the recoverable window ends now"
                    ),
                ));
            }
            Ok(ClusterTarget::Time {
                time: t.to_string(),
                inclusive: from.target_inclusive.unwrap_or(true),
            })
        }
    }
}

/// One member's stored backup, as a restore is about to read it.
pub struct StoredMember<'a> {
    /// SGBackup name (also the backup's name in storage).
    pub sg_backup: &'a str,
    /// Where it is stored.
    pub destination: &'a Destination,
    /// `status.backupInformation.manifestSha256` of the SGBackup.
    pub manifest_sha256: Option<String>,
}

/// Reads what a restore of sharded backup `name` starts from, before anything is created:
/// every member's manifest (against the digest recorded at completion) and `backup_label`,
/// and the backup's record in storage (`record`, its `status.shardedRecordConfig` resolved)
/// against its status. The first damaged or missing object is named.
pub async fn check_stored(
    name: &str,
    status: &ShardedBackupStatus,
    members: &[StoredMember<'_>],
    record: Option<&Destination>,
) -> Result<(), String> {
    let refused = |e: EngineError| {
        format!("{FROM}.name: {name:?}: {e}; the backup cannot be restored: choose another backup")
    };
    for m in members {
        let repo = Repo::open(m.destination).map_err(refused)?;
        let (manifest, _) = load_anchored(&repo, m.sg_backup, m.manifest_sha256.as_deref())
            .await
            .map_err(|e| format!("SGBackup {}: {}", m.sg_backup, refused(e)))?;
        read_backup_label(&repo, &manifest.name)
            .await
            .map_err(|e| format!("SGBackup {}: {}", m.sg_backup, refused(e)))?;
    }
    if let Some(dest) = record {
        let anchors: Vec<Option<String>> =
            members.iter().map(|m| m.manifest_sha256.clone()).collect();
        verify_record(dest, name, status, &anchors)
            .await
            .map_err(refused)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shardvault_api::backup::BackupPhase;
    use shardvault_api::shardedbackup::{RestorePoint, ShardedBackupInformation};

    use super::*;

    fn spec(shards: u32, version: &str) -> ShardedClusterSpec {
        yaml_serde::from_str(&format!(
            "type: ddp\npostgres: {{version: '{version}'}}\ncoordinator: {{instances: 1}}\nshards: {{clusters: {shards}, instancesPerCluster: 1}}\n"
        ))
        .unwrap()
    }

    fn backup(phase: BackupPhase) -> ShardedBackupStatus {
        let mut s = ShardedBackupStatus::default();
        s.process.status = phase;
        s.sg_backups = vec!["b-coord".into(), "b-shard0".into(), "b-shard1".into()];
        s.backup_information = Some(ShardedBackupInformation {
            postgres_version: "15.18".into(),
            ..Default::default()
        });
        s.restore_point = Some(RestorePoint {
            name: "b".into(),
            time: "2026-01-01T10:00:00Z".into(),
            ..Default::default()
        });
        s
    }

    fn from(pitr: Option<&str>) -> FromBackup {
        FromBackup {
            name: "b".into(),
            target_inclusive: Some(false),
            point_in_time_recovery: pitr.map(|t| {
                shardvault_api::shardedcluster::PointInTimeRecovery {
                    restore_to_timestamp: t.into(),
                    consistent: None,
                }
            }),
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-01-02T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn restore_point_is_the_default_target() {
        let t = check_restore(
            &spec(2, "15"),
            &from(None),
            Some(&backup(BackupPhase::Completed)),
            now(),
        );
        assert_eq!(t, Ok(ClusterTarget::RestorePoint("b".into())));
    }

    #[test]
    fn a_time_inside_the_window_keeps_target_inclusive() {
        let t = check_restore(
            &spec(2, "15"),
            &from(Some("2026-01-01T12:00:00Z")),
            Some(&backup(BackupPhase::Completed)),
            now(),
        );
        assert_eq!(
            t,
            Ok(ClusterTarget::Time {
                time: "2026-01-01T12:00:00Z".into(),
                inclusive: false
            })
        );
    }

    #[test]
    fn every_refusal_names_its_field() {
        let done = backup(BackupPhase::Completed);
        let cases = [
            (
                spec(2, "15"),
                from(None),
                None,
                "fromBackup.name",
                "no SGShardedBackup",
            ),
            (
                spec(2, "15"),
                from(None),
                Some(backup(BackupPhase::Running)),
                "fromBackup.name",
                "Running",
            ),
            (
                spec(3, "15"),
                from(None),
                Some(done.clone()),
                "spec.shards.clusters",
                "2 shards",
            ),
            (
                spec(2, "16"),
                from(None),
                Some(done.clone()),
                "spec.postgres.version",
                "PostgreSQL 15",
            ),
            (
                spec(2, "15"),
                from(Some("2026-01-01T09:00:00Z")),
                Some(done.clone()),
                "restoreToTimestamp",
                "before the backup's restore point",
            ),
            (
                spec(2, "15"),
                from(Some("2027-01-01T00:00:00Z")),
                Some(done.clone()),
                "restoreToTimestamp",
                "future",
            ),
            (
                spec(2, "15"),
                from(Some("yesterday")),
                Some(done),
                "restoreToTimestamp",
                "RFC 3339",
            ),
        ];
        for (spec, from, status, path, message) in cases {
            let e = check_restore(&spec, &from, status.as_ref(), now()).unwrap_err();
            assert!(e.path.ends_with(path), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }
}
