//! Prometheus metrics, computed at each scrape: per cluster and backups[] entry the last
//! successful sharded backup (time, duration, sizes) and the failed ones; per member the WAL
//! archiver's counters and lag, read from `pg_stat_archiver` on the member's primary.

use std::fmt::Write as _;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use shardvault_api::backup::BackupPhase;
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_api::shardedcluster::SGShardedCluster;
use shardvault_pg::engine::layout::{self, Lsn};
use shardvault_pg::runtime::{ClusterId, ClusterRuntime};
use tokio_postgres::NoTls;

use crate::retention::entry_of;

/// How long one member may take to answer a scrape before it is reported down.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn seconds(ts: Option<&str>) -> Option<f64> {
    let t: jiff::Timestamp = ts?.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// What `pg_stat_archiver` says of one member's primary.
struct Archiver {
    archived: i64,
    failed: i64,
    last_archived: Option<f64>,
    lag_bytes: f64,
}

async fn archiver(conninfo: &str) -> Result<Archiver, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client
        .query_one(
            "SELECT archived_count, failed_count, extract(epoch FROM last_archived_time)::float8,
                    coalesce(last_archived_wal, ''), pg_current_wal_lsn()::text,
                    pg_size_bytes(current_setting('wal_segment_size'))
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let (last_wal, current): (String, String) = (row.get(3), row.get(4));
    let segment_size = row.get::<_, i64>(5).max(1) as u64;
    let current = current.parse::<Lsn>().map_or(0, |l| l.0);
    // Lag: WAL written after the end of the last archived segment (all of it when none is).
    let archived_end = last_wal
        .get(..24)
        .filter(|s| layout::is_segment_name(s))
        .and_then(|s| {
            let id = u64::from_str_radix(&s[8..16], 16).ok()?;
            let seg = u64::from_str_radix(&s[16..], 16).ok()?;
            Some((id << 32) + (seg + 1) * segment_size)
        })
        .unwrap_or(0);
    Ok(Archiver {
        archived: row.get(0),
        failed: row.get(1),
        last_archived: row.get(2),
        lag_bytes: current.saturating_sub(archived_end) as f64,
    })
}

