//! Sharded backups that go wrong: a member that cannot store its backup fails the whole
//! with the member named, `maxRetries` retries the whole, `timeout` bounds it by wall clock,
//! and a failed attempt leaves no backup behind that claims to be complete.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shardvault_testkit::daemon::Daemon;

fn manifests(d: &Daemon) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: store
spec:
  type: filesystem
  filesystem:
    path: {}
---
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: c
spec:
  type: ddp
  database: app
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: 2
    instancesPerCluster: 1
  configurations:
    backups:
      - sgObjectStorage: store
",
        d.state().join("objects").display()
    )
}

fn backup(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: {name}
spec:
  sgShardedCluster: c
{extra}"
    )
}

fn phase(o: &Value) -> &str {
    o.pointer("/status/process/status")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Sets the mode of a directory the server user writes to.
fn set_mode(dir: &Path, mode: u32) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn member_dir(d: &Daemon, member: &str) -> PathBuf {
    d.state().join("objects/shardvault/default/c").join(member)
}

fn has_manifest(d: &Daemon, member: &str, backup: &str) -> bool {
    member_dir(d, member)
        .join("basebackups")
        .join(backup)
        .join("manifest.json")
        .exists()
}

#[test]
fn a_failing_member_fails_the_backup_by_name_then_retries_and_timeouts_behave() {
    let mut d = Daemon::start();
    d.apply(&manifests(&d));
    d.wait_until("sgshardedcluster", "c", 120, |o| {
        o.pointer("/status/conditions/0/status") == Some(&Value::from("True"))
    });
    let shard1 = member_dir(&d, "c-shard1");
    shardvault_pg::user::create_dir_all_for_server(&shard1.join("basebackups")).unwrap();

    // shard1 cannot write its backup: with no retries the whole fails, naming the member.
    set_mode(&shard1.join("basebackups"), 0);
    d.apply(&backup("no-retry", "  maxRetries: 0\n"));
    let failed = d.wait_until("sgshardedbackup", "no-retry", 60, |o| phase(o) == "Failed");
    let failure = failed["status"]["process"]["failure"]
        .as_str()
        .unwrap_or("");
    assert!(
        failure.contains("c-shard1"),
        "the failure names the member: {failure}"
    );
    assert!(
        !has_manifest(&d, "c-coord", "no-retry-coord"),
        "a failed attempt keeps no backup"
    );

    // With retries, the attempt after the member is fixed completes.
    d.apply(&backup("with-retry", "  maxRetries: 2\n"));
    d.wait_until("sgshardedbackup", "with-retry", 60, |o| {
        o.pointer("/status/attempts").and_then(Value::as_i64) >= Some(2)
    });
    set_mode(&shard1.join("basebackups"), 0o755);
    let done = d.wait_until("sgshardedbackup", "with-retry", 120, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&done), "Completed", "{done:#}");
    let events = d.ok(&["describe", "sgshardedbackup", "with-retry"]);
    assert!(
        events.contains("BackupFailed") && events.contains("c-shard1"),
        "{events}"
    );
    for m in ["coord", "shard0", "shard1"] {
        let member = if m == "coord" {
            "c-coord".to_string()
        } else {
            format!("c-{m}")
        };
        assert!(
            has_manifest(&d, &member, &format!("with-retry-{m}")),
            "{member} has its backup"
        );
    }

    // WAL that never reaches the archive (readable, but the server user cannot add to it):
    // the backup waits for it until `timeout` ends it.
    set_mode(&shard1.join("wal"), 0o555);
    d.apply(&backup("too-slow", "  timeout: 8\n  maxRetries: 0\n"));
    let timed_out = d.wait_until("sgshardedbackup", "too-slow", 90, |o| phase(o) == "Failed");
    set_mode(&shard1.join("wal"), 0o755);
    let failure = timed_out["status"]["process"]["failure"]
        .as_str()
        .unwrap_or("");
    assert!(failure.contains("timed out after 8 s"), "{failure}");
    for (member, suffix) in [
        ("c-coord", "coord"),
        ("c-shard0", "shard0"),
        ("c-shard1", "shard1"),
    ] {
        assert!(
            !has_manifest(&d, member, &format!("too-slow-{suffix}")),
            "{member}: timed-out backup removed"
        );
    }

    // kill -9 of the daemon in the middle of a backup: its engine processes die with it, the
    // backup never claims completion, and the restarted daemon retries it to the end.
    set_mode(&shard1.join("wal"), 0o555);
    d.apply(&backup("crash", "  maxRetries: 1\n"));
    d.wait_until("sgshardedbackup", "crash", 60, |o| phase(o) == "Running");
    let engines = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "node backup --config"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engines() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the member backups never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.signal("KILL");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(engines(), 0, "node work must not outlive the daemon");
    set_mode(&shard1.join("wal"), 0o755);
    d.restart();
    let done = d.wait_until("sgshardedbackup", "crash", 120, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&done), "Completed", "{done:#}");
    for (member, suffix) in [
        ("c-coord", "coord"),
        ("c-shard0", "shard0"),
        ("c-shard1", "shard1"),
    ] {
        assert!(
            has_manifest(&d, member, &format!("crash-{suffix}")),
            "{member}: the retried backup is complete"
        );
    }
    d.ok(&["verify", "sgshardedbackup", "crash"]);
}
