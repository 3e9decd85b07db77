//! The member SGBackups of a sharded backup: created owned by it, and their status as the
//! members' backups go.

use std::collections::BTreeMap;

use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use shardvault_api::backup::{BackupPhase, BackupSpec, BackupStatus, SGBackup};
use shardvault_api::shardedbackup::{SGShardedBackup, SHARDED_BACKUP_LABEL};
use shardvault_pg::engine::manifest::BackupSummary;

use crate::incremental;

use super::plan::BackupPlan;
use super::{BackupError, namespace_of, now};
use crate::context::Context;
use crate::status;

/// Creates the member SGBackups (owned by the sharded backup), each with where it will be
/// stored in its status before any work starts, so a deletion finds every object.
pub(super) async fn ensure_children(
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

/// `15.18` of a `server_version` such as `15.18 (Debian 15.18-0+deb12u1)`.
pub(super) fn plain_version(server_version: &str) -> String {
    server_version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The status of a member backup that completed with `summary`, stored at `config`.
pub(super) fn member_status(summary: &BackupSummary, config: &Value) -> BackupStatus {
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
            size: incremental::member_size(summary),
            lsn: LsnRange {
                start: summary.start_lsn.to_string(),
                end: summary.end_lsn.to_string(),
            },
            start_wal_file: summary.start_wal_file.clone(),
            timeline: summary.timeline,
            control_data: None,
            manifest_sha256: Some(summary.manifest_sha256.clone()),
            backup_type: Some(incremental::member_type(summary)),
            parent: summary.parent.clone(),
        }),
        sg_backup_config: Some(config.clone()),
        volume_snapshot: None,
        progress: None,
    }
}

/// Replaces the status of member SGBackup `name` (when it exists); a failure is logged.
pub(super) async fn set_child(api: &Api<SGBackup>, name: &str, status: &BackupStatus) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;
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
            (info.size.restore, info.backup_type, info.parent),
            (
                Some(1000),
                Some(shardvault_api::backup::BackupType::Full),
                None
            ),
            "a full backup: a restore reads what it stored"
        );
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
}
