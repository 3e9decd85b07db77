//! Volume snapshots on a loop-mounted btrfs image, as root: data directories are subvolumes,
//! a snapshot backup of a running member restores by cloning (to its end and to a restore
//! point after it), the source is untouched, and deleting a snapshot removes its subvolume.

use std::time::Duration;

use shardvault_pg::engine::manifest::SnapshotRef;
use shardvault_pg::engine::snapshot::SnapshotBackup;
use shardvault_pg::runtime::cluster::{Bootstrap, MemberPlan, RecoveryTarget, Sharding};
use shardvault_pg::runtime::snapshot::is_subvolume;
use shardvault_pg::runtime::{ClusterId, ClusterRuntime, DesiredCluster, LocalRuntime};
use shardvault_testkit::btrfs::LoopBtrfs;
use shardvault_testkit::cluster::{connect, member_storage};
use shardvault_testkit::{TempStateDir, shardvault_bin};

fn desired(
    state: &std::path::Path,
    name: &str,
    bootstrap: impl Fn(&str) -> Bootstrap,
) -> DesiredCluster {
    let members = [format!("{name}-coord"), format!("{name}-shard0")]
        .into_iter()
        .map(|m| MemberPlan {
            destinations: vec![member_storage(state, &m)],
            bootstrap: bootstrap(&m),
            name: m,
            instances: 1,
        })
        .collect();
    DesiredCluster {
        id: ClusterId::new("default", name),
        postgres_version: "15".into(),
        database: "app".into(),
        sharding: Sharding::Ddp,
        members,
    }
}

fn runtime(state: &std::path::Path) -> LocalRuntime {
    LocalRuntime::open(state, shardvault_bin())
        .unwrap()
        .with_extra_settings(vec![("fsync".into(), "off".into())])
}

#[test]
fn classes_and_filesystems_that_cannot_snapshot_are_refused_with_what_to_do() {
    let plain = TempStateDir::new();
    std::fs::create_dir_all(plain.path().join("clusters")).unwrap();
    let rt = runtime(plain.path());
    let err = rt
        .check_volume_snapshots(Some("csi-snapclass"))
        .unwrap_err();
    assert!(err.to_string().contains("\"csi-snapclass\""), "{err}");
    assert!(err.to_string().contains("btrfs"), "{err}");
    if shardvault_pg::runtime::snapshot::can_snapshot(plain.path()) {
        return; // the temporary directory itself is on btrfs
    }
    let err = rt.check_volume_snapshots(None).unwrap_err();
    assert!(err.to_string().contains("is not on btrfs"), "{err}");
    assert!(
        err.to_string().contains("useVolumeSnapshot: false"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_backup_restores_by_cloning_and_its_deletion_removes_the_subvolume() {
    let fs = LoopBtrfs::new().expect("a loop-mounted btrfs image");
    let state = fs.state_dir();
    std::fs::create_dir_all(state.path().join("clusters")).unwrap();
    // The storage belongs to the server user, which archives there (as in a daemon, where
    // archiving starts long before a backup writes there).
    shardvault_pg::user::create_dir_all_for_server(&state.path().join("storage")).unwrap();
    let rt = runtime(state.path());
    rt.check_volume_snapshots(Some("btrfs")).unwrap();
    let src = desired(state.path(), "src", |_| Bootstrap::Initdb);
    let observed = rt.reconcile(src.clone()).await.unwrap();
    assert!(observed.ready(), "{observed:#?}");
    let coord = &observed.members[0];
    assert!(
        is_subvolume(&coord.instances[0].pgdata),
        "the member's data directory is a subvolume"
    );
    let conninfo = observed.primary_conninfo(0).unwrap();
    let c = connect(&conninfo).await;
    c.batch_execute(
        "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();

    // The snapshot backup of the coordinator, then more rows and a restore point.
    let endpoints = rt.endpoints(&src.id).unwrap();
    let cfg = &endpoints.members[0].node_config;
    let dest = &cfg.destinations[0];
    let started = SnapshotBackup::begin(cfg, dest, "b1-coord", true)
        .await
        .unwrap();
    let taken = rt
        .snapshot_member(&src.id, "src-coord", None, "b1-coord")
        .unwrap();
    c.batch_execute("INSERT INTO t SELECT generate_series(101, 150)")
        .await
        .unwrap();
    let stopped = started.stop().await.unwrap();
    // One statement per call: a multi-statement string is one transaction.
    for sql in [
        "INSERT INTO t SELECT generate_series(151, 170)",
        "SELECT pg_create_restore_point('rp1')",
        "INSERT INTO t VALUES (999)",
        "SELECT pg_switch_wal()",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    let manifest = stopped
        .store(
            SnapshotRef {
                class: taken.class.clone(),
                name: taken.name.clone(),
                location: taken.location.clone(),
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(manifest.files.len(), 0, "no data in storage");
    assert!(taken.location.contains("same disk"), "{}", taken.location);

    // A plain restore refuses it (its data is not in storage).
    let plain = shardvault_pg::engine::restore(
        dest,
        &shardvault_pg::engine::RestoreOptions {
            backup: "b1-coord".into(),
            pgdata: state.path().join("nowhere"),
            target: shardvault_pg::engine::RecoveryTarget::Latest,
            concurrency: 1,
            restore_command: String::new(),
            tablespace_dir: None,
            progress: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        plain.to_string().contains("is a volume snapshot"),
        "{plain}"
    );

    // Clones of it: one to the restore point, one to the end of the backup.
    for (name, target, want) in [
        ("atrp", RecoveryTarget::Name("rp1".into()), 170_i64),
        ("atend", RecoveryTarget::Immediate, 150),
    ] {
        let restored = desired(state.path(), name, |m| {
            if m.ends_with("-coord") {
                Bootstrap::CloneSnapshot {
                    source: dest.clone(),
                    backup: "b1-coord".into(),
                    snapshot: "b1-coord".into(),
                    target: target.clone(),
                }
            } else {
                Bootstrap::Initdb
            }
        });
        let seen = rt.reconcile(restored).await.unwrap();
        assert!(seen.ready(), "{seen:#?}");
        let r = connect(&seen.primary_conninfo(0).unwrap()).await;
        let n: i64 = r
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, want, "{name}: rows at {target:?}");
        assert!(is_subvolume(&seen.members[0].instances[0].pgdata));
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 171, "the source is untouched");

    let snapshots = state.path().join("snapshots/default");
    assert!(is_subvolume(&snapshots.join("b1-coord")));
    assert!(rt.delete_snapshot("default", "b1-coord").unwrap());
    assert!(
        !snapshots.join("b1-coord").exists(),
        "the subvolume is gone"
    );
    assert!(!rt.delete_snapshot("default", "b1-coord").unwrap());
    for id in ["src", "atrp", "atend"] {
        rt.destroy(&ClusterId::new("default", id)).await.unwrap();
    }
}
