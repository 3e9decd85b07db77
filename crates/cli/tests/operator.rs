//! The controllers in their own process: `shardvault operator --kubeconfig FILE` against
//! `shardvault serve --controllers none` runs a sharded cluster the API server only
//! stores, removes it when it is deleted, and stops promptly on SIGTERM; and the whole
//! sharded backup and restore journey driven only by the real kubectl.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shardvault_pg::fingerprint;
use shardvault_testkit::cluster::{assert_same_content, sql};
use shardvault_testkit::daemon::{Daemon, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};
use shardvault_testkit::shardvault_bin;

/// A `shardvault operator` process; killed on drop.
struct Operator(Option<Child>);

impl Operator {
    fn start(d: &Daemon) -> Operator {
        let log = std::fs::File::create(d.state().join("test-operator.log")).unwrap();
        let child = Command::new(shardvault_bin())
            .arg("operator")
            .arg("--kubeconfig")
            .arg(d.state().join("kubeconfig"))
            .arg("--state-dir")
            .arg(d.state())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("shardvault operator starts");
        Operator(Some(child))
    }

    fn stop(&mut self) -> Duration {
        let mut child = self.0.take().expect("running");
        let started = Instant::now();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "the operator exits cleanly: {status}");
        started.elapsed()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn an_operator_process_runs_the_clusters_of_an_api_server_without_controllers() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    d.apply(&DdpCluster::new("op").shards(1).yaml());
    std::thread::sleep(Duration::from_secs(2));
    let stored = d.json(&["get", "sgshardedcluster", "op"]);
    assert!(
        stored.get("status").is_none_or(|s| s.is_null()),
        "without controllers nothing acts: {stored:#}"
    );
    assert!(!d.state().join("clusters/default/op").exists());

    let mut op = Operator::start(&d);
    let running = d.wait_until("sgshardedcluster", "op", 120, ready);
    assert_eq!(
        running["status"]["members"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        running["metadata"]["finalizers"][0], "shardvault.io/cluster-servers",
        "{running:#}"
    );
    let events = d.ok(&["describe", "sgshardedcluster", "op"]);
    assert!(events.contains("Reconciled"), "{events}");

    d.ok(&["delete", "sgshardedcluster", "op", "--wait"]);
    assert!(
        !d.state().join("clusters/default/op").exists(),
        "the operator removed the servers before the finalizer went"
    );
    let took = op.stop();
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
}

/// Runs the real kubectl against the daemon's kubeconfig (its caches in the test's
/// directory), `input` on its stdin; asserts it succeeded and returns stdout.
fn kubectl(d: &Daemon, args: &[&str], input: &str) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(d.state().join("kubeconfig"))
        .env("HOME", d.state())
        .env_remove("KUBECONFIG")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs (bash scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {stdout}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    stdout
}

/// Waits with `kubectl wait` until `jsonpath` of `what` (kind/name) is `value`.
fn kubectl_wait(d: &Daemon, what: &str, jsonpath: &str, value: &str) {
    kubectl(
        d,
        &[
            "wait",
            what,
            &format!("--for=jsonpath={jsonpath}={value}"),
            "--timeout=180s",
        ],
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_a_sharded_backup_and_restore_run_by_a_separate_operator() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    let _op = Operator::start(&d);
    let objects = d.state().join("objects");
    let manifests = format!(
        "{}---\n{}",
        filesystem_storage("store", &objects),
        DdpCluster::new("src").shards(1).backups_to("store").yaml()
    );
    let applied = kubectl(&d, &["apply", "-f", "-"], &manifests);
    assert!(
        applied.contains("sgobjectstorage.stackgres.io/store created")
            && applied.contains("sgshardedcluster.stackgres.io/src created"),
        "{applied}"
    );
    kubectl_wait(
        &d,
        "sgshardedcluster/src",
        "{.status.conditions[0].status}",
        "True",
    );
    let source = d.observed("src");
    let coord = source.primary_conninfo(0).expect("a coordinator primary");
    sql(
        &coord,
        "SELECT ddp_create_distributed_table('t', 'id bigint primary key, v text', 'id');
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 500) i;",
    )
    .await;
    let want = fingerprint::members(&source).await.expect("fingerprint");

    kubectl(&d, &["apply", "-f", "-"], &sharded_backup("b1", "src", &[]));
    kubectl_wait(
        &d,
        "sgshardedbackup/b1",
        "{.status.process.status}",
        "Completed",
    );
    // Written after the backup's restore point: not in the restore.
    sql(&coord, "INSERT INTO t VALUES (9999, 'after');").await;
    let listed = kubectl(&d, &["get", "sgbackup", "-o", "name"], "");
    assert_eq!(
        listed.lines().count(),
        2,
        "one SGBackup per member: {listed}"
    );

    let restored = DdpCluster::new("dst").shards(1).restored_from("b1").yaml();
    kubectl(&d, &["apply", "-f", "-"], &restored);
    kubectl_wait(
        &d,
        "sgshardedcluster/dst",
        "{.status.conditions[0].status}",
        "True",
    );
    let got = fingerprint::members(&d.observed("dst"))
        .await
        .expect("fingerprint");
    assert_same_content(&want, &got, "the cluster restored by the operator");
}
