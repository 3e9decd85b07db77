//! Citus, for real (needs the citus extension for PostgreSQL 15; run by
//! `scripts/test-citus.sh`, never by the normal suite).
//!
//! A restore never touches its source (the scenario of `common/isolation.rs`), and restores
//! of a cluster under a cross-shard bank workload are exact: clients move money through the
//! coordinator between accounts on different workers and write a ledger row on each side
//! (multi-shard transactions, so Citus commits them with 2PC). Ten sharded backups are taken
//! under the load and each is restored to its restore point; ten restores go to random times
//! in the window. Every restored cluster must hold the exact total, every transfer's ledger
//! rows on both sides or on neither, and no prepared transaction; the source must keep its
//! total and every committed ledger row.

#[path = "common/isolation.rs"]
mod isolation;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardvault_control::archive::seal;
use shardvault_control::cut::{Cut, CutMode};
use shardvault_control::sharded_backup::{self, MemberJob, Progress, ShardedBackupJob};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::runtime::cluster::{ClusterObserved, ClusterPlan, RecoveryTarget, Sharding};
use shardvault_testkit::TempStateDir;
use shardvault_testkit::cluster::{
    citus_plan, client, cluster_id, connect, destroy_cluster, node_runtime, restored_plan, start,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DATABASE: &str = "bank";
const ACCOUNTS: i64 = 400;
const BALANCE: i64 = 1000;
const TOTAL: i64 = ACCOUNTS * BALANCE;
const CLIENTS: u64 = 4;
const BACKUPS: usize = 10;
const TIMESTAMP_RESTORES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citus_restore_never_touches_its_source_and_verify_finds_a_missing_restore_point_segment()
{
    isolation::restore_never_touches_its_source(Sharding::Citus).await;
}

struct Quiet;

impl Progress for Quiet {
    fn member_started(&self, _: usize) {}
    fn member_done(&self, _: usize, _: &BackupSummary) {}
    fn phase(&self, _: &str) {}
}

/// Clients moving money between accounts through the coordinator until stopped.
struct Workload {
    stop: CancellationToken,
    committed: Arc<AtomicU64>,
    clients: Vec<JoinHandle<u64>>,
}

impl Workload {
    fn start(coordinator: String) -> Workload {
        let stop = CancellationToken::new();
        let committed = Arc::new(AtomicU64::new(0));
        let clients = (0..CLIENTS)
            .map(|n| {
                let (stop, committed, conninfo) =
                    (stop.clone(), committed.clone(), coordinator.clone());
                tokio::spawn(async move {
                    let c = connect(&conninfo).await;
                    let mut rng = StdRng::seed_from_u64(n);
                    let mut failed = 0;
                    for seq in 0.. {
                        if stop.is_cancelled() {
                            break;
                        }
                        let xfer = (n << 40) | seq;
                        let from = rng.random_range(1..=ACCOUNTS);
                        let to = rng.random_range(1..=ACCOUNTS);
                        let amount = rng.random_range(1..=50);
                        let sql = format!(
                            "BEGIN; \
                             UPDATE accounts SET balance = balance - {amount} WHERE id = {from}; \
                             UPDATE accounts SET balance = balance + {amount} WHERE id = {to}; \
                             INSERT INTO ledger VALUES ({}, {xfer}, -{amount}), ({}, {xfer}, {amount}); \
                             COMMIT",
                            2 * xfer,
                            2 * xfer + 1
                        );
                        if c.batch_execute(&sql).await.is_ok() {
                            committed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed += 1;
                            let _ = c.batch_execute("ROLLBACK").await;
                        }
                        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=3))).await;
                    }
                    failed
                })
            })
            .collect();
        Workload {
            stop,
            committed,
            clients,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (committed, failed).
    async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        let mut failed = 0;
        for c in self.clients {
            failed += c.await.expect("a workload client panicked");
        }
        (self.committed.load(Ordering::Relaxed), failed)
    }
}

/// What is wrong with a cluster's bank: the total, a transfer with one ledger row, a
/// transaction left prepared on any member.
async fn problems(observed: &ClusterObserved) -> Vec<String> {
    let mut found = Vec::new();
    for (i, member) in observed.members.iter().enumerate() {
        let prepared: Vec<String> = client(observed, i)
            .await
            .query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[])
            .await
            .expect("pg_prepared_xacts")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !prepared.is_empty() {
            found.push(format!(
                "{}: left prepared: {}",
                member.name,
                prepared.join(", ")
            ));
        }
    }
    let c = client(observed, 0).await;
    let row = c
        .query_one(
            "SELECT count(*), coalesce(sum(balance), 0)::bigint FROM accounts",
            &[],
        )
        .await
        .expect("accounts");
    let (rows, total): (i64, i64) = (row.get(0), row.get(1));
    if rows != ACCOUNTS || total != TOTAL {
        found.push(format!(
            "{rows} accounts holding {total} instead of {ACCOUNTS} holding {TOTAL}"
        ));
    }
    let torn: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT xfer FROM ledger GROUP BY xfer \
             HAVING count(*) <> 2 OR sum(delta) <> 0) t",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    if torn > 0 {
        found.push(format!(
            "{torn} transfers with one side of their ledger only"
        ));
    }
    found
}

fn node_config(observed: &ClusterObserved, member: usize) -> NodeConfig {
    NodeConfig::load(&observed.members[member].node_config).expect("the member's node config")
}

