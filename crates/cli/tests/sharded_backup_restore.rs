//! The product path through the daemon and the CLI, on real PostgreSQL servers: a ddp sharded
//! cluster, a sharded backup with its cluster-wide restore point, restores into new clusters
//! (to the restore point and to a timestamp) checked member by member by content, and the
//! refusals that must create nothing.

use std::time::Duration;

use serde_json::Value;
use shardvault_pg::fingerprint;
use shardvault_pg::runtime::cluster::ClusterObserved;
use shardvault_testkit::cluster::{assert_same_content, connect, sql};
use shardvault_testkit::daemon::{Daemon, ready};

fn storage(d: &Daemon) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata:\n  name: my-backup-storage\nspec:\n  type: filesystem\n  filesystem:\n    path: {}\n",
        d.state().join("objects").display()
    )
}

const CLUSTER: &str = "
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: my-sharded-cluster
spec:
  type: ddp
  database: sharded
  postgres:
    version: '15'
  coordinator:
    instances: 1
    pods:
      persistentVolume:
        size: 1Gi
  shards:
    clusters: 2
    instancesPerCluster: 2
    pods:
      persistentVolume:
        size: 1Gi
  configurations:
    backups:
      - sgObjectStorage: my-backup-storage
        cronSchedule: '0 5 * * *'
        retention: 7
        compression: lz4
";

const BACKUP: &str = "
apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: manual-backup
spec:
  sgShardedCluster: my-sharded-cluster
";

/// A restore of `manual-backup` into a new cluster `name`, with extra lines under
/// `fromBackup` and a number of shards.
fn restore(name: &str, shards: u32, version: &str, from_backup_extra: &str) -> String {
    restore_with(name, shards, 1, version, from_backup_extra)
}

