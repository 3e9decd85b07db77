//! What the console shows, computed from the stored resources: one view per sharded cluster
//! with its members, backups, restore points and growth over time.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shardvault_api::backup::BackupPhase;
use shardvault_api::progress::{Summary, percent};
use shardvault_api::shardedcluster::ShardingType;
use shardvault_api::{Kind, SGBackup, SGShardedBackup, SGShardedCluster};
use shardvault_store::{Selector, Store, StoreError};

/// Namespace and name of a stored object.
fn key(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Everything the console page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// When this view was computed (RFC 3339).
    pub generated_at: String,
    /// Every sharded cluster, by namespace and name.
    pub clusters: Vec<ClusterView>,
}

/// One sharded cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub namespace: String,
    pub name: String,
    /// `citus` or `ddp`.
    pub sharding: String,
    pub ready: bool,
    /// Why the cluster is (not) ready, as its Ready condition says.
    pub ready_message: Option<String>,
    /// The `WALArchiving` condition: None when archiving works or nothing is archived.
    pub archiving_problem: Option<String>,
    /// How far a restore into this cluster is, while one runs.
    pub restore_progress: Option<ProgressView>,
    pub members: Vec<MemberView>,
    /// Backups of this cluster, oldest first.
    pub backups: Vec<BackupView>,
    /// One point per completed backup, oldest first.
    pub growth: Vec<GrowthPoint>,
}

/// One member cluster (coordinator or shard) and its servers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub name: String,
    pub instances: Vec<InstanceView>,
    /// The primary's WAL archiving; None when it did not answer.
    pub archiving: Option<ArchivingView>,
}

/// How far a member's WAL archive is behind its primary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivingView {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    /// Completed segments not archived yet, and their bytes.
    pub pending_segments: i64,
    pub pending_bytes: i64,
    pub failing: bool,
}

/// One PostgreSQL server of a member.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub name: String,
    pub role: String,
    pub state: String,
}

/// One SGShardedBackup.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    pub name: String,
    pub phase: String,
    pub failure: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub duration_seconds: Option<f64>,
    /// Bytes in storage.
    pub stored_bytes: u64,
    /// Bytes of the data directories backed up.
    pub original_bytes: u64,
    pub restore_point: Option<RestorePointView>,
    /// How far it is, while it runs.
    pub progress: Option<ProgressView>,
    /// Its SGBackups, coordinator first.
    pub members: Vec<MemberBackupView>,
}

/// The cluster-wide restore point of a backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointView {
    pub name: String,
    pub time: String,
    pub write_pause_ms: f64,
}

/// One member's SGBackup.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberBackupView {
    pub name: String,
    pub phase: String,
    pub stored_bytes: u64,
    pub original_bytes: u64,
    pub lsn_start: Option<String>,
    pub lsn_end: Option<String>,
    pub timeline: Option<u32>,
    /// How far it is, while it runs.
    pub progress: Option<ProgressView>,
}

/// How far running work is: a sentence and a percentage for a bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    /// `copying 45% of 27.0 MiB, 3.1 MiB/s`.
    pub text: String,
    /// 0 to 100 (0 while the total is unknown).
    pub percent: u64,
}

impl From<Summary> for ProgressView {
    fn from(s: Summary) -> ProgressView {
        ProgressView {
            text: s.text(),
            percent: percent(s.done, s.total),
        }
    }
}

/// The size of one completed backup and the WAL written since the backup before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrowthPoint {
    pub backup: String,
    pub time: String,
    pub stored_bytes: u64,
    pub original_bytes: u64,
    /// WAL bytes written by all members between the previous backup's restore point and this
    /// one's (0 for the first).
    pub wal_bytes: u64,
}

type Cluster = SGShardedCluster;
type ShardedBackup = SGShardedBackup;
type MemberBackup = SGBackup;

fn typed<T: DeserializeOwned>(docs: Vec<Value>) -> Vec<T> {
    docs.into_iter()
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect()
}

fn list<T: DeserializeOwned>(store: &Store, kind: Kind) -> Result<Vec<T>, StoreError> {
    Ok(typed(store.list(kind, None, &Selector::default())?.0))
}

/// Reads every sharded cluster, sharded backup and SGBackup and builds the view.
pub fn overview(store: &Store) -> Result<Overview, StoreError> {
    let clusters: Vec<Cluster> = list(store, Kind::SGShardedCluster)?;
    let backups: Vec<ShardedBackup> = list(store, Kind::SGShardedBackup)?;
    let members: Vec<MemberBackup> = list(store, Kind::SGBackup)?;
    Ok(build(&clusters, &backups, &members, Timestamp::now()))
}

