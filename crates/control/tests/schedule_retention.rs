//! The scheduler on kube-runtime against the in-process API server, with a manual clock and
//! no backup controller (so scheduled backups stay Pending): two entries with the same
//! schedule each get their own backup, and the next run of each is skipped while its
//! previous one waits.

#[path = "common/api.rs"]
mod api;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_api::shardedcluster::SGShardedCluster;
use shardvault_control::clock::ManualClock;
use shardvault_control::context::{Context, Settings};
use shardvault_control::{runner, schedule};
use shardvault_pg::runtime::LocalRuntime;
use shardvault_store::Selector;

fn cluster() -> Value {
    json!({
        "apiVersion": "stackgres.io/v1alpha1", "kind": "SGShardedCluster",
        "metadata": {"name": "twin", "namespace": "default"},
        "spec": {
            "type": "ddp", "database": "db", "postgres": {"version": "15"},
            "coordinator": {"instances": 1, "pods": {"persistentVolume": {"size": "1Gi"}}},
            "shards": {"clusters": 1, "instancesPerCluster": 1,
                       "pods": {"persistentVolume": {"size": "1Gi"}}},
            "configurations": {"backups": [
                {"sgObjectStorage": "a", "cronSchedule": "0 * * * *", "retention": 3},
                {"sgObjectStorage": "b", "cronSchedule": "0 * * * *", "timeout": "PT1H"},
            ]},
        },
    })
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_with_one_schedule_get_a_backup_each_and_skip_while_pending() {
    let api = api::start().await;
    let store = api.store.clone();
    let t0: Timestamp = "2030-01-01T00:00:10Z".parse().unwrap();
    let clock = ManualClock::new(t0);
    let runtime = LocalRuntime::open(api.dir.path(), "/nonexistent/shardvault".into()).unwrap();
    let ctx = Arc::new(Context::new(
        api.client.clone(),
        Arc::new(runtime),
        Arc::new(clock.clone()),
        api.shutdown.child_token(),
        Settings::default(),
    ));
    let run = tokio::spawn(runner::run(
        vec![schedule::controller(ctx.clone())],
        ctx.clone(),
    ));
    let cluster: SGShardedCluster = serde_json::from_value(cluster()).unwrap();
    Api::<SGShardedCluster>::namespaced(api.client.clone(), "default")
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    let annotation = || {
        store
            .get(Kind::SGShardedCluster, "default", "twin")
            .ok()
            .and_then(|c| {
                c.pointer("/metadata/annotations/shardvault.io~1backup-schedule")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    until("both entries scheduled", || {
        annotation().matches("2030-01-01T01:00:00Z").count() == 2
    })
    .await;
    let backups = || {
        let (items, _) = store
            .list(
                Kind::SGShardedBackup,
                Some("default"),
                &Selector::parse("").unwrap(),
            )
            .unwrap();
        items
    };
    assert!(backups().is_empty(), "a new schedule owes nothing");

    clock.advance(SignedDuration::from_hours(1));
    until("a backup per entry", || backups().len() == 2).await;
    let list = backups();
    let names: Vec<&str> = list
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["twin-2030-01-01-01-00-00", "twin-2030-01-01-01-00-00-1"]
    );
    for (i, b) in list.iter().enumerate() {
        assert_eq!(
            b["metadata"]["labels"]["shardvault.io/backup-entry"],
            i.to_string()
        );
        assert_eq!(
            b["metadata"]["annotations"]["shardvault.io/backup-entry"],
            i.to_string()
        );
        assert_eq!(b["spec"]["managedLifecycle"], true);
    }
    assert_eq!(list[1]["spec"]["timeout"], "PT1H", "the entry's timeout");

    clock.advance(SignedDuration::from_hours(1));
    let cluster = store
        .get(Kind::SGShardedCluster, "default", "twin")
        .unwrap();
    until("both runs skipped", || {
        store
            .events_for(&cluster)
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "ScheduleSkipped")
            .count()
            == 2
    })
    .await;
    assert_eq!(backups().len(), 2, "skipped runs create nothing");
    until("the next runs recorded", || {
        annotation().matches("2030-01-01T03:00:00Z").count() == 2
    })
    .await;
    ctx.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the scheduler stops within its grace")
        .unwrap();
}
