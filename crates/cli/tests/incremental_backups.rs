//! Incremental sharded backups through the daemon, on real servers: a `backups[]` entry with
//! an incremental policy takes a full backup first and then incrementals over it, status says
//! the type, the parent and both sizes, retention keeps the parent a kept incremental needs
//! (and the plan says so), an incremental restores into a new cluster with the same content,
//! a parent deleted by hand is held while the incremental needs it, the storage catalog lists
//! it with its parent for a new installation to import, and the
//! `shardvault.io/backup-type: full` annotation starts a new chain, after which retention
//! lets the old chain go (and the held parent with it).

use serde_json::Value;
use shardvault_pg::fingerprint;
use shardvault_testkit::cluster::{assert_same_content, sql};
use shardvault_testkit::daemon::{Daemon, phase, ready};
use shardvault_testkit::manifests::{
    DdpCluster, filesystem_storage, sharded_backup, with_annotation,
};

/// Applies managed sharded backup `name` (with `annotation` when given) and waits until it
/// completes.
fn backup(d: &Daemon, name: &str, annotation: Option<&str>) -> Value {
    let doc = sharded_backup(name, "inc", &["managedLifecycle: true"]);
    let doc = match annotation {
        Some(t) => with_annotation(&doc, "shardvault.io/backup-type", t),
        None => doc,
    };
    d.apply(&doc);
    let b = d.wait_until("sgshardedbackup", name, 120, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&b), "Completed", "{b:#}");
    b
}

fn info(b: &Value) -> &Value {
    &b["status"]["backupInformation"]
}

fn exists(d: &Daemon, name: &str) -> bool {
    d.sv(&["get", "sgshardedbackup", name]).status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incrementals_follow_the_entry_policy_restore_and_hold_their_parent() {
    let d = Daemon::start();
    d.apply(&filesystem_storage("store", &d.state().join("objects")));
    d.apply(
        &DdpCluster::new("inc")
            .backups_to("store")
            .entry_line("retention: 1")
            .entry_line("incremental: {fullEvery: 4}")
            .yaml(),
    );
    d.wait_until("sgshardedcluster", "inc", 120, ready);
    let source = d.observed("inc");
    let coord = source.primary_conninfo(0).unwrap();
    sql(
        &coord,
        "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, balance bigint not null', 'id');
         INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 20000) i;",
    )
    .await;

    // The first backup of the entry has no parent: full, whatever the policy.
    let b1 = backup(&d, "b1", None);
    assert_eq!(info(&b1)["backupType"], "full", "{b1:#}");
    assert!(info(&b1).get("parent").is_none(), "{b1:#}");

    sql(
        &coord,
        "UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 0;",
    )
    .await;
    let b2 = backup(&d, "b2", None);
    let at_b2 = fingerprint::members(&source).await.expect("fingerprint");
    assert_eq!(
        (&info(&b2)["backupType"], &info(&b2)["parent"]),
        (&Value::from("incremental"), &Value::from("b1")),
        "{b2:#}"
    );
    let (stored, reads) = (
        info(&b2)["size"]["compressed"].as_u64().unwrap(),
        info(&b2)["size"]["restore"].as_u64().unwrap(),
    );
    let full = info(&b1)["size"]["compressed"].as_u64().unwrap();
    assert!(
        stored < full && reads > stored,
        "an incremental stores less than its full backup ({stored} < {full}) and a restore reads more than it stored ({reads})"
    );
    let coord_b2 = d.json(&["get", "sgbackup", "b2-coord"]);
    assert_eq!(
        (&info(&coord_b2)["backupType"], &info(&coord_b2)["parent"]),
        (&Value::from("incremental"), &Value::from("b1-coord")),
        "{coord_b2:#}"
    );
    let table = d.ok(&["get", "sgshardedbackup", "-o", "wide"]);
    assert!(
        table.contains("TYPE") && table.contains("incremental"),
        "{table}"
    );

    // Retention 1 keeps b2, and b1 with it.
    let plan = d.ok(&["retention", "plan", "inc"]);
    assert!(
        plan.contains("keep SGShardedBackup b1 (kept: parent of b2)"),
        "{plan}"
    );
    assert!(!plan.contains("delete SGShardedBackup"), "{plan}");

    // The incremental restores (the engine reads b1's parts for what b2 did not store).
    let verified = d.ok(&["verify", "sgshardedbackup", "b2"]);
    assert!(verified.contains("verified"), "{verified}");
    d.apply(&DdpCluster::new("from-incr").restored_from("b2").yaml());
    d.wait_until("sgshardedcluster", "from-incr", 180, ready);
    let restored = fingerprint::members(&d.observed("from-incr"))
        .await
        .expect("fingerprint");
    assert_same_content(&at_b2, &restored, "restore of incremental b2");
    d.ok(&["delete", "sgshardedcluster", "from-incr", "--wait"]);
    assert!(
        exists(&d, "b1"),
        "retention must not delete the parent of b2"
    );

    // Deleted by hand while b2 needs it, b1 stays (Terminating, its objects kept), says why,
    // and b2 still verifies; it goes once b2 goes (below).
    d.ok(&["delete", "sgshardedbackup", "b1"]);
    d.wait_until("sgshardedbackup", "b1", 30, |o| {
        o["metadata"]["deletionTimestamp"].is_string()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let described = loop {
        let text = d.ok(&["describe", "sgshardedbackup", "b1"]);
        if text.contains("DeletionHeld") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        described.contains("DeletionHeld") && described.contains("SGShardedBackup b2"),
        "{described}"
    );
    assert!(exists(&d, "b1"), "b1 is held while b2 needs it");
    let verified = d.ok(&["verify", "sgshardedbackup", "b2"]);
    assert!(verified.contains("verified"), "{verified}");

    // The storage catalog lists the chain, and an import says what it is.
    let dr = Daemon::start();
    dr.apply(&filesystem_storage("store", &d.state().join("objects")));
    let listed = dr.ok(&["backups", "ls", "--storage", "store"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("b2 "))
        .unwrap_or_default();
    assert!(
        row.contains("incremental") && row.contains(" b1 "),
        "{listed}"
    );
    dr.ok(&["backups", "import", "--storage", "store", "b2"]);
    let imported = dr.wait_until("sgshardedbackup", "b2", 30, |o| phase(o) == "Completed");
    assert_eq!(
        (&info(&imported)["backupType"], &info(&imported)["parent"]),
        (&Value::from("incremental"), &Value::from("b1")),
        "{imported:#}"
    );
    drop(dr);

    // Asked for full, the backup starts a new chain; then nothing needs b1 or b2.
    let b3 = backup(&d, "b3", Some("full"));
    assert_eq!(info(&b3)["backupType"], "full", "{b3:#}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while exists(&d, "b1") || exists(&d, "b2") {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not delete the old chain: {}",
            d.ok(&["retention", "plan", "inc"])
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
