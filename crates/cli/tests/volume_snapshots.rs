//! Volume snapshot backups through the daemon, on a loop-mounted btrfs image (as root): a ddp
//! cluster whose data directories are subvolumes, a snapshot backup taken under cross-shard
//! two-phase-commit transfers, restores by cloning to its restore point and to a later time
//! (the bank's total exact, no prepared transaction left), deletion of the backup removing
//! its subvolumes, a class the runtime does not have refused at apply, and retention over
//! hourly snapshot backups (a driven clock) keeping the newest with their subvolumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use shardvault_pg::runtime::snapshot::is_subvolume;
use shardvault_testkit::btrfs::LoopBtrfs;
use shardvault_testkit::cluster::{connect, sql};
use shardvault_testkit::daemon::{Daemon, ready};

const ACCOUNTS: i64 = 20;
const OPENING: i64 = 1000;

fn storage(d: &Daemon) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata:\n  name: objs\nspec:\n  type: filesystem\n  filesystem:\n    path: {}\n",
        d.state().join("objects").display()
    )
}

fn cluster(name: &str, class: &str, restore: &str) -> String {
    format!(
        "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: {name}
spec:
  type: ddp
  database: bank
  postgres:
    version: '15'
  coordinator:
    instances: 1
    pods:
      persistentVolume:
        size: 1Gi
  shards:
    clusters: 2
    instancesPerCluster: 1
    pods:
      persistentVolume:
        size: 1Gi
  configurations:
    backups:
      - sgObjectStorage: objs
        useVolumeSnapshot: true
        volumeSnapshotClass: {class}
        fastVolumeSnapshot: true
{restore}"
    )
}

fn restored(name: &str, extra: &str) -> String {
    cluster(
        name,
        "btrfs",
        &format!("  initialData:\n    restore:\n      fromBackup:\n        name: snap1\n{extra}"),
    )
}