/// Like [`restore`], with `instances` servers per shard (replicas are built after the restore).
fn restore_with(
    name: &str,
    shards: u32,
    instances: u32,
    version: &str,
    from_backup_extra: &str,
) -> String {
    format!(
        "
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: {name}
spec:
  type: ddp
  database: sharded
  postgres:
    version: '{version}'
  coordinator:
    instances: 1
    pods:
      persistentVolume:
        size: 20Gi
  shards:
    clusters: {shards}
    instancesPerCluster: {instances}
    pods:
      persistentVolume:
        size: 50Gi
  initialData:
    restore:
      fromBackup:
        name: manual-backup
{from_backup_extra}      downloadDiskConcurrency: 2
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_backup_restores_every_member_to_the_restore_point_and_to_a_time() {
    let d = Daemon::start();
    d.apply(&storage(&d));
    d.apply(CLUSTER);
    d.wait_until("sgshardedcluster", "my-sharded-cluster", 120, ready);
    let source = d.observed("my-sharded-cluster");
    let coord = source.primary_conninfo(0).unwrap();
    sql(
        &coord,
        "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, balance bigint not null', 'id');
         INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 1000) i;",
    )
    .await;

    d.apply(BACKUP);
    let backup = d.wait_until("sgshardedbackup", "manual-backup", 120, |o| {
        o.pointer("/status/process/status")
            .and_then(Value::as_str)
            .is_some_and(|s| s == "Completed" || s == "Failed")
    });
    assert_eq!(
        backup["status"]["process"]["status"], "Completed",
        "{backup:#}"
    );
    assert_eq!(
        backup["status"]["sgBackups"],
        serde_json::json!([
            "manual-backup-coord",
            "manual-backup-shard0",
            "manual-backup-shard1"
        ])
    );
    let rp = &backup["status"]["restorePoint"];
    assert_eq!(rp["name"], "manual-backup");
    assert_eq!(rp["members"].as_array().unwrap().len(), 3);
    assert!(
        backup["status"]["backupInformation"]["size"]["compressed"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        backup["status"]["backupInformation"]["postgresVersion"]
            .as_str()
            .unwrap()
            .starts_with("15")
    );
    let children = d.json(&[
        "get",
        "sgbackup",
        "-l",
        "stackgres.io/shardedbackup-name=manual-backup",
    ]);
    let children = children["items"].as_array().expect("a list");
    assert_eq!(children.len(), 3);
    assert!(
        children
            .iter()
            .all(|c| c["status"]["process"]["status"] == "Completed")
    );
    let at_restore_point = fingerprint::members(&source).await.expect("fingerprint");

    // The whole sharded backup reads back clean; a changed byte in any part is found and named.
    let verified = d.ok(&["verify", "sgshardedbackup", "manual-backup"]);
    assert!(verified.contains("verified"), "{verified}");
    let parts = d
        .state()
        .join("objects/shardvault/default/my-sharded-cluster/my-sharded-cluster-shard1/basebackups/manual-backup-shard1/parts");
    let part = std::fs::read_dir(&parts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    nobody_reads_nothing(&d, &part);
    let good = std::fs::read(&part).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x5a;
    std::fs::write(&part, &bad).unwrap();
    let out = d.sv(&["verify", "sgshardedbackup", "manual-backup"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a corrupt part must fail verify: {text}"
    );
    let part_name = part.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains("my-sharded-cluster-shard1: FAILED") && text.contains(part_name),
        "{text}"
    );
    std::fs::write(&part, &good).unwrap();

    sql(&coord, "INSERT INTO accounts SELECT i, 5 FROM generate_series(1001, 1500) i; UPDATE accounts SET balance = 0 WHERE id < 10;").await;
    // Client-driven two-phase transactions around the target time: "early" is prepared on
    // shard1 before it, "late" on both shards after it; both commit after it.
    let shards = [
        source.primary_conninfo(1).unwrap(),
        source.primary_conninfo(2).unwrap(),
    ];
    let prepare = |gid: &str, rows: &str| {
        format!(
            "BEGIN; UPDATE accounts SET balance = balance WHERE id = (SELECT min(id) FROM accounts WHERE {rows}); PREPARE TRANSACTION '{gid}'"
        )
    };
    sql(&shards[1], &prepare("early", "true")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = jiff::Timestamp::now();
    let at_target = fingerprint::members(&source).await.expect("fingerprint");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for shard in &shards {
        sql(shard, &prepare("late", "id > 500")).await;
    }
    sql(&coord, "INSERT INTO accounts SELECT i, 7 FROM generate_series(1501, 1600) i; DELETE FROM accounts WHERE id > 1590;").await;
    sql(&shards[1], "COMMIT PREPARED 'early'").await;
    for shard in &shards {
        sql(shard, "COMMIT PREPARED 'late'").await;
    }

    // Refusals: `apply` itself refuses, naming the field, and stores nothing; no server or
    // data directory is created.
    let refusals = [
        (
            restore("three-shards", 3, "15", ""),
            "spec.shards.clusters",
            "the backup \"manual-backup\" has 2 shards",
        ),
        (
            restore("other-major", 2, "14", ""),
            "spec.postgres.version",
            "\"14\"",
        ),
        (
            restore(
                "too-early",
                2,
                "15",
                "        pointInTimeRecovery:\n          restoreToTimestamp: \"2020-01-01T00:00:00Z\"\n",
            ),
            "pointInTimeRecovery.restoreToTimestamp",
            "before the backup's restore point",
        ),
        (
            restore("no-such-backup", 2, "15", "")
                .replace("name: manual-backup", "name: no-such-backup"),
            "fromBackup.name",
            "no SGShardedBackup of that name",
        ),
    ];
    for (yaml, path, needle) in &refusals {
        let name = yaml.split("name: ").nth(1).unwrap().lines().next().unwrap();
        let out = d.sv_in(&["apply", "-f", "-"], yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: apply must refuse");
        assert!(err.contains(path) && err.contains(needle), "{name}: {err}");
        assert!(
            !d.sv(&["get", "sgshardedcluster", name]).status.success(),
            "{name}: nothing stored"
        );
        assert!(
            !d.state().join("clusters/default").join(name).exists(),
            "{name}: a refused restore must create nothing"
        );
    }

    d.apply(&restore_with("at-restore-point", 2, 2, "15", ""));
    d.apply(&restore(
        "at-time",
        2,
        "15",
        &format!("        pointInTimeRecovery:\n          restoreToTimestamp: \"{target}\"\n"),
    ));
    d.wait_until("sgshardedcluster", "at-restore-point", 180, ready);
    d.wait_until("sgshardedcluster", "at-time", 180, ready);

    let rp_cluster = d.observed("at-restore-point");
    assert_same_content(
        &at_restore_point,
        &fingerprint::members(&rp_cluster)
            .await
            .expect("fingerprint"),
        "restore to the restore point",
    );
    let time_cluster = d.observed("at-time");
    assert_same_content(
        &at_target,
        &fingerprint::members(&time_cluster)
            .await
            .expect("fingerprint"),
        "restore to a time",
    );
    // "late" was prepared after the time, so it committed nowhere by then: rolled back on
    // both shards. "early" may have committed elsewhere by then: left in doubt, and said.
    let mut prepared = Vec::new();
    for m in 0..3 {
        let c = connect(&time_cluster.primary_conninfo(m).unwrap()).await;
        let gids: Vec<String> = c
            .query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        prepared.push(gids);
    }
    assert_eq!(
        prepared,
        [vec![], vec![], vec!["early".to_string()]],
        "prepared transactions of the restore to a time"
    );
    let log = d.log();
    assert!(
        log.contains("rolled back in-doubt transaction \"late\" on at-time-shard0-0")
            && log.contains("rolled back in-doubt transaction \"late\" on at-time-shard1-0")
            && log.contains("left in doubt: transaction \"early\" on at-time-shard1-0"),
        "{log}"
    );
    sql(
        &time_cluster.primary_conninfo(2).unwrap(),
        "ROLLBACK PREPARED 'early'",
    )
    .await;

    // The restored coordinators read their own shards, never the source's.
    for (cluster, rows) in [(&rp_cluster, 1000i64), (&time_cluster, 1500)] {
        let (client, conn) =
            tokio_postgres::connect(&cluster.primary_conninfo(0).unwrap(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let n: i64 = client
            .query_one("SELECT count(*) FROM accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, rows, "{}: rows through its coordinator", cluster.name);
        let ports: Vec<String> = client
            .query("SELECT option_value FROM pg_foreign_server s, pg_options_to_table(s.srvoptions) WHERE option_name = 'port' ORDER BY srvname", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let own: Vec<String> = cluster.members[1..]
            .iter()
            .map(|m| m.instances[0].port.to_string())
            .collect();
        assert_eq!(
            ports, own,
            "{}: foreign servers point at its own shards",
            cluster.name
        );
    }

    d.ok(&["delete", "sgshardedcluster", "at-restore-point", "--wait"]);
    assert!(!d.state().join("clusters/default/at-restore-point").exists());

    // Disaster recovery: a new installation with an empty state dir and only the
    // SGObjectStorage lists the sharded backup from storage, imports it and restores.
    let dr = Daemon::start();
    dr.apply(&storage(&d));
    let listed = dr.ok(&["backups", "ls", "--storage", "my-backup-storage"]);
    assert!(
        listed.contains("manual-backup") && listed.contains("my-sharded-cluster"),
        "{listed}"
    );
    dr.ok(&[
        "backups",
        "import",
        "--storage",
        "my-backup-storage",
        "manual-backup",
    ]);
    let imported = dr.json(&["get", "sgshardedbackup", "manual-backup"]);
    assert_eq!(imported["status"]["process"]["status"], "Completed");
    assert_eq!(
        imported["status"]["restorePoint"],
        backup["status"]["restorePoint"]
    );
    dr.apply(&restore("from-storage", 2, "15", ""));
    dr.wait_until("sgshardedcluster", "from-storage", 180, ready);
    let from_storage =
        ClusterObserved::load(&dr.state().join("clusters/default/from-storage")).unwrap();
    assert_same_content(
        &at_restore_point,
        &fingerprint::members(&from_storage)
            .await
            .expect("fingerprint"),
        "restore from storage alone",
    );
}

/// After a backup, no node config (they carry the storage's secrets) is left in the work
/// directory, and another local user reads no stored object and no state and cannot reach
/// the API.
fn nobody_reads_nothing(d: &Daemon, part: &std::path::Path) {
    let work = d.state().join("work");
    let left: Vec<_> = walk(&work).into_iter().filter(|p| p.is_file()).collect();
    assert!(left.is_empty(), "node configs outlived their job: {left:?}");
    let nobody = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    for file in [part.to_path_buf(), d.state().join("store.db")] {
        let out = nobody(&["cat", file.to_str().unwrap()]);
        assert!(!out.status.success(), "nobody read {}", file.display());
    }
    let bin = shardvault_testkit::shardvault_bin();
    let home = format!("SHARDVAULT_HOME={}", d.state().display());
    let out = nobody(&["env", &home, bin.to_str().unwrap(), "get", "sgobjs"]);
    let text = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && text.contains("permission denied"),
        "nobody reached the API: {text}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
