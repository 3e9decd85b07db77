//! Crashes in the middle of sharded work: a `node backup` process, a member's primary and the
//! daemon itself are killed with SIGKILL at points of a backup and of a restore; after each
//! the daemon converges to a backup that is Completed, verifies and restores by content.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shardvault_pg::fingerprint;
use shardvault_testkit::cluster::{assert_same_content, sql};
use shardvault_testkit::daemon::{Daemon, phase, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

fn manifests(d: &Daemon) -> String {
    format!(
        "{}---\n{}",
        filesystem_storage("store", &d.state().join("objects")),
        DdpCluster::new("c").backups_to("store").yaml()
    )
}

fn backup(name: &str) -> String {
    sharded_backup(name, "c", &["maxRetries: 3"])
}

fn restore(name: &str, from: &str) -> String {
    DdpCluster::new(name).restored_from(from).yaml()
}

fn wal_dir(d: &Daemon, member: &str) -> PathBuf {
    d.state()
        .join("objects/shardvault/default/c")
        .join(member)
        .join("wal")
}

/// Holds a backup in its wait for WAL: the server user cannot add to the member's archive.
fn hold_wal(dir: &Path, held: bool) {
    shardvault_pg::user::create_dir_all_for_server(dir).unwrap();
    let mode = if held { 0o555 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn wait_for_processes(d: &Daemon, words: &str) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = d.processes(words);
        if !found.is_empty() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {words:?} process started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engines_primaries_and_daemons_never_leave_a_false_completed() {
    let mut d = Daemon::start();
    d.apply(&manifests(&d));
    d.wait_until("sgshardedcluster", "c", 120, ready);
    let source = d.observed("c");
    for i in 0..source.members.len() {
        sql(
            &source.primary_conninfo(i).unwrap(),
            &format!("CREATE TABLE t AS SELECT g AS id, md5(g::text || '{i}') AS v FROM generate_series(1, 2000) g"),
        )
        .await;
    }
    let content = fingerprint::members(&source).await.expect("fingerprint");
    let shard1_wal = wal_dir(&d, "c-shard1");

    // 1. A member's `node backup` is killed while it waits for its WAL: the attempt fails,
    //    the retry completes.
    hold_wal(&shard1_wal, true);
    d.apply(&backup("engine-killed"));
    for pid in wait_for_processes(&d, "node backup --config") {
        kill9(pid);
    }
    hold_wal(&shard1_wal, false);
    let done = d.wait_until("sgshardedbackup", "engine-killed", 180, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&done), "Completed", "{done:#}");
    assert!(done["status"]["attempts"].as_i64() >= Some(2), "{done:#}");
    d.ok(&["verify", "sgshardedbackup", "engine-killed"]);

    // 2. A member's primary is killed in the middle of a backup: the runtime restarts it and
    //    the backup completes on a retry.
    hold_wal(&shard1_wal, true);
    d.apply(&backup("primary-killed"));
    wait_for_processes(&d, "node backup --config");
    let pidfile = source.members[1].instances[0].pgdata.join("postmaster.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kill9(pid);
    hold_wal(&shard1_wal, false);
    let done = d.wait_until("sgshardedbackup", "primary-killed", 240, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&done), "Completed", "{done:#}");
    d.ok(&["verify", "sgshardedbackup", "primary-killed"]);
    d.wait_until("sgshardedcluster", "c", 120, ready);

    // 3. The daemon is killed during a restore: the restarted daemon redoes it, and the
    //    restored cluster holds what the source held.
    d.apply(&restore("r", "engine-killed"));
    wait_for_processes(&d, "node restore --config");
    d.signal("KILL");
    d.restart();
    d.wait_until("sgshardedcluster", "r", 240, ready);
    let restored = fingerprint::members(&d.observed("r"))
        .await
        .expect("fingerprint");
    assert_same_content(&content, &restored, "restore after a daemon crash");

    // The backup taken across a primary crash restores by content too.
    d.apply(&restore("r2", "primary-killed"));
    d.wait_until("sgshardedcluster", "r2", 240, ready);
    let restored = fingerprint::members(&d.observed("r2"))
        .await
        .expect("fingerprint");
    assert_same_content(
        &content,
        &restored,
        "restore of a backup across a primary crash",
    );
}
