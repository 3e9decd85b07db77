//! The demo journey: a ddp sharded cluster on this host, data through a distributed table, a
//! sharded backup, more writes, then two new clusters restored from it (to the backup's
//! restore point and to a timestamp), each checked member by member against what was
//! written. `shardvault demo` runs it; the end-to-end test runs it too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardvault_api::shardedcluster::ShardedClusterSpec;
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::runtime::cluster::{
    self as rt, Bootstrap, ClusterPlan, MemberPlan, RecoveryTarget,
};
use shardvault_storage::StorageConfig;
use tokio_postgres::NoTls;

use crate::archive::seal;
use crate::cut::CutMode;
use crate::destination::{ResolvedStorage, member_destinations};
use crate::fingerprint::{Fingerprint, differences, fingerprint};
use crate::sharded_backup::{self, MemberJob, ShardedBackupJob};

/// Where the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// State directory (clusters and storage live under it).
    pub state_dir: PathBuf,
    /// The shardvault binary (for archive_command and the engine).
    pub shardvault_bin: PathBuf,
    /// Leave the clusters running at the end.
    pub keep: bool,
}

/// One timed step of the journey.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// What was done.
    pub name: String,
    /// How long it took.
    pub elapsed: Duration,
    /// Figures worth showing (sizes, rows, LSNs).
    pub detail: String,
}

/// One content check of a restored cluster.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// What was compared.
    pub name: String,
    /// Whether it matched.
    pub passed: bool,
    /// What matched or differed.
    pub detail: String,
}

/// What the journey did and found.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Steps in order.
    pub steps: Vec<StepReport>,
    /// Content checks.
    pub checks: Vec<CheckReport>,
}

impl DemoReport {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// Receives the journey's progress as it happens.
pub trait DemoProgress: Send + Sync {
    /// A step began.
    fn step_started(&self, name: &str);
    /// A step ended.
    fn step_done(&self, step: &StepReport);
}

/// A failure that stopped the journey.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct DemoError {
    /// The step that failed.
    pub step: String,
    /// What went wrong.
    pub message: String,
}

const CLUSTER: &str = "demo";
const NAMESPACE: &str = "default";
const DATABASE: &str = "demo";
const BACKUP: &str = "demo-backup";

struct Journey<'a> {
    opts: &'a DemoOptions,
    progress: Arc<dyn DemoProgress>,
    report: DemoReport,
    pg_bin: PathBuf,
    storage: ResolvedStorage,
}

impl Journey<'_> {
    async fn step<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        work: impl std::future::Future<Output = Result<(T, String), E>>,
    ) -> Result<T, DemoError> {
        self.progress.step_started(name);
        let started = Instant::now();
        let (value, detail) = work.await.map_err(|e| DemoError {
            step: name.to_string(),
            message: e.to_string(),
        })?;
        let step = StepReport {
            name: name.to_string(),
            elapsed: started.elapsed(),
            detail,
        };
        self.progress.step_done(&step);
        self.report.steps.push(step);
        Ok(value)
    }

    fn check(&mut self, name: &str, want: &[Fingerprint], got: &[Fingerprint], members: &[String]) {
        let mut diffs = Vec::new();
        for ((w, g), m) in want.iter().zip(got).zip(members) {
            diffs.extend(differences(w, g).into_iter().map(|d| format!("{m}: {d}")));
        }
        let rows: i64 = got.iter().flat_map(|f| f.values()).map(|t| t.rows).sum();
        let tables: usize = got.iter().map(|f| f.len()).sum();
        self.report.checks.push(CheckReport {
            name: name.to_string(),
            passed: diffs.is_empty(),
            detail: if diffs.is_empty() {
                format!(
                    "{tables} tables, {rows} rows on {} members identical",
                    got.len()
                )
            } else {
                diffs.join("; ")
            },
        });
    }

    fn spec(&self) -> ShardedClusterSpec {
        let yaml = format!(
            "type: ddp\ndatabase: {DATABASE}\npostgres: {{version: '15'}}\n\
             coordinator: {{instances: 1}}\nshards: {{clusters: 2, instancesPerCluster: 1}}\n\
             configurations: {{backups: [{{sgObjectStorage: demo-storage, compression: lz4}}]}}\n"
        );
        yaml_serde::from_str(&yaml).expect("the demo spec is valid")
    }

    fn plan(&self, name: &str, bootstrap: impl Fn(usize) -> Bootstrap) -> ClusterPlan {
        let spec = self.spec();
        let dests =
            member_destinations(name, NAMESPACE, &spec, std::slice::from_ref(&self.storage));
        ClusterPlan {
            name: name.to_string(),
            dir: self
                .opts
                .state_dir
                .join("clusters")
                .join(NAMESPACE)
                .join(name),
            pg_bin: self.pg_bin.clone(),
            shardvault_bin: self.opts.shardvault_bin.clone(),
            database: DATABASE.to_string(),
            sharding: rt::Sharding::Ddp,
            members: spec
                .member_names(name)
                .into_iter()
                .zip(dests)
                .enumerate()
                .map(|(i, (member, destinations))| MemberPlan {
                    name: member,
                    instances: 1,
                    destinations,
                    bootstrap: bootstrap(i),
                })
                .collect(),
            extra_settings: vec![("fsync".into(), "off".into())],
        }
    }
}

