//! Behaviour of the embedded store: versions, conflicts, apply, cascades, finalizers, watch.

use serde_json::{Value, json};
use shardvault_api::Kind;
use shardvault_store::{
    ApplyOutcome, ChangeType, Deletion, EventType, LAST_APPLIED, Selector, Store, StoreError,
};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.db")).unwrap();
    (dir, store)
}

fn storage(name: &str) -> Value {
    json!({"apiVersion": "stackgres.io/v1beta1", "kind": "SGObjectStorage",
           "metadata": {"name": name, "labels": {"tier": "fast"}},
           "spec": {"type": "filesystem", "filesystem": {"path": "/tmp/x"}}})
}

fn cluster() -> Value {
    json!({"apiVersion": "stackgres.io/v1alpha1", "kind": "SGShardedCluster",
           "metadata": {"name": "my-sharded-cluster"},
           "spec": {"type": "citus", "database": "sharded", "postgres": {"version": "15"},
                    "coordinator": {"instances": 1}, "shards": {"clusters": 2, "instancesPerCluster": 1}}})
}

fn sharded_backup(name: &str) -> Value {
    json!({"apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup", "metadata": {"name": name},
           "spec": {"sgShardedCluster": "my-sharded-cluster"}})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn create_sets_server_fields_and_versions_increase() {
    let (_d, s) = open();
    let a = s.create(&storage("a")).unwrap();
    let b = s.create(&storage("b")).unwrap();
    assert!(rv(&b) > rv(&a));
    assert_eq!(a["metadata"]["namespace"], "default");
    assert_eq!(a["metadata"]["generation"], 1);
    assert_eq!(a["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        a["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(matches!(
        s.create(&storage("a")),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.get(Kind::SGObjectStorage, "default", "a").unwrap(), a);
    assert!(
        s.get(Kind::SGObjectStorage, "other", "a")
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn invalid_objects_store_nothing() {
    let (_d, s) = open();
    let mut bad = storage("a");
    bad["spec"]["type"] = json!("floppy");
    let err = s.create(&bad).unwrap_err();
    assert!(err.to_string().contains("spec.type"), "{err}");
    assert_eq!(s.version(), 0);
}

#[test]
fn stale_resource_version_is_a_conflict() {
    let (_d, s) = open();
    let v1 = s.create(&storage("a")).unwrap();
    let mut first = v1.clone();
    first["spec"]["filesystem"]["path"] = json!("/tmp/one");
    let v2 = s.update(&first).unwrap();
    assert_eq!(v2["metadata"]["generation"], 2);
    let mut second = v1.clone();
    second["spec"]["filesystem"]["path"] = json!("/tmp/two");
    assert!(matches!(
        s.update(&second),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get(Kind::SGObjectStorage, "default", "a").unwrap(), v2);
}

#[test]
fn status_only_through_update_status() {
    let (_d, s) = open();
    let mut doc = sharded_backup("b");
    doc["status"] = json!({"process": {"status": "Completed"}});
    let created = s.create(&doc).unwrap();
    assert!(created.get("status").is_none());
    let mut st = created.clone();
    st["status"] = json!({"process": {"status": "Running"}});
    let after = s.update_status(&st).unwrap();
    assert_eq!(after["status"]["process"]["status"], "Running");
    assert_eq!(after["metadata"]["generation"], 1);
    let (applied, outcome) = s.apply(&doc).unwrap();
    assert_eq!(
        outcome,
        ApplyOutcome::Configured,
        "first apply records last-applied"
    );
    assert_eq!(applied["status"]["process"]["status"], "Running");
    assert_eq!(s.apply(&doc).unwrap().1, ApplyOutcome::Unchanged);
}

#[test]
fn secrets_fold_string_data_into_base64() {
    let (_d, s) = open();
    let doc = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                     "data": {"a": "aGVsbG8="}, "stringData": {"b": "world"}});
    let got = s.create(&doc).unwrap();
    assert_eq!(got["data"], json!({"a": "aGVsbG8=", "b": "d29ybGQ="}));
    assert!(got.get("stringData").is_none());
}

#[test]
fn apply_three_way_merges() {
    let (_d, s) = open();
    let (c, o) = s.apply(&cluster()).unwrap();
    assert_eq!(o, ApplyOutcome::Created);
    assert!(c["metadata"]["annotations"][LAST_APPLIED].is_string());
    assert_eq!(s.apply(&cluster()).unwrap().1, ApplyOutcome::Unchanged);
    // The spec's fragment adds backups and drops nothing.
    let fragment = json!({"apiVersion": "stackgres.io/v1alpha1", "kind": "SGShardedCluster",
        "metadata": {"name": "my-sharded-cluster"},
        "spec": {"configurations": {"backups": [{"sgObjectStorage": "my-backup-storage",
                  "cronSchedule": "0 5 * * *", "retention": 7, "compression": "lz4"}]}}});
    let (c, o) = s.apply(&fragment).unwrap();
    assert_eq!(o, ApplyOutcome::Configured);
    assert_eq!(c["spec"]["shards"]["clusters"], 2);
    assert_eq!(c["spec"]["configurations"]["backups"][0]["retention"], 7);
    assert_eq!(c["metadata"]["generation"], 2);
    // A complete manifest without the database field removes it (it was applied before),
    // and keeps the backups another apply added.
    let mut full = cluster();
    full["spec"].as_object_mut().unwrap().remove("database");
    full["spec"]["configurations"] = fragment["spec"]["configurations"].clone();
    let (c, _) = s.apply(&full).unwrap();
    assert!(c["spec"].get("database").is_none());
    assert_eq!(
        c["spec"]["configurations"]["backups"][0]["cronSchedule"],
        "0 5 * * *"
    );
    // Immutable fields are refused.
    let mut b = sharded_backup("b");
    s.apply(&b).unwrap();
    b["spec"]["sgShardedCluster"] = json!("other");
    let err = s.apply(&b).unwrap_err();
    assert!(err.to_string().contains("spec.sgShardedCluster"), "{err}");
}

#[test]
fn selectors_filter_lists_and_namespaces_separate() {
    let (_d, s) = open();
    s.create(&storage("a")).unwrap();
    let mut b = storage("b");
    b["metadata"]["labels"] = json!({"tier": "slow"});
    b["metadata"]["namespace"] = json!("prod");
    s.create(&b).unwrap();
    let names = |ns: Option<&str>, sel: &str| -> Vec<String> {
        let (items, _) = s
            .list(Kind::SGObjectStorage, ns, &Selector::parse(sel).unwrap())
            .unwrap();
        items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(None, ""), ["a", "b"]);
    assert_eq!(names(Some("default"), ""), ["a"]);
    assert_eq!(names(None, "tier=slow"), ["b"]);
    assert_eq!(names(None, "tier notin (slow)"), ["a"]);
    assert_eq!(names(None, "!tier"), Vec::<String>::new());
}

fn owned_by(mut doc: Value, owner: &Value) -> Value {
    doc["metadata"]["ownerReferences"] = json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true}]);
    doc
}

fn backup(name: &str) -> Value {
    json!({"apiVersion": "stackgres.io/v1", "kind": "SGBackup", "metadata": {"name": name},
           "spec": {"sgCluster": "my-sharded-cluster-coord"}})
}

#[test]
fn deleting_an_owner_cascades_and_finalizers_hold() {
    let (_d, s) = open();
    let owner = s.create(&sharded_backup("sb")).unwrap();
    s.create(&owned_by(backup("sb-coord"), &owner)).unwrap();
    let mut held = owned_by(backup("sb-shard0"), &owner);
    held["metadata"]["finalizers"] = json!(["shardvault.io/cleanup"]);
    s.create(&held).unwrap();
    s.add_event(&owner, EventType::Normal, "Started", "began")
        .unwrap();
    assert!(matches!(
        s.delete(Kind::SGShardedBackup, "default", "sb").unwrap(),
        Deletion::Deleted(_)
    ));
    assert!(
        s.get(Kind::SGBackup, "default", "sb-coord")
            .unwrap_err()
            .is_not_found()
    );
    let pending = s.get(Kind::SGBackup, "default", "sb-shard0").unwrap();
    assert!(pending["metadata"]["deletionTimestamp"].is_string());
    let (events, _) = s.list(Kind::Event, None, &Selector::default()).unwrap();
    assert!(events.is_empty(), "events go with their object");
    let mut done = pending.clone();
    done["metadata"]["finalizers"] = json!([]);
    s.update(&done).unwrap();
    assert!(
        s.get(Kind::SGBackup, "default", "sb-shard0")
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn events_aggregate_and_changes_replay() {
    let (_d, s) = open();
    let start = s.version();
    let obj = s.create(&sharded_backup("sb")).unwrap();
    s.add_event(&obj, EventType::Warning, "Failed", "boom")
        .unwrap();
    let e = s
        .add_event(&obj, EventType::Warning, "Failed", "boom")
        .unwrap();
    assert_eq!(e["count"], 2);
    s.add_event(&obj, EventType::Normal, "Done", "ok").unwrap();
    assert_eq!(s.events_for(&obj).unwrap().len(), 2);
    s.delete(Kind::SGShardedBackup, "default", "sb").unwrap();
    let changes = s
        .changes_since(start, Some(Kind::SGShardedBackup), None)
        .unwrap();
    let types: Vec<ChangeType> = changes.iter().map(|c| c.change_type).collect();
    assert_eq!(types, [ChangeType::Added, ChangeType::Deleted]);
    assert!(changes[1].version > changes[0].version);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let version = {
        let s = Store::open(&path).unwrap();
        s.create(&storage("a")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["store.db", "store.db-wal", "store.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f} holds Secrets: owner only");
        }
        s.version()
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(s.version(), version);
    assert!(s.get(Kind::SGObjectStorage, "default", "a").is_ok());
    let b = s.create(&storage("b")).unwrap();
    assert_eq!(rv(&b), version + 1);
}

#[test]
fn dry_run_writes_answer_and_roll_back() {
    let (_d, s) = open();
    let live = s.create(&storage("kept")).unwrap();
    let dry = s.dry_run();
    let answered = dry.create(&storage("never")).unwrap();
    assert_eq!(answered["metadata"]["name"], "never");
    assert!(dry.create(&storage("kept")).is_err(), "checks still run");
    assert!(matches!(
        dry.delete(Kind::SGObjectStorage, "default", "kept")
            .unwrap(),
        Deletion::Deleted(_)
    ));
    assert!(s.get(Kind::SGObjectStorage, "default", "never").is_err());
    assert_eq!(
        s.get(Kind::SGObjectStorage, "default", "kept").unwrap(),
        live
    );
    assert_eq!(s.version(), rv(&live), "the version does not move");
}

#[test]
fn orphaning_delete_keeps_what_the_owner_owned() {
    let (_d, s) = open();
    s.create(&cluster()).unwrap();
    let owner = s.create(&sharded_backup("owner")).unwrap();
    s.create(&owned_by(storage("child"), &owner)).unwrap();
    s.delete_orphaning(Kind::SGShardedBackup, "default", "owner")
        .unwrap();
    let child = s.get(Kind::SGObjectStorage, "default", "child").unwrap();
    assert_eq!(child["metadata"]["ownerReferences"], json!([]));
}
