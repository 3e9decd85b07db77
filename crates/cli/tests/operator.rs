//! The controllers in their own process: `shardvault operator --kubeconfig FILE` against
//! `shardvault serve --controllers none` runs a sharded cluster the API server only
//! stores, removes it when it is deleted, and stops promptly on SIGTERM.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shardvault_testkit::daemon::{Daemon, ready};
use shardvault_testkit::manifests::DdpCluster;
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
