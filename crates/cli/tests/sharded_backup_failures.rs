//! Sharded backups that go wrong: a member that cannot store its backup fails the whole
//! with the member named, `maxRetries` retries the whole, `timeout` bounds it by wall clock,
//! and a failed attempt leaves no backup behind that claims to be complete.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shardvault_testkit::daemon::{Daemon, phase};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

fn manifests(d: &Daemon) -> String {
    format!(
        "{}---\n{}",
        filesystem_storage("store", &d.state().join("objects")),
        DdpCluster::new("c").backups_to("store").yaml()
    )
}

fn backup(name: &str, extra: &[&str]) -> String {
    sharded_backup(name, "c", extra)
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
    d.apply(&backup("no-retry", &["maxRetries: 0"]));
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
    d.apply(&backup("with-retry", &["maxRetries: 2"]));
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
    d.apply(&backup("too-slow", &["timeout: 8", "maxRetries: 0"]));
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
    d.apply(&backup("crash", &["maxRetries: 1"]));
    d.wait_until("sgshardedbackup", "crash", 60, |o| phase(o) == "Running");
    let engines = |d: &Daemon| d.processes("node backup --config").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engines(&d) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the member backups never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.signal("KILL");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(engines(&d), 0, "node work must not outlive the daemon");
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

/// A restore into a new cluster `r` from sharded backup `from` of cluster `c`.
fn restore_of(from: &str) -> String {
    DdpCluster::new("r").restored_from(from).yaml()
}

fn restore_phase(o: &Value, member: usize) -> &str {
    o.pointer(&format!("/status/restore/members/{member}/phase"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[test]
fn a_restore_from_a_damaged_backup_fails_and_never_brings_up_an_empty_member() {
    let d = Daemon::start();
    d.apply(&manifests(&d));
    d.wait_until("sgshardedcluster", "c", 120, |o| {
        o.pointer("/status/conditions/0/status") == Some(&Value::from("True"))
    });
    d.apply(&backup("good", &[]));
    d.wait_until("sgshardedbackup", "good", 120, |o| phase(o) == "Completed");

    // One byte of shard0's first part flipped.
    let part = member_dir(&d, "c-shard0").join("basebackups/good-shard0/parts/000000");
    let mut bytes = std::fs::read(&part).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&part, &bytes).unwrap();

    d.apply(&restore_of("good"));
    let failed = d.wait_until("sgshardedcluster", "r", 180, |o| {
        restore_phase(o, 1) == "Failed"
    });
    assert_ne!(
        failed.pointer("/status/conditions/0/status"),
        Some(&Value::from("True")),
        "a cluster with a failed member is not Ready: {failed:#}"
    );
    let failure = failed
        .pointer("/status/restore/members/1/failure")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(failure.contains("good-shard0"), "{failure}");

    // It is retried, then given up; shard0 is never created empty meanwhile.
    let given_up = d.wait_until("sgshardedcluster", "r", 240, |o| {
        o.pointer("/status/conditions/0/reason") == Some(&Value::from("RestoreFailed"))
    });
    let message = given_up
        .pointer("/status/conditions/0/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(
        message.contains("r-shard0") && message.contains("verify sgshardedbackup good"),
        "{message}"
    );
    assert_eq!(restore_phase(&given_up, 1), "Failed");
    let events = d.ok(&["describe", "sgshardedcluster", "r"]);
    assert!(!events.contains("(initdb)"), "{events}");
    assert!(events.contains("RestoreFailed"), "{events}");
    let shard0 = d.state().join("clusters/default/r/r-shard0/r-shard0-0");
    assert!(
        !shard0.join("bootstrapped").exists() && !shard0.join("data/PG_VERSION").exists(),
        "no data directory stands in for the failed member"
    );
    let observed = d.observed("r");
    assert_ne!(
        observed.members[1].instances[0].state,
        shardvault_pg::runtime::cluster::InstanceState::Running
    );
}

/// Every file below `dir` (a filesystem storage keeps empty directories of deleted objects).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

fn phases(d: &Daemon, names: &[&str]) -> Vec<String> {
    let all = d.json(&["get", "sgshardedbackup"]);
    names
        .iter()
        .map(|n| {
            all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["metadata"]["name"] == *n)
                .map_or("", |o| phase(o))
                .to_string()
        })
        .collect()
}

#[test]
fn concurrent_backups_deletes_and_repeated_applies_stay_consistent() {
    let mut d = Daemon::start();
    d.apply(&manifests(&d));
    d.wait_until("sgshardedcluster", "c", 120, |o| {
        o.pointer("/status/conditions/0/status") == Some(&Value::from("True"))
    });

    // Three backups of one cluster applied at once: one runs at a time, all complete.
    let names = ["one", "two", "three"];
    let docs: Vec<String> = names.iter().map(|n| backup(n, &[])).collect();
    d.apply(&docs.join("---\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let now = phases(&d, &names);
        let running = now.iter().filter(|p| *p == "Running").count();
        assert!(
            running <= 1,
            "two backups of one cluster ran at once: {now:?}"
        );
        if now.iter().all(|p| p == "Completed" || p == "Failed") {
            assert!(now.iter().all(|p| p == "Completed"), "{now:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The same manifest applied 20 times at once is one backup, taken once.
    std::thread::scope(|s| {
        for _ in 0..20 {
            s.spawn(|| d.apply(&backup("burst", &[])));
        }
    });
    let done = d.wait_until("sgshardedbackup", "burst", 120, |o| phase(o) == "Completed");
    assert_eq!(done["status"]["attempts"], 1, "{done:#}");
    assert_eq!(
        d.ok(&[
            "get",
            "sgbackup",
            "-l",
            "stackgres.io/shardedbackup-name=burst",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        3
    );

    // Deleted while it runs: its work stops and its objects go.
    let shard1 = member_dir(&d, "c-shard1");
    set_mode(&shard1.join("wal"), 0o555); // holds the backup in its WAL wait
    d.apply(&backup("doomed", &[]));
    d.wait_until("sgshardedbackup", "doomed", 60, |o| phase(o) == "Running");
    d.ok(&["delete", "sgshardedbackup", "doomed", "--wait"]);
    set_mode(&shard1.join("wal"), 0o755);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.processes("node backup --config").len(), 0);
    for (member, suffix) in [
        ("c-coord", "coord"),
        ("c-shard0", "shard0"),
        ("c-shard1", "shard1"),
    ] {
        let left = files_under(
            &member_dir(&d, member)
                .join("basebackups")
                .join(format!("doomed-{suffix}")),
        );
        assert!(
            left.is_empty(),
            "{member}: the deleted backup left {left:?}"
        );
    }

    // The cluster deleted while a backup runs: the backup fails, nothing claims completion.
    set_mode(&shard1.join("wal"), 0o555);
    d.apply(&backup("orphaned", &["maxRetries: 0"]));
    d.wait_until("sgshardedbackup", "orphaned", 60, |o| phase(o) == "Running");
    d.ok(&["delete", "sgshardedcluster", "c", "--wait"]);
    set_mode(&shard1.join("wal"), 0o755);
    let ended = d.wait_until("sgshardedbackup", "orphaned", 120, |o| phase(o) == "Failed");
    assert!(
        ended["status"]["process"]["failure"]
            .as_str()
            .is_some_and(|f| !f.is_empty()),
        "{ended:#}"
    );
    assert_eq!(d.processes("node backup --config").len(), 0);
    assert!(!d.state().join("clusters/default/c").exists());
    // The completed backups are still there to restore from.
    d.ok(&["verify", "sgshardedbackup", "one"]);

    // SIGTERM while a reconcile is busy (a cluster being created) stops the daemon promptly.
    d.apply(&manifests(&d).replace("name: c\n", "name: c2\n"));
    d.wait_until("sgshardedcluster", "c2", 60, |o| !o.is_null());
    let started = std::time::Instant::now();
    d.signal("TERM");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "SIGTERM took {took:?}"
    );
}

/// A small tmpfs mounted for one test (root only), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs to fill a disk: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_storage_fails_the_backup_clearly_and_says_archiving_fails() {
    let disk = SmallDisk::mount("3m");
    let d = Daemon::start();
    let storage = disk.dir.path().join("objects");
    d.apply(&manifests(&d).replace(
        &d.state().join("objects").display().to_string(),
        &storage.display().to_string(),
    ));
    d.wait_until("sgshardedcluster", "c", 120, |o| {
        o.pointer("/status/conditions/0/status") == Some(&Value::from("True"))
    });
    d.apply(&backup("too-big", &["maxRetries: 0"]));
    let failed = d.wait_until("sgshardedbackup", "too-big", 120, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&failed), "Failed", "{failed:#}");
    let failure = failed["status"]["process"]["failure"]
        .as_str()
        .unwrap_or("");
    assert!(failure.contains("No space left on device"), "{failure}");

    // WAL keeps coming and cannot be stored: a condition and an Event say so, the cluster
    // keeps serving.
    let observed = d.observed("c");
    let coordinator = observed.primary_conninfo(0).unwrap();
    let psql = |sql: &str| {
        let out = std::process::Command::new(observed.pg_bin.join("psql"))
            .args([coordinator.as_str(), "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql("CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g");
    psql("SELECT pg_switch_wal()");
    let said = d.wait_until("sgshardedcluster", "c", 120, |o| {
        o.pointer("/status/conditions/1/status") == Some(&Value::from("False"))
    });
    let message = said["status"]["conditions"][1]["message"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains("c-coord") && message.contains("WAL archiving fails"),
        "{message}"
    );
    let events = d.ok(&["describe", "sgshardedcluster", "c"]);
    assert!(events.contains("ArchiveFailing"), "{events}");
    psql("INSERT INTO filler VALUES (0, 'still writable')");
}
