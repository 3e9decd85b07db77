//! A sharding wiring that fails says why, in the server's words: in the cluster's status, in
//! one Warning Event and once in the daemon log (never a bare `db error`).

use serde_json::Value;
use shardvault_testkit::cluster::sql;
use shardvault_testkit::daemon::Daemon;
use shardvault_testkit::manifests::DdpCluster;

const SERVER_SAYS: &str = "cannot change return type of existing function";

fn condition(obj: &Value) -> (String, String) {
    let c = &obj["status"]["conditions"][0];
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wiring_reports_the_servers_message_in_status_an_event_and_the_log() {
    let d = Daemon::start();
    d.apply(&DdpCluster::new("wired").shards(1).yaml());
    d.wait_until("sgshardedcluster", "wired", 120, |o| {
        condition(o).0 == "True"
    });
    let coord = d.observed("wired").primary_conninfo(0).unwrap();
    // A function of the wiring's name that it cannot replace.
    sql(
        &coord,
        "DROP FUNCTION ddp_create_distributed_table(text, text, text);
         CREATE FUNCTION public.ddp_create_distributed_table(a text, b text, c text)
         RETURNS text LANGUAGE sql AS 'SELECT a'",
    )
    .await;
    let obj = d.wait_until("sgshardedcluster", "wired", 60, |o| {
        condition(o).1.contains(SERVER_SAYS)
    });
    let (status, message) = condition(&obj);
    assert_eq!(status, "False", "{message}");
    assert!(
        message.contains("sharding wiring")
            && message.contains("creating ddp_create_distributed_table"),
        "{message}"
    );
    // Two more reconciles (every 5 s) must not repeat the event or the log line.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let events = d.json(&["get", "events"]);
    let warnings: Vec<&Value> = events["items"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["reason"] == "WiringFailed")
        .collect();
    assert_eq!(warnings.len(), 1, "{events:#}");
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(SERVER_SAYS)),
        "{:#}",
        warnings[0]
    );
    assert!(
        warnings[0]["count"].as_i64().unwrap_or(1) == 1,
        "{:#}",
        warnings[0]
    );
    let log = d.log();
    assert_eq!(
        log.lines().filter(|l| l.contains(SERVER_SAYS)).count(),
        1,
        "{log}"
    );
    d.ok(&["delete", "sgshardedcluster", "wired", "--wait"]);
}
