//! `kube::Client`, configured from the kubeconfig the server writes, drives the server over
//! HTTPS: list/watch with resourceVersions and bookmarks, the watcher of kube-runtime,
//! merge and JSON patches (with `test` ops, as kube-runtime's finalizer helper sends),
//! the status subresource, dry-run, deletes with owner-reference garbage collection.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, PropagationPolicy, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::Event;
use serde_json::json;
use shardvault_apiserver::{ApiServer, ServeOptions};
use shardvault_store::Store;
use tokio_util::sync::CancellationToken;

struct Server {
    _dir: tempfile::TempDir,
    server: ApiServer,
    _stop: tokio_util::sync::DropGuard,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store.db")).unwrap());
    let stop = CancellationToken::new();
    let server = ApiServer::start(store, ServeOptions::default(), stop.clone())
        .await
        .unwrap();
    Server {
        _dir: dir,
        server,
        _stop: stop.drop_guard(),
    }
}

async fn client(s: &Server) -> kube::Client {
    let path = s._dir.path().join("kubeconfig");
    s.server.write_kubeconfig(&path).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds the token");
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn backups(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("stackgres.io", "v1", "SGShardedBackup");
    Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk))
}

fn backup(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup",
        "metadata": {"name": name},
        "spec": {"sgShardedCluster": "c1"},
    }))
    .unwrap()
}

fn secret(name: &str, owner: Option<&DynamicObject>) -> Secret {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"app": "kube-client-test"}},
        "stringData": {"k": "v"},
    });
    if let Some(o) = owner {
        s["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup",
            "name": o.metadata.name, "uid": o.metadata.uid,
        }]);
    }
    serde_json::from_value(s).unwrap()
}

#[tokio::test]
async fn list_then_watch_from_the_list_version_sees_only_later_changes() {
    let s = start().await;
    let c = client(&s).await;
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    secrets
        .create(&PostParams::default(), &secret("before", None))
        .await
        .unwrap();
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    secrets
        .create(&PostParams::default(), &secret("after", None))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("expected ADDED of `after`, got {other:?}"),
    }

    // From the current state ("0"), every object first comes as ADDED.
    let names: Vec<String> = secrets
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) => o.metadata.name,
            _ => None,
        })
        .collect();
    assert_eq!(names, ["after", "before"]);
}

#[tokio::test]
async fn bookmarks_carry_the_version_of_changes_the_watch_does_not_select() {
    let s = start().await;
    let c = client(&s).await;
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    let rv = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("app=other").timeout(10);
    assert!(wp.bookmarks, "kube asks for bookmarks by default");
    let mut stream = secrets.watch(&wp, &rv).await.unwrap().boxed();
    let made = secrets
        .create(&PostParams::default(), &secret("unselected", None))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                Some(b.metadata.resource_version),
                made.metadata.resource_version
            )
        }
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_follows_creates_and_deletes() {
    let s = start().await;
    let c = client(&s).await;
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    let cfg = kube::runtime::watcher::Config::default().labels("app=kube-client-test");
    let mut objects = kube::runtime::watcher(secrets.clone(), cfg)
        .default_backoff()
        .boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), objects.try_next())
            .await
            .expect("the watcher stalled")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitDone));
    secrets
        .create(&PostParams::default(), &secret("w1", None))
        .await
        .unwrap();
    match next().await {
        Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected w1 applied, got {other:?}"),
    }
    secrets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    match next().await {
        Event::Delete(o) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected w1 deleted, got {other:?}"),
    }
}

#[tokio::test]
async fn patches_status_and_finalizers_as_kube_runtime_sends_them() {
    let s = start().await;
    let c = client(&s).await;
    let api = backups(&c);
    let created = api
        .create(&PostParams::default(), &backup("b1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());

    let merged = api
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "gold"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["tier"], "gold");

    // The finalizer helper's patch: test that there are none, then add one.
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["test.stackgres.io/cleanup"]},
    ]))
    .unwrap();
    let with = api
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Json::<()>(add.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        with.metadata.finalizers.unwrap(),
        ["test.stackgres.io/cleanup"]
    );
    let again = api
        .patch("b1", &PatchParams::default(), &Patch::Json::<()>(add))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(e) if e.code == 422),
        "a failed test op is refused: {again}"
    );

    let status = api
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"process": {"status": "Running"}}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["process"]["status"], "Running");
    // A patch of the object leaves the status alone, and a status patch the spec.
    let spec_patch = api
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"process": {"status": "Failed"}}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_patch.data["status"]["process"]["status"], "Running");

    // Delete waits for the finalizer; removing it (JSON patch with test) deletes.
    api.delete("b1", &DeleteParams::default()).await.unwrap();
    let pending = api.get("b1").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "test.stackgres.io/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    api.patch("b1", &PatchParams::default(), &Patch::Json::<()>(remove))
        .await
        .unwrap();
    let gone = api.get_opt("b1").await.unwrap();
    assert!(gone.is_none(), "the last finalizer removed deletes");
}

#[tokio::test]
async fn owners_take_their_children_unless_orphaned() {
    let s = start().await;
    let c = client(&s).await;
    let api = backups(&c);
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    let owner = api
        .create(&PostParams::default(), &backup("o1"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("child1", Some(&owner)))
        .await
        .unwrap();
    api.delete("o1", &DeleteParams::background()).await.unwrap();
    assert!(secrets.get_opt("child1").await.unwrap().is_none());

    let owner = api
        .create(&PostParams::default(), &backup("o2"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("child2", Some(&owner)))
        .await
        .unwrap();
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    api.delete("o2", &orphan).await.unwrap();
    let kept = secrets.get("child2").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn dry_run_checks_and_stores_nothing() {
    let s = start().await;
    let c = client(&s).await;
    let api = backups(&c);
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api.create(&pp, &backup("dry")).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("dry"));
    assert!(api.get_opt("dry").await.unwrap().is_none());
    let mut bad = backup("bad");
    bad.data["spec"] = json!({"sgShardedCluster": "c1", "nope": 1});
    let e = api.create(&pp, &bad).await.unwrap_err();
    let kube::Error::Api(e) = e else {
        panic!("expected an API error, got {e}")
    };
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.nope"), "{}", e.message);
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let s = start().await;
    let text = s.server.kubeconfig().unwrap();
    let wrong = text.replace(s.server.token(), "not-the-token");
    let kubeconfig = Kubeconfig::from_yaml(&wrong).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let c = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(c);
    let e = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 401), "{e}");
}
