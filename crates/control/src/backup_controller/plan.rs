//! What one sharded backup will do: the backups[] entry it goes to, every member's node
//! config (from the runtime's endpoints) with that entry's destination, and where its
//! storage record goes.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::Value;
use shardvault_api::shardedbackup::{BACKUP_TYPE_ANNOTATION, SGShardedBackup};
use shardvault_api::shardedcluster::{SGShardedCluster, ShardingType};
use shardvault_pg::runtime::ClusterId;
use shardvault_pg::runtime::cluster::InstanceState;

use super::{BackupError, ENTRY_ANNOTATION, namespace_of};
use crate::context::Context;
use crate::cut::CutMode;
use crate::destination::{cluster_destination, entry_codec, member_destinations};
use crate::incremental;
use crate::lookup;
use crate::resources::backup_config;
use crate::sharded_backup::{MemberJob, ShardedBackupJob};
use crate::snapshot_backup::SnapshotSettings;

/// Everything a worker needs about one sharded backup.
pub(super) struct BackupPlan {
    /// The job the worker runs.
    pub job: ShardedBackupJob,
    /// How the cluster is sharded (kept in the record).
    pub sharding: ShardingType,
    /// `spec.managedLifecycle`.
    pub managed: bool,
    /// Each member's `sgBackupConfig`, in member order.
    pub configs: Vec<Value>,
    /// Where the storage record goes.
    pub catalog_dest: shardvault_storage::Destination,
    /// `catalog_dest` in the shape of an `sgBackupConfig`, kept in status.
    pub catalog_config: Value,
    /// Set when the entry asks for volume snapshots (`useVolumeSnapshot`).
    pub snapshot: Option<SnapshotSettings>,
}

/// The member backup names' suffix of member `i` (coordinator first).
pub(super) fn member_suffix(i: usize) -> String {
    if i == 0 {
        "coord".into()
    } else {
        format!("shard{}", i - 1)
    }
}

/// Plans the backup of `obj` from `cluster`; an error when the cluster has nowhere to back
/// up to, the entry annotation is wrong, a storage cannot be used or the members do not run.
pub(super) async fn plan_backup(
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
    let asked = obj
        .annotations()
        .get(BACKUP_TYPE_ANNOTATION)
        .map(|v| v.parse())
        .transpose()
        .map_err(BackupError::InvalidBackupType)?;
    let member_dests: Vec<_> = dests.iter().map(|d| d[entry_index].clone()).collect();
    let decision = incremental::decide_for(asked, entry, &member_dests)
        .await
        .map_err(BackupError::storage)?;
    tracing::info!(
        "sharded backup {name}: {} ({})",
        if decision.incremental {
            "members back up incremental where they have a parent"
        } else {
            "full backups"
        },
        decision.reason
    );
    let performance = entry_codec(entry).1;
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
            incremental: decision.incremental,
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