async fn sql(conninfo: &str, statements: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.batch_execute(statements).await
}

async fn prints(observed: &rt::ClusterObserved) -> Result<Vec<Fingerprint>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for i in 0..observed.members.len() {
        out.push(fingerprint(&primary(observed, i)).await?);
    }
    Ok(out)
}

fn primary(observed: &rt::ClusterObserved, index: usize) -> String {
    observed
        .primary_conninfo(index)
        .expect("reconcile reports every member with its primary")
}

async fn count_through_coordinator(
    observed: &rt::ClusterObserved,
) -> Result<i64, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&primary(observed, 0), NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await?
        .get(0))
}

fn node_config(observed: &rt::ClusterObserved, index: usize, plan: &MemberPlan) -> NodeConfig {
    let primary = &observed.members[index].instances[0];
    NodeConfig {
        member: plan.name.clone(),
        pg_bin: observed.pg_bin.clone(),
        pgdata: primary.pgdata.clone(),
        host: observed.socket_dir.clone(),
        port: primary.port,
        user: "postgres".into(),
        destinations: plan.destinations.clone(),
        restore_source: None,
    }
}

/// Runs the journey; the report says whether every check passed.
pub async fn run(
    opts: &DemoOptions,
    progress: Arc<dyn DemoProgress>,
) -> Result<DemoReport, DemoError> {
    let storage_dir = opts.state_dir.join("storage");
    shardvault_pg::user::create_dir_all_for_server(&storage_dir).map_err(|e| DemoError {
        step: "prepare".into(),
        message: format!("{}: {e}", storage_dir.display()),
    })?;
    let pg_bin = shardvault_pg::runtime::find_pg_bin("15").map_err(|e| DemoError {
        step: "prepare".into(),
        message: e.to_string(),
    })?;
    let mut j = Journey {
        opts,
        progress,
        report: DemoReport::default(),
        pg_bin,
        storage: ResolvedStorage {
            config: StorageConfig::Filesystem { path: storage_dir },
            encryption: None,
        },
    };

    let source_plan = j.plan(CLUSTER, |_| Bootstrap::Initdb);
    let source = j
        .step(
            "start sharded cluster demo (coordinator + 2 shards)",
            async {
                let o = rt::reconcile(&source_plan).await?;
                let detail = format!(
                    "{} servers ready",
                    o.members.iter().map(|m| m.instances.len()).sum::<usize>()
                );
                Ok::<_, shardvault_pg::runtime::RuntimeError>((o, detail))
            },
        )
        .await?;
    let coord = primary(&source, 0);

    j.step("load 2000 accounts through the distributed table", async {
        sql(
            &coord,
            "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, owner text not null, balance bigint not null', 'id');
             INSERT INTO accounts SELECT i, 'owner-' || i, 1000 FROM generate_series(1, 2000) i;",
        )
        .await?;
        Ok::<_, tokio_postgres::Error>(((), "2000 rows over 2 shards".to_string()))
    })
    .await?;

    let jobs: Vec<MemberJob> = source_plan
        .members
        .iter()
        .enumerate()
        .map(|(i, plan)| MemberJob {
            name: plan.name.clone(),
            backup: format!(
                "{BACKUP}-{}",
                plan.name.trim_start_matches(&format!("{CLUSTER}-"))
            ),
            node_config: node_config(&source, i, plan),
            config_path: source_plan.dir.join(format!("{}-backup.json", plan.name)),
        })
        .collect();
    let job = ShardedBackupJob {
        name: BACKUP.to_string(),
        members: jobs.clone(),
        database: DATABASE.to_string(),
        cut_mode: CutMode::default(),
        parallelism: 2,
        shardvault_bin: opts.shardvault_bin.clone(),
        archive_wait: Duration::from_secs(60),
    };
    let outcome = j
        .step(
            "sharded backup demo-backup with a cluster-wide restore point",
            async {
                let o = sharded_backup::run(&job, Arc::new(NoMemberProgress)).await?;
                let stored: u64 = o
                    .manifests
                    .iter()
                    .map(|m: &BackupSummary| m.size.compressed)
                    .sum();
                let data: u64 = o.manifests.iter().map(|m| m.size.uncompressed).sum();
                let detail = format!(
                    "{} members, {} stored of {} data, write pause {:.1} ms",
                    o.manifests.len(),
                    human(stored),
                    human(data),
                    o.cut.write_pause_ms
                );
                Ok::<_, sharded_backup::ShardedBackupError>((o, detail))
            },
        )
        .await?;
    let at_restore_point = j
        .step("fingerprint every member at the restore point", async {
            let p = prints(&source).await?;
            Ok::<_, tokio_postgres::Error>((p, "row counts and md5 of every table".to_string()))
        })
        .await?;

    let (at_time, target_time) = j
        .step("more writes, a timestamp between them", async {
            sql(
                &coord,
                "INSERT INTO accounts SELECT i, 'owner-' || i, 500 FROM generate_series(2001, 2500) i;
                 UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;",
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let t = jiff::Timestamp::now();
            let p = prints(&source).await?;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            sql(
                &coord,
                "INSERT INTO accounts SELECT i, 'late-' || i, 1 FROM generate_series(2501, 2800) i;
                 DELETE FROM accounts WHERE id % 11 = 0;",
            )
            .await?;
            for m in &jobs {
                seal(&m.node_config, true, None, Duration::from_secs(60))
                    .await
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", m.name)))?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(((p, t), format!("target time {t}")))
        })
        .await?;

    let backups: Vec<String> = jobs.iter().map(|m| m.backup.clone()).collect();
    let source_dests: Vec<_> = source_plan
        .members
        .iter()
        .map(|m| m.destinations[0].clone())
        .collect();
    let restore = |target: RecoveryTarget| {
        let backups = backups.clone();
        let dests = source_dests.clone();
        move |i: usize| Bootstrap::Restore {
            source: dests[i].clone(),
            backup: backups[i].clone(),
            target: target.clone(),
            concurrency: 2,
        }
    };

    let members_rp: Vec<String> = source_plan.members.iter().map(|m| m.name.clone()).collect();
    for (name, target, want, label) in [
        (
            "demo-at-restore-point",
            RecoveryTarget::Name(outcome.cut.name.clone()),
            at_restore_point.clone(),
            format!("restore point {}", outcome.cut.name),
        ),
        (
            "demo-at-time",
            RecoveryTarget::Time {
                time: target_time.to_string(),
                inclusive: true,
            },
            at_time.clone(),
            format!("time {target_time}"),
        ),
    ] {
        let plan = j.plan(name, restore(target));
        let restored = j
            .step(&format!("restore new cluster {name} to {label}"), async {
                let o = rt::reconcile(&plan).await?;
                Ok::<_, shardvault_pg::runtime::RuntimeError>((
                    o,
                    "3 members recovered and promoted".to_string(),
                ))
            })
            .await?;
        let got = j
            .step(&format!("fingerprint {name}"), async {
                let p = prints(&restored).await?;
                let n = count_through_coordinator(&restored).await?;
                Ok::<_, tokio_postgres::Error>((
                    (p, n),
                    format!("{n} accounts through its coordinator"),
                ))
            })
            .await?;
        j.check(
            &format!("{name} matches the source at {label}, on every member"),
            &want,
            &got.0,
            &members_rp,
        );
        let want_rows: i64 = want.iter().flat_map(|f| f.values()).map(|t| t.rows).sum();
        j.report.checks.push(CheckReport {
            name: format!("{name}: its coordinator reads its own shards"),
            passed: got.1 == want_rows,
            detail: format!(
                "{} rows through the coordinator, {want_rows} on the shards",
                got.1
            ),
        });
        if !opts.keep {
            rt::destroy(&plan.dir).await.map_err(|e| DemoError {
                step: format!("remove {name}"),
                message: e.to_string(),
            })?;
        }
    }
    if !opts.keep {
        rt::destroy(&source_plan.dir).await.map_err(|e| DemoError {
            step: "remove demo".into(),
            message: e.to_string(),
        })?;
    }
    Ok(j.report)
}

struct NoMemberProgress;

impl sharded_backup::Progress for NoMemberProgress {
    fn member_started(&self, _: usize) {}
    fn member_done(&self, _: usize, _: &BackupSummary) {}
    fn phase(&self, _: &str) {}
}

/// Bytes in a human unit (KiB, MiB, GiB).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