fn build(
    clusters: &[Cluster],
    backups: &[ShardedBackup],
    members: &[MemberBackup],
    now: Timestamp,
) -> Overview {
    let by_name: BTreeMap<(&str, &str), &MemberBackup> =
        members.iter().map(|m| (key(&m.metadata), m)).collect();
    let clusters = clusters
        .iter()
        .map(|c| {
            let (ns, name) = key(&c.metadata);
            let mut mine: Vec<BackupView> = backups
                .iter()
                .filter(|b| key(&b.metadata).0 == ns && b.spec.sg_sharded_cluster == name)
                .map(|b| backup_view(b, &by_name))
                .collect();
            mine.sort_by(|a, b| (&a.start, &a.name).cmp(&(&b.start, &b.name)));
            let growth = growth(backups, &mine, ns);
            cluster_view(c, mine, growth)
        })
        .collect();
    Overview {
        generated_at: now.to_string(),
        clusters,
    }
}

fn cluster_view(c: &Cluster, backups: Vec<BackupView>, growth: Vec<GrowthPoint>) -> ClusterView {
    let status = c.status.clone().unwrap_or_default();
    let condition = |t: &str| status.conditions.iter().find(|x| x.type_ == t);
    let ready = condition("Ready");
    let archiving_problem = condition("WALArchiving")
        .filter(|x| x.status == "False")
        .map(|x| {
            x.message
                .clone()
                .unwrap_or_else(|| "WAL archiving fails".into())
        });
    let (namespace, name) = key(&c.metadata);
    ClusterView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        sharding: match c.spec.sharding_type() {
            ShardingType::Citus => "citus".into(),
            ShardingType::Ddp => "ddp".into(),
        },
        ready: ready.is_some_and(|x| x.status == "True"),
        ready_message: ready.and_then(|x| x.message.clone()),
        archiving_problem,
        restore_progress: status
            .restore
            .as_ref()
            .and_then(|r| {
                let members: Vec<_> = r
                    .members
                    .iter()
                    .filter_map(|m| m.progress.clone())
                    .collect();
                Summary::of_restore(&members)
            })
            .map(ProgressView::from),
        members: status
            .members
            .iter()
            .map(|m| MemberView {
                name: m.name.clone(),
                instances: m
                    .instances
                    .iter()
                    .map(|i| InstanceView {
                        name: i.name.clone(),
                        role: i.role.clone(),
                        state: i.state.clone(),
                    })
                    .collect(),
                archiving: m.archiving.as_ref().map(|a| ArchivingView {
                    last_archived_wal: a.last_archived_wal.clone(),
                    last_archived_time: a.last_archived_time.clone(),
                    pending_segments: a.pending_segments,
                    pending_bytes: a.pending_bytes,
                    failing: a.failing,
                }),
            })
            .collect(),
        backups,
        growth,
    }
}

fn seconds_between(start: Option<&str>, end: Option<&str>) -> Option<f64> {
    let start: Timestamp = start?.parse().ok()?;
    let end: Timestamp = end?.parse().ok()?;
    Some((end - start).total(jiff::Unit::Second).ok()?.max(0.0))
}

fn backup_view(b: &ShardedBackup, by_name: &BTreeMap<(&str, &str), &MemberBackup>) -> BackupView {
    let status = b.status.clone().unwrap_or_default();
    let timing = &status.process.timing;
    let size = status
        .backup_information
        .as_ref()
        .map(|i| (i.size.compressed, i.size.uncompressed))
        .unwrap_or_default();
    let members = status
        .sg_backups
        .iter()
        .map(|name| {
            let member = by_name.get(&(key(&b.metadata).0, name.as_str()));
            let st = member.and_then(|m| m.status.as_ref());
            let info = st.and_then(|s| s.backup_information.as_ref());
            MemberBackupView {
                name: name.clone(),
                phase: st.map_or("Unknown".into(), |s| s.process.status.to_string()),
                stored_bytes: info.map_or(0, |i| i.size.compressed),
                original_bytes: info.map_or(0, |i| i.size.uncompressed),
                lsn_start: info.map(|i| i.lsn.start.clone()),
                lsn_end: info.map(|i| i.lsn.end.clone()),
                timeline: info.map(|i| i.timeline),
                progress: st
                    .and_then(|s| s.progress.as_ref())
                    .map(|p| Summary::from(p).into()),
            }
        })
        .collect();
    BackupView {
        name: key(&b.metadata).1.to_string(),
        phase: status.process.status.to_string(),
        failure: status.process.failure.clone(),
        start: timing.start.clone(),
        end: timing.end.clone(),
        duration_seconds: seconds_between(timing.start.as_deref(), timing.end.as_deref()),
        stored_bytes: size.0,
        original_bytes: size.1,
        restore_point: status.restore_point.as_ref().map(|r| RestorePointView {
            name: r.name.clone(),
            time: r.time.clone(),
            write_pause_ms: r.write_pause_ms,
        }),
        progress: status.progress.as_ref().map(|p| Summary::from(p).into()),
        members,
    }
}