/// The metrics of every SGShardedCluster the API holds, its members as `runtime` runs them,
/// in the Prometheus text format.
pub async fn render(
    client: &kube::Client,
    runtime: &dyn ClusterRuntime,
) -> Result<String, kube::Error> {
    let all = ListParams::default();
    let clusters = Api::<SGShardedCluster>::all(client.clone())
        .list(&all)
        .await?
        .items;
    let backups = Api::<SGShardedBackup>::all(client.clone())
        .list(&all)
        .await?
        .items;
    let mut last_time = fam(
        "shardvault_backup_last_success_timestamp_seconds",
        "End of the newest Completed sharded backup of a backups[] entry (Unix time).",
        "gauge",
    );
    let mut last_duration = fam(
        "shardvault_backup_last_duration_seconds",
        "Duration of the newest Completed sharded backup of a backups[] entry.",
        "gauge",
    );
    let mut last_size = fam(
        "shardvault_backup_last_size_bytes",
        "Size of the newest Completed sharded backup of a backups[] entry (all members).",
        "gauge",
    );
    let mut failures = fam(
        "shardvault_backup_failures",
        "Failed sharded backups of a backups[] entry still recorded.",
        "gauge",
    );
    let mut count = fam(
        "shardvault_backups",
        "Sharded backups of a backups[] entry by phase.",
        "gauge",
    );
    let mut up = fam(
        "shardvault_member_up",
        "1 when the member's primary answered the scrape.",
        "gauge",
    );
    let mut archived = fam(
        "shardvault_wal_archived_total",
        "WAL files archived by the member's primary (pg_stat_archiver).",
        "counter",
    );
    let mut archive_failed = fam(
        "shardvault_wal_archive_failures_total",
        "Failed WAL archive attempts of the member's primary (pg_stat_archiver).",
        "counter",
    );
    let mut last_archived = fam(
        "shardvault_wal_last_archived_timestamp_seconds",
        "When the member's primary last archived a WAL file (Unix time).",
        "gauge",
    );
    let mut lag = fam(
        "shardvault_wal_archive_lag_bytes",
        "WAL written by the member's primary after the end of its last archived segment.",
        "gauge",
    );
    for cluster in &clusters {
        let (ns, name) = (cluster.namespace().unwrap_or_default(), cluster.name_any());
        let (ns, name) = (ns.as_str(), name.as_str());
        let ours: Vec<&SGShardedBackup> = backups
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(ns) && b.spec.sg_sharded_cluster == name)
            .collect();
        for entry in 0..cluster.spec.backups().len() {
            let e = entry.to_string();
            let l = [("namespace", ns), ("cluster", name), ("entry", e.as_str())];
            let mine: Vec<&SGShardedBackup> = ours
                .iter()
                .copied()
                .filter(|b| entry_of(b) == entry)
                .collect();
            let phase_of = |b: &SGShardedBackup| b.status.as_ref().map(|s| s.process.status);
            for p in [
                BackupPhase::Completed,
                BackupPhase::Failed,
                BackupPhase::Pending,
                BackupPhase::Running,
            ] {
                // No status yet is Pending.
                let n = mine
                    .iter()
                    .filter(|b| phase_of(b).unwrap_or_default() == p)
                    .count();
                let phase = p.to_string();
                let mut lp = l.to_vec();
                lp.push(("phase", &phase));
                count.samples.push((labels(&lp), n as f64));
                if p == BackupPhase::Failed {
                    failures.samples.push((labels(&l), n as f64));
                }
            }
            let newest = mine
                .iter()
                .filter_map(|b| {
                    let status = b.status.as_ref()?;
                    let timing = &status.process.timing;
                    let end = seconds(timing.end.as_deref())?;
                    (status.process.status == BackupPhase::Completed).then_some((end, status))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((end, status)) = newest {
                last_time.samples.push((labels(&l), end));
                if let Some(start) = seconds(status.process.timing.start.as_deref()) {
                    last_duration.samples.push((labels(&l), end - start));
                }
                if let Some(info) = &status.backup_information {
                    for (kind, n) in [
                        ("compressed", info.size.compressed),
                        ("uncompressed", info.size.uncompressed),
                    ] {
                        let mut lp = l.to_vec();
                        lp.push(("size", kind));
                        last_size.samples.push((labels(&lp), n as f64));
                    }
                }
            }
        }
        let Ok(observed) = runtime.observed(&ClusterId::new(ns, name)) else {
            continue;
        };
        for (i, m) in observed.members.iter().enumerate() {
            let l = labels(&[("namespace", ns), ("cluster", name), ("member", &m.name)]);
            let Some(conninfo) = observed.primary_conninfo(i) else {
                continue;
            };
            match tokio::time::timeout(MEMBER_TIMEOUT, archiver(&conninfo)).await {
                Ok(Ok(a)) => {
                    up.samples.push((l.clone(), 1.0));
                    archived.samples.push((l.clone(), a.archived as f64));
                    archive_failed.samples.push((l.clone(), a.failed as f64));
                    if let Some(t) = a.last_archived {
                        last_archived.samples.push((l.clone(), t));
                    }
                    lag.samples.push((l, a.lag_bytes));
                }
                _ => up.samples.push((l, 0.0)),
            }
        }
    }
    let mut out = String::new();
    for f in [
        last_time,
        last_duration,
        last_size,
        failures,
        count,
        up,
        archived,
        archive_failed,
        last_archived,
        lag,
    ] {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (l, v) in f.samples {
            let _ = writeln!(out, "{}{l} {v}", f.name);
        }
    }
    Ok(out)
}

fn fam(name: &'static str, help: &'static str, kind: &'static str) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}
