//! Progress of running work, on real servers through the daemon: a backup throttled by
//! `maxDiskBandwidth` shows its bytes moving in each member SGBackup's `status.progress` and
//! their sum in the SGShardedBackup's, `shardvault wait` prints plain progress lines when
//! piped, and a restore shows each member copying in `status.restore.members[].progress`;
//! finished work shows none.

use serde_json::Value;
use shardvault_testkit::daemon::{Daemon, phase, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

/// Bytes per second each member backup may read.
const RATE: u64 = 3_000_000;

/// `status.progress` of an object (None when it has none).
/// `kubectl get sgshardedbackup <name>` through the daemon's kubeconfig.
fn kubectl_get(d: &Daemon, name: &str) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(d.state().join("kubeconfig"))
        .env("HOME", d.state())
        .env_remove("KUBECONFIG")
        .args(["get", "sgshardedbackup", name])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn progress(o: &Value) -> Option<Value> {
    o.pointer("/status/progress").cloned()
}

fn bytes(p: &Value, field: &str) -> u64 {
    p[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {p}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_progress_move_in_status_and_wait_shows_them() {
    let d = Daemon::start();
    d.apply(&filesystem_storage("store", &d.state().join("objects")));
    d.apply(
        &DdpCluster::new("prog")
            .shards(1)
            .backups_to("store")
            .entry_line(&format!("performance: {{maxDiskBandwidth: {RATE}}}"))
            .yaml(),
    );
    d.wait_until("sgshardedcluster", "prog", 120, ready);

    d.apply(&sharded_backup("b1", "prog", &[]));
    let waiter = {
        let home = d.state().to_path_buf();
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_shardvault"))
                .args(["wait", "sgshardedbackup/b1", "--timeout", "180s"])
                .arg("--for=jsonpath={.status.process.status}=Completed")
                .env("SHARDVAULT_HOME", home)
                .output()
                .expect("wait runs")
        })
    };
    let (mut member, mut sharded) = (Vec::new(), Vec::new());
    let mut kubectl_row = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let done = loop {
        let b = d.json(&["get", "sgshardedbackup", "b1"]);
        if matches!(phase(&b), "Completed" | "Failed") {
            break b;
        }
        if kubectl_row.is_none() && progress(&b).is_some_and(|p| p["phase"] == "Copying") {
            kubectl_row = Some(kubectl_get(&d, "b1"));
        }
        sharded.extend(progress(&b));
        if let Some(p) = d
            .sv(&["get", "sgbackup", "b1-coord", "-o", "json"])
            .status
            .success()
            .then(|| progress(&d.json(&["get", "sgbackup", "b1-coord"])))
            .flatten()
        {
            member.push(p);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b1 did not finish: {b:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(phase(&done), "Completed", "{done:#}");
    assert_eq!(
        progress(&done),
        None,
        "finished work shows no progress: {done:#}"
    );
    let coord = d.json(&["get", "sgbackup", "b1-coord"]);
    assert_eq!(progress(&coord), None, "{coord:#}");

    // The coordinator's bytes moved while it copied, at about the rate it may read.
    let copying: Vec<&Value> = member.iter().filter(|p| p["phase"] == "Copying").collect();
    let done_bytes: Vec<u64> = copying.iter().map(|p| bytes(p, "bytesDone")).collect();
    assert!(
        done_bytes.windows(2).all(|w| w[0] <= w[1]),
        "bytes done never go back: {done_bytes:?}"
    );
    let mut distinct = done_bytes.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the coordinator's progress moved while it copied: {member:#?}"
    );
    let total = bytes(copying[0], "bytesTotal");
    assert!(
        total > 0 && done_bytes.iter().any(|b| *b < total),
        "a total, and samples short of it: {member:#?}"
    );
    let rates: Vec<u64> = copying.iter().map(|p| bytes(p, "bytesPerSecond")).collect();
    assert!(
        rates.iter().any(|r| *r > 0) && rates.iter().all(|r| *r <= RATE * 2),
        "the rate follows maxDiskBandwidth {RATE}: {rates:?}"
    );

    // The sharded backup sums both members: its total is more than one member's.
    let sum_totals: Vec<u64> = sharded
        .iter()
        .filter(|p| p["phase"] == "Copying")
        .map(|p| bytes(p, "bytesTotal"))
        .collect();
    assert!(
        sum_totals.iter().any(|t| *t > total),
        "the sum over two members exceeds the coordinator's {total}: {sharded:#?}"
    );

    // kubectl's printer columns show the step and the bytes done while it copies.
    let row = kubectl_row.expect("kubectl saw the backup copying");
    assert!(
        row.contains("STEP") && row.contains("DONE") && row.contains("Copying"),
        "{row}"
    );

    // Piped, `wait` says where the backup is in plain lines.
    let waited = waiter.join().expect("the wait thread");
    let (out, err) = (
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr),
    );
    assert!(waited.status.success(), "{out}{err}");
    assert!(out.contains("condition met"), "{out}");
    assert!(err.contains("b1: copying"), "a plain progress line: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "no terminal codes when piped: {err:?}"
    );

    // A restore shows each member copying, then nothing once it runs.
    d.apply(&DdpCluster::new("back").shards(1).restored_from("b1").yaml());
    let mut seen: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let back = loop {
        let c = d.json(&["get", "sgshardedcluster", "back"]);
        if ready(&c) {
            break c;
        }
        if let Some(ms) = c
            .pointer("/status/restore/members")
            .and_then(Value::as_array)
        {
            seen.extend(ms.iter().filter_map(|m| m.get("progress").cloned()));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "back did not come up: {c:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        seen.iter()
            .any(|p| p["phase"] == "Copying" && bytes(p, "bytesTotal") > 0),
        "a member was seen copying its backup: {seen:#?}"
    );
    for p in seen.iter().filter(|p| p["phase"] == "Replaying") {
        assert!(p["replayLsn"].is_string(), "replay says where it is: {p}");
        assert!(p["targetLsn"].is_string(), "and where it stops: {p}");
    }
    let members = back["status"]["restore"]["members"]
        .as_array()
        .expect("members");
    assert!(
        members.iter().all(|m| m.get("progress").is_none()),
        "a finished restore shows no progress: {back:#}"
    );
}