/// Parses a PostgreSQL LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// WAL positions of every member at a backup's restore point, by member name.
fn positions(b: &ShardedBackup) -> BTreeMap<String, u64> {
    b.status
        .as_ref()
        .and_then(|s| s.restore_point.as_ref())
        .map(|r| {
            r.members
                .iter()
                .filter_map(|m| Some((m.name.clone(), parse_lsn(&m.lsn)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn growth(backups: &[ShardedBackup], views: &[BackupView], ns: &str) -> Vec<GrowthPoint> {
    let mut previous: Option<BTreeMap<String, u64>> = None;
    let mut out = Vec::new();
    for v in views
        .iter()
        .filter(|v| v.phase == BackupPhase::Completed.to_string())
    {
        let Some(b) = backups
            .iter()
            .find(|b| key(&b.metadata) == (ns, v.name.as_str()))
        else {
            continue;
        };
        let now = positions(b);
        let wal_bytes = previous.as_ref().map_or(0, |prev| {
            now.iter()
                .filter_map(|(m, lsn)| Some(lsn.saturating_sub(*prev.get(m)?)))
                .sum()
        });
        out.push(GrowthPoint {
            backup: v.name.clone(),
            time: v
                .end
                .clone()
                .or_else(|| v.start.clone())
                .unwrap_or_default(),
            stored_bytes: v.stored_bytes,
            original_bytes: v.original_bytes,
            wal_bytes,
        });
        previous = Some(now);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> Cluster {
        serde_json::from_value(json!({
            "metadata": {"name": "prod", "namespace": "default"},
            "spec": {"type": "ddp", "postgres": {"version": "15"},
                     "coordinator": {"instances": 1},
                     "shards": {"clusters": 1, "instancesPerCluster": 1}},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "2 of 2 servers run"},
                    {"type": "WALArchiving", "status": "False", "message": "WAL archiving fails on prod-shard0"}
                ],
                "members": [{"name": "prod-coord", "instances": [
                    {"name": "prod-coord-0", "role": "primary", "port": 5432, "state": "running"}]}]
            }
        }))
        .unwrap()
    }

    fn sharded(name: &str, start: &str, end: &str, phase: &str, lsns: [&str; 2]) -> ShardedBackup {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"sgShardedCluster": "prod"},
            "status": {
                "process": {"status": phase, "timing": {"start": start, "end": end}},
                "sgBackups": [format!("{name}-coord"), format!("{name}-shard0")],
                "backupInformation": {"postgresVersion": "15", "size": {"compressed": 100, "uncompressed": 400}},
                "restorePoint": {"name": name, "time": end, "writePauseMs": 8.5, "barrierAttempts": 1,
                    "members": [
                        {"name": "prod-coord", "lsn": lsns[0], "walFile": "x", "timeline": 1},
                        {"name": "prod-shard0", "lsn": lsns[1], "walFile": "y", "timeline": 1}]}
            }
        }))
        .unwrap()
    }

    fn member(name: &str) -> MemberBackup {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"sgCluster": "prod-coord"},
            "status": {"process": {"status": "Completed", "timing": {}},
                "backupInformation": {"hostname": "h", "systemIdentifier": "1", "postgresVersion": "15",
                    "pgData": "/d", "size": {"compressed": 60, "uncompressed": 200},
                    "lsn": {"start": "0/2000028", "end": "0/2000100"},
                    "startWalFile": "000000010000000000000002", "timeline": 1}}
        }))
        .unwrap()
    }

    #[test]
    fn each_completed_backup_is_one_growth_point_with_the_wal_written_since_the_last() {
        let backups = vec![
            sharded(
                "b2",
                "2026-12-02T01:00:00Z",
                "2026-12-02T01:00:30Z",
                "Completed",
                ["0/3000000", "0/5000000"],
            ),
            sharded(
                "b1",
                "2026-12-02T00:00:00Z",
                "2026-12-02T00:00:10Z",
                "Completed",
                ["0/1000000", "0/1000000"],
            ),
            sharded(
                "b3",
                "2026-12-02T02:00:00Z",
                "2026-12-02T02:00:01Z",
                "Failed",
                ["0/9000000", "0/9000000"],
            ),
        ];
        let members = vec![member("b1-coord"), member("b1-shard0")];
        let o = build(&[cluster()], &backups, &members, Timestamp::UNIX_EPOCH);
        let c = &o.clusters[0];
        assert_eq!(
            c.backups
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["b1", "b2", "b3"]
        );
        assert_eq!(c.backups[0].duration_seconds, Some(10.0));
        assert_eq!(c.growth.len(), 2, "the failed backup is not a point");
        assert_eq!(c.growth[0].wal_bytes, 0);
        assert_eq!(c.growth[1].wal_bytes, 0x2000000 + 0x4000000);
        assert_eq!(c.backups[0].members[0].stored_bytes, 60);
        assert_eq!(c.backups[1].members[0].phase, "Unknown");
    }

    #[test]
    fn readiness_and_archiving_come_from_the_conditions() {
        let o = build(&[cluster()], &[], &[], Timestamp::UNIX_EPOCH);
        let c = &o.clusters[0];
        assert!(c.ready);
        assert_eq!(c.sharding, "ddp");
        assert_eq!(
            c.archiving_problem.as_deref(),
            Some("WAL archiving fails on prod-shard0")
        );
        assert_eq!(c.members[0].instances[0].role, "primary");
    }

    #[test]
    fn lsns_parse_as_byte_positions() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
