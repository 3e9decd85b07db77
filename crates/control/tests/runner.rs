//! The controller runner on kube-runtime against the in-process API server: reconciles
//! what exists and what comes, retries failures with backoff recording a Warning Event for
//! each, holds deletion with a finalizer until cleanup ran, and stops within its grace.

#[path = "common/api.rs"]
mod api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use shardvault_api::Kind;
use shardvault_api::shardedbackup::{SGShardedBackup, ShardedBackupSpec};
use shardvault_control::context::{Context, Settings};
use shardvault_control::runner::{self, ReconcileFailure};
use shardvault_pg::runtime::LocalRuntime;
use tokio::time::Instant;

const FINALIZER: &str = "test.shardvault.io/cleanup";

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("attempt {0} fails")]
    NotYet(usize),
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

impl ReconcileFailure for TestError {
    fn reason(&self) -> &str {
        match self {
            TestError::NotYet(_) => "NotYet",
            TestError::Api(_) => "ApiError",
        }
    }
}

#[derive(Default)]
struct Seen {
    runs: Mutex<Vec<String>>,
    cleaned: Mutex<Vec<String>>,
}

/// Marks SGShardedBackups Completed, fails the first two attempts of one named `flaky`,
/// and records the cleanup of deleted ones.
async fn reconcile(
    obj: Arc<SGShardedBackup>,
    ctx: Arc<Context>,
    seen: Arc<Seen>,
) -> Result<Action, finalizer::Error<TestError>> {
    let api: Api<SGShardedBackup> = Api::namespaced(ctx.client.clone(), "default");
    finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => {
                let name = obj.name_any();
                let attempts = {
                    let mut runs = seen.runs.lock().unwrap();
                    runs.push(name.clone());
                    runs.iter().filter(|n| **n == name).count()
                };
                if name == "flaky" && attempts <= 2 {
                    return Err(TestError::NotYet(attempts));
                }
                let status = serde_json::json!({"status": {"process": {"status": "Completed"}}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(obj) => {
                seen.cleaned.lock().unwrap().push(obj.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn backup(name: &str) -> SGShardedBackup {
    SGShardedBackup::new(
        name,
        serde_json::from_value::<ShardedBackupSpec>(serde_json::json!({"sgShardedCluster": "c"}))
            .unwrap(),
    )
}

async fn until<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_retries_with_backoff_records_warnings_and_finalizes() {
    let api = api::start().await;
    let backups: Api<SGShardedBackup> = Api::namespaced(api.client.clone(), "default");
    backups
        .create(&PostParams::default(), &backup("early"))
        .await
        .unwrap();
    let runtime = LocalRuntime::open(api.dir.path(), "/nonexistent/shardvault".into()).unwrap();
    let ctx = Arc::new(Context::new(
        api.client.clone(),
        Arc::new(runtime),
        shardvault_control::clock::from_env(),
        api.shutdown.child_token(),
        Settings {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Settings::default()
        },
    ));
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let controller = runner::running(
        "test reconciles",
        runner::controller::<SGShardedBackup>(&ctx),
        move |obj, ctx| reconcile(obj, ctx, s.clone()),
        ctx.clone(),
    );
    let handle = tokio::spawn(runner::run(vec![controller], ctx.clone()));

    let store = api.store.clone();
    let status = move |name: &str| {
        store
            .get(Kind::SGShardedBackup, "default", name)
            .ok()
            .and_then(|o| {
                o["status"]["process"]["status"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    until("the existing object is reconciled", || {
        status("early").as_deref() == Some("Completed")
    })
    .await;
    backups
        .create(&PostParams::default(), &backup("flaky"))
        .await
        .unwrap();
    until("the flaky object completes after retries", || {
        status("flaky").as_deref() == Some("Completed")
    })
    .await;
    let flaky = api
        .store
        .get(Kind::SGShardedBackup, "default", "flaky")
        .unwrap();
    let warnings = || {
        api.store
            .events_for(&flaky)
            .unwrap()
            .into_iter()
            .filter(|e| e["type"] == "Warning" && e["reason"] == "NotYet")
            .count()
    };
    until("one Warning per distinct failure", || warnings() == 2).await;

    backups
        .delete("early", &DeleteParams::default())
        .await
        .unwrap();
    until("finalizer removed and the object gone", || {
        api.store
            .get(Kind::SGShardedBackup, "default", "early")
            .is_err()
    })
    .await;
    assert_eq!(*seen.cleaned.lock().unwrap(), ["early"]);

    ctx.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the runner stops within its grace")
        .unwrap();
}