/// Transfers between an account on shard 0 and one on shard 1, each a two-phase commit on
/// both (PREPARE on both, then COMMIT PREPARED on both): the total never changes.
struct Transfers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Transfers {
    fn start(a: String, b: String) -> Transfers {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), done.clone());
        let task = tokio::spawn(async move {
            let (a, b) = (connect(&a).await, connect(&b).await);
            let mut i: i64 = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let gid = format!("t{i}-{}", std::process::id());
                let (from, to) = (i % ACCOUNTS + 1, (i * 7) % ACCOUNTS + 1);
                let ok = async {
                    a.batch_execute(&format!(
                        "BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = {from}; PREPARE TRANSACTION '{gid}'"
                    ))
                    .await?;
                    b.batch_execute(&format!(
                        "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = {to}; PREPARE TRANSACTION '{gid}'"
                    ))
                    .await?;
                    a.batch_execute(&format!("COMMIT PREPARED '{gid}'")).await?;
                    b.batch_execute(&format!("COMMIT PREPARED '{gid}'")).await?;
                    Ok::<_, tokio_postgres::Error>(())
                }
                .await;
                ok.unwrap_or_else(|e| panic!("transfer {gid}: {e}"));
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Transfers { stop, done, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the transfers ran");
        self.done.load(Ordering::Relaxed)
    }
}

/// The bank's total over both shards and the prepared transactions left on each member.
async fn audit(d: &Daemon, cluster: &str) -> (i64, Vec<Vec<String>>) {
    let observed = d.observed(cluster);
    let mut total = 0;
    let mut prepared = Vec::new();
    for i in 0..observed.members.len() {
        let c = connect(&observed.primary_conninfo(i).unwrap()).await;
        if i > 0 {
            total += c
                .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        prepared.push(
            c.query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        );
    }
    (total, prepared)
}

fn phase_done(o: &Value) -> bool {
    o.pointer("/status/process/status")
        .and_then(Value::as_str)
        .is_some_and(|s| s == "Completed" || s == "Failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_backups_restore_by_cloning_under_two_phase_transfers() {
    let fs = LoopBtrfs::new().expect("a loop-mounted btrfs image");
    let d = Daemon::start_in(fs.state_dir(), &[]);
    d.apply(&storage(&d));

    // A class the local runtime does not have is refused at apply, naming the field.
    let out = d.sv_in(&["apply", "-f", "-"], &cluster("bad", "csi-snapclass", ""));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("spec.configurations.backups[0].volumeSnapshotClass")
            && text.contains("csi-snapclass"),
        "{text}"
    );

    d.apply(&cluster("bank", "btrfs", ""));
    d.wait_until("sgshardedcluster", "bank", 180, ready);
    let source = d.observed("bank");
    assert!(
        source
            .members
            .iter()
            .all(|m| is_subvolume(&m.instances[0].pgdata)),
        "every member's data directory is a subvolume"
    );
    let (a, b) = (
        source.primary_conninfo(1).unwrap(),
        source.primary_conninfo(2).unwrap(),
    );
    for shard in [&a, &b] {
        sql(
            shard,
            &format!(
                "CREATE TABLE accounts (id int primary key, balance bigint not null);
                 INSERT INTO accounts SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g;"
            ),
        )
        .await;
    }
    let want = 2 * ACCOUNTS * OPENING;

    // The snapshot backup, taken while transfers run.
    let transfers = Transfers::start(a.clone(), b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.apply(
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata:\n  name: snap1\nspec:\n  sgShardedCluster: bank\n",
    );
    let backup = d.wait_until("sgshardedbackup", "snap1", 180, phase_done);
    assert_eq!(
        backup["status"]["process"]["status"], "Completed",
        "{backup:#}"
    );
    let snapshots = backup["status"]["volumeSnapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(snapshots.len(), 3, "{backup:#}");
    let children = d.json(&[
        "get",
        "sgbackup",
        "-l",
        "stackgres.io/shardedbackup-name=snap1",
    ]);
    for child in children["items"].as_array().unwrap() {
        let vs = &child["status"]["volumeSnapshot"];
        assert_eq!(vs["snapshotClass"], "btrfs", "{child:#}");
        assert_eq!(vs["sameDisk"], true, "{child:#}");
    }
    let kept = d.state().join("snapshots/default");
    assert!(is_subvolume(&kept.join("snap1-coord")));

    // A quiet moment to restore to: no transfer is half-way at that time.
    let moved = transfers.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let more = Transfers::start(a.clone(), b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved = moved + more.stop().await;
    assert!(moved > 0, "transfers ran");

    d.apply(&restored("at-point", ""));
    d.apply(&restored(
        "at-time",
        &format!("        pointInTimeRecovery:\n          restoreToTimestamp: '{target}'\n"),
    ));
    for name in ["at-point", "at-time"] {
        let c = d.wait_until("sgshardedcluster", name, 240, ready);
        let (total, prepared) = audit(&d, name).await;
        assert_eq!(total, want, "{name}: the bank's total");
        // At the time, a transfer prepared on both shards just after it was replayed up to
        // its prepares (recovery stops at the first commit after the time): committed nowhere
        // then, it is rolled back on both.
        assert!(
            prepared.iter().all(Vec::is_empty),
            "{name}: prepared left: {prepared:?}"
        );
        let restored = d.observed(name);
        assert!(
            restored
                .members
                .iter()
                .all(|m| is_subvolume(&m.instances[0].pgdata)),
            "{name}: clones are subvolumes: {c:#}"
        );
    }
    let (total, _) = audit(&d, "bank").await;
    assert_eq!(total, want, "the source's total");

    // Deleting the backup deletes its snapshots; the clones stay.
    d.ok(&["delete", "sgshardedbackup", "snap1"]);
    d.wait_until("sgshardedbackup", "snap1", 60, |o| {
        o.is_null() || o["items"].as_array().is_some_and(Vec::is_empty)
    });
    for s in &snapshots {
        let s = s.as_str().unwrap();
        assert!(!kept.join(s).exists(), "snapshot {s} is deleted");
    }
    let (total, _) = audit(&d, "at-point").await;
    assert_eq!(total, want);
}

/// Names of the entries of `dir` (none when it does not exist).
fn entries(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_over_scheduled_snapshot_backups_keeps_the_newest_with_their_subvolumes() {
    let fs = LoopBtrfs::new().expect("a loop-mounted btrfs image");
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("now");
    let hour = |h: i64| {
        "2030-01-01T00:00:10Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .checked_add(jiff::SignedDuration::from_hours(h))
            .unwrap()
    };
    let set_clock = |h: i64| std::fs::write(&clock, hour(h).to_string()).unwrap();
    set_clock(0);
    // SAFETY: set before any thread of this test process reads the environment; the daemon
    // (a child process) inherits it. Other tests run in their own processes under nextest.
    unsafe { std::env::set_var(shardvault_control::clock::CLOCK_FILE_ENV, &clock) };
    let d = Daemon::start_in(fs.state_dir(), &[]);
    d.apply(&storage(&d));
    d.apply(&cluster(
        "snaps",
        "btrfs",
        "        cronSchedule: '0 * * * *'\n        retention: 2\n",
    ));
    d.wait_until("sgshardedcluster", "snaps", 180, ready);
    let scheduled = |h: i64| format!("snaps-{}", hour(h).strftime("%Y-%m-%d-%H-00-00"));

    // Four hourly snapshot backups; retention 2 keeps the newest two, and only their
    // subvolumes stay on the disk.
    for h in 1..=4 {
        set_clock(h);
        let b = d.wait_until("sgshardedbackup", &scheduled(h), 120, phase_done);
        assert_eq!(b["status"]["process"]["status"], "Completed", "{b:#}");
        assert_eq!(
            b["status"]["volumeSnapshots"].as_array().map(Vec::len),
            Some(3),
            "{b:#}"
        );
    }
    let kept: std::collections::BTreeSet<String> = [3, 4].into_iter().map(scheduled).collect();
    let snapshots_dir = d.state().join("snapshots/default");
    let want_snapshots: std::collections::BTreeSet<String> = kept
        .iter()
        .flat_map(|b| ["coord", "shard0", "shard1"].map(|m| format!("{b}-{m}")))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let list = d.json(&["get", "sgshardedbackup"]);
        let names: std::collections::BTreeSet<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        if names == kept && entries(&snapshots_dir) == want_snapshots {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention kept {names:?} and snapshots {:?}; want {kept:?} and {want_snapshots:?}",
            entries(&snapshots_dir)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for s in &want_snapshots {
        assert!(is_subvolume(&snapshots_dir.join(s)), "{s} is a subvolume");
    }
    let plan = d.ok(&["retention", "plan", "snaps"]);
    assert!(
        plan.contains("keep 2 managed backup(s)") && plan.contains("nothing to delete"),
        "{plan}"
    );
}