fn backup_job(plan: &ClusterPlan, observed: &ClusterObserved, name: &str) -> ShardedBackupJob {
    ShardedBackupJob {
        name: name.to_string(),
        cluster: cluster_id(plan),
        members: member_backups(plan, name)
            .into_iter()
            .enumerate()
            .map(|(i, backup)| MemberJob {
                name: plan.members[i].name.clone(),
                backup,
                node_config: node_config(observed, i),
                backup_from: node_config(observed, i),
            })
            .collect(),
        database: DATABASE.to_string(),
        cut_mode: CutMode::Citus,
        parallelism: 3,
        archive_wait: Duration::from_secs(60),
    }
}

fn member_backups(plan: &ClusterPlan, name: &str) -> Vec<String> {
    (0..plan.members.len())
        .map(|i| format!("{name}-{i}"))
        .collect()
}

/// Restores `backup` into new cluster `name` to `target`, removes it; returns its problems
/// and the in-doubt transactions the restore resolved.
async fn restore_and_check(
    state: &TempStateDir,
    source: &ClusterPlan,
    name: &str,
    backup: &str,
    target: RecoveryTarget,
) -> (Vec<String>, usize) {
    let plan = restored_plan(
        state.path(),
        name,
        source,
        &member_backups(source, backup),
        &target,
    );
    let restored = start(&plan).await;
    let found = problems(&restored).await;
    let resolved = restored
        .actions
        .iter()
        .filter(|a| a.contains("in-doubt transaction"))
        .count();
    destroy_cluster(&plan.dir).await;
    (found, resolved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_of_a_citus_bank_under_cross_shard_load_are_exact() {
    let started = Instant::now();
    let state = TempStateDir::new();
    let plan = citus_plan(state.path(), "bank", DATABASE, 2);
    let observed = start(&plan).await;
    let runtime = node_runtime(state.path());
    client(&observed, 0)
        .await
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             SELECT create_distributed_table('accounts', 'id');
             CREATE TABLE ledger (id bigint PRIMARY KEY, xfer bigint NOT NULL, delta bigint NOT NULL);
             SELECT create_distributed_table('ledger', 'id');
             INSERT INTO accounts SELECT i, {BALANCE} FROM generate_series(1, {ACCOUNTS}) i;"
        ))
        .await
        .expect("the bank created through the coordinator");
    let workload = Workload::start(observed.primary_conninfo(0).expect("a coordinator"));

    let mut cuts: Vec<Cut> = Vec::new();
    for k in 0..BACKUPS {
        let before = workload.committed();
        let name = format!("b{k:02}");
        let outcome = sharded_backup::run(
            &backup_job(&plan, &observed, &name),
            &runtime,
            Arc::new(Quiet),
        )
        .await
        .unwrap_or_else(|e| panic!("sharded backup {name}: {e}"));
        assert!(
            workload.committed() > before,
            "no transfer committed during backup {name}"
        );
        cuts.push(outcome.cut);
    }
    let (committed, failed) = workload.stop().await;
    // A commit record after the window on every member, archived.
    for i in 0..plan.members.len() {
        seal(
            &node_config(&observed, i),
            true,
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("seal member {i}: {e}"));
    }
    let backed_up = started.elapsed();

    let (first, last) = (cuts[0].time, cuts[BACKUPS - 1].time);
    let span = last.duration_since(first).as_millis().max(1) as i64;
    let mut rng = StdRng::seed_from_u64(9);
    let mut restores: Vec<(String, String, RecoveryTarget)> = cuts
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.name.clone(),
                RecoveryTarget::Name(c.name.clone()),
            )
        })
        .collect();
    for t in 0..TIMESTAMP_RESTORES {
        let at = first + jiff::SignedDuration::from_millis(rng.random_range(0..span));
        restores.push((
            format!("t{t:02}"),
            cuts[0].name.clone(),
            RecoveryTarget::Time {
                time: at.to_string(),
                inclusive: true,
            },
        ));
    }
    let mut found: Vec<(String, RecoveryTarget, (Vec<String>, usize))> =
        futures::stream::iter(restores)
            .map(|(name, backup, target)| {
                let (state, plan) = (&state, &plan);
                async move {
                    let p = restore_and_check(
                        state,
                        plan,
                        &format!("r-{name}"),
                        &backup,
                        target.clone(),
                    )
                    .await;
                    (name, target, p)
                }
            })
            .buffer_unordered(2)
            .collect()
            .await;
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let source = problems(&observed).await;
    let ledger: i64 = client(&observed, 0)
        .await
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("source ledger")
        .get(0);
    println!(
        "citus bank: {committed} transfers committed, {failed} failed, under {BACKUPS} backups \
         ({:.1} s); {} restores ({BACKUPS} to restore points, {TIMESTAMP_RESTORES} to times) in {:.1} s",
        backed_up.as_secs_f64(),
        found.len(),
        (started.elapsed() - backed_up).as_secs_f64()
    );
    for (name, target, (p, resolved)) in &found {
        println!(
            "  {name}: {:?}: {resolved} in-doubt transactions resolved; {}",
            target.flags(),
            if p.is_empty() {
                "exact".to_string()
            } else {
                p.join("; ")
            }
        );
    }
    let bad: Vec<String> = found
        .iter()
        .filter(|(_, _, (p, _))| !p.is_empty())
        .map(|(n, _, (p, _))| format!("{n}: {}", p.join("; ")))
        .collect();
    assert!(
        bad.is_empty(),
        "restores that are not exact:\n{}",
        bad.join("\n")
    );
    assert!(
        source.is_empty(),
        "the source after the restores: {source:?}"
    );
    assert_eq!(
        ledger,
        2 * committed as i64,
        "the source lost committed ledger rows"
    );
    destroy_cluster(&plan.dir).await;
}
