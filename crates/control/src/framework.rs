//! The controller framework: level-triggered reconcile functions driven by a deduplicated
//! work queue, in the shape of kube-rs controllers so a Kubernetes backend can reuse them.
//!
//! A key (reconciler, kind, namespace, name) is queued when its object changes in the store,
//! when an object it owns changes, and at every periodic resync. One reconcile per key runs
//! at a time, always on the newest stored object; changes that arrive meanwhile queue one
//! more run. Errors are retried with exponential backoff and recorded as Warning Events.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_store::{Deletion, EventType, ObjectRef, Selector, Store, StoreError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A reconcile function for one kind.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind this reconciler manages.
    fn kind(&self) -> Kind;
    /// Brings the world in line with `obj` (the newest stored version) and says when to
    /// look again.
    fn reconcile(&self, obj: Value, ctx: Ctx)
    -> BoxFuture<'static, Result<Action, ReconcileError>>;
}

/// What to do after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long even if nothing changes.
    Requeue(Duration),
    /// Reconcile again only when the object (or something it owns) changes, or at resync.
    AwaitChange,
}

/// A failed reconcile: retried with backoff and recorded as a Warning Event with `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ReconcileError {
    /// A short CamelCase reason, as in Kubernetes Events (`BackupFailed`).
    pub reason: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ReconcileError {
    /// Builds an error with a reason and a message.
    pub fn new(reason: impl Into<String>, message: impl fmt::Display) -> ReconcileError {
        ReconcileError {
            reason: reason.into(),
            message: message.to_string(),
        }
    }
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        ReconcileError::new("StoreError", e)
    }
}

/// What every reconcile gets: the store, the state directory, and the shutdown signal.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The resource store.
    pub store: Arc<Store>,
    /// The daemon's state directory (`store.db`, clusters, logs).
    pub state_dir: PathBuf,
    /// Cancelled when the daemon shuts down; long reconciles should stop at the next step.
    pub shutdown: CancellationToken,
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::BadRequest(format!("store task failed: {e}"))))
}

impl Ctx {
    /// Builds a context.
    pub fn new(store: Arc<Store>, state_dir: PathBuf, shutdown: CancellationToken) -> Ctx {
        Ctx {
            store,
            state_dir,
            shutdown,
        }
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        match blocking(&self.store, move |s| s.get(kind, &ns, &name)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects of a kind in a namespace (all when `None`) matching a label selector.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let selector = Selector::parse(selector)?;
        let ns = namespace.map(str::to_string);
        blocking(&self.store, move |s| {
            s.list(kind, ns.as_deref(), &selector)
                .map(|(items, _)| items)
        })
        .await
    }

    /// Creates an object.
    pub async fn create(&self, doc: Value) -> Result<Value, StoreError> {
        blocking(&self.store, move |s| s.create(&doc)).await
    }

    /// Replaces an object's spec and metadata (conflict if its resourceVersion is stale).
    pub async fn update(&self, doc: Value) -> Result<Value, StoreError> {
        blocking(&self.store, move |s| s.update(&doc)).await
    }

    /// Replaces the status of `obj` with `status`, whatever changed since `obj` was read
    /// (the controller owns status, as with a Kubernetes status patch).
    pub async fn update_status(&self, obj: &Value, status: Value) -> Result<Value, StoreError> {
        let mut doc = obj.clone();
        doc["status"] = status;
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        blocking(&self.store, move |s| s.update_status(&doc)).await
    }

    /// Deletes an object (and what it owns).
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Deletion, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        blocking(&self.store, move |s| s.delete(kind, &ns, &name)).await
    }

    /// Records an Event about `obj`; a failure to record is logged, not returned.
    pub async fn event(&self, obj: &Value, event_type: EventType, reason: &str, message: &str) {
        let (obj, reason, message) = (obj.clone(), reason.to_string(), message.to_string());
        if let Err(e) = blocking(&self.store, move |s| {
            s.add_event(&obj, event_type, &reason, &message)
        })
        .await
        {
            tracing::warn!("cannot record event: {e}");
        }
    }

    /// Adds `finalizer` to `obj` unless present; returns the stored object.
    pub async fn add_finalizer(&self, obj: &Value, finalizer: &str) -> Result<Value, StoreError> {
        if has_finalizer(obj, finalizer) {
            return Ok(obj.clone());
        }
        let mut doc = obj.clone();
        let list = doc["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        doc["metadata"]["finalizers"] =
            Value::Array(list.into_iter().chain([Value::from(finalizer)]).collect());
        self.update(doc).await
    }

    /// Removes `finalizer` from `obj`; when it was the last one of an object being deleted,
    /// the object is deleted now.
    pub async fn remove_finalizer(&self, obj: &Value, finalizer: &str) -> Result<(), StoreError> {
        if !has_finalizer(obj, finalizer) {
            return Ok(());
        }
        let mut doc = obj.clone();
        if let Some(list) = doc["metadata"]["finalizers"].as_array_mut() {
            list.retain(|f| f != finalizer);
        }
        self.update(doc).await.map(drop)
    }
}

/// True when `obj` carries `finalizer`.
pub fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|f| f == finalizer))
}

/// True when `obj` is being deleted and waits for its finalizers.
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// The loop's timing: the same settings as the kube-runtime controllers.
pub use crate::context::Settings;

/// A queued unit of work: which reconciler, which object.
type Key = (usize, ObjectRef);

/// Outcome of one reconcile run.
enum Outcome {
    Done(Action),
    Failed(Value, ReconcileError),
    Gone,
}

struct Queue {
    due: HashMap<Key, Instant>,
    running: HashSet<Key>,
    failures: HashMap<Key, u32>,
}

impl Queue {
    fn push(&mut self, key: Key, at: Instant) {
        self.due
            .entry(key)
            .and_modify(|t| *t = (*t).min(at))
            .or_insert(at);
    }
}

/// Runs the reconcilers until `ctx.shutdown` is cancelled, then waits for running
/// reconciles to return.
pub async fn run(ctx: Ctx, reconcilers: Vec<Arc<dyn Reconciler>>, settings: Settings) {
    if reconcilers.is_empty() {
        ctx.shutdown.cancelled().await;
        return;
    }
    let mut by_kind: HashMap<Kind, Vec<usize>> = HashMap::new();
    for (i, r) in reconcilers.iter().enumerate() {
        by_kind.entry(r.kind()).or_default().push(i);
    }
    let mut queue = Queue {
        due: HashMap::new(),
        running: HashSet::new(),
        failures: HashMap::new(),
    };
    let mut versions = ctx.store.subscribe();
    let mut seen = *versions.borrow_and_update();
    let mut tasks: JoinSet<(Key, Outcome)> = JoinSet::new();
    let mut resync = tokio::time::interval(settings.resync);
    loop {
        let now = Instant::now();
        let ready: Vec<Key> = queue
            .due
            .iter()
            .filter(|(k, t)| **t <= now && !queue.running.contains(*k))
            .map(|(k, _)| k.clone())
            .take(usize::from(settings.concurrency).saturating_sub(queue.running.len()))
            .collect();
        for key in ready {
            queue.due.remove(&key);
            queue.running.insert(key.clone());
            let (reconciler, ctx) = (reconcilers[key.0].clone(), ctx.clone());
            tasks.spawn(async move {
                let outcome = reconcile_one(&*reconciler, &key.1, ctx).await;
                (key, outcome)
            });
        }
        // With every slot busy, only a finished reconcile (or a change) can start more work.
        let saturated = queue.running.len() >= usize::from(settings.concurrency);
        let next = queue
            .due
            .iter()
            .filter(|(k, _)| !saturated && !queue.running.contains(*k))
            .map(|(_, t)| *t)
            .min()
            .unwrap_or_else(|| now + settings.resync);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            changed = versions.changed() => {
                if changed.is_err() {
                    break;
                }
                seen = enqueue_changes(&ctx, &by_kind, &mut queue, seen).await;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((key, outcome)) = done {
                    finish(&ctx, &settings, &mut queue, key, outcome).await;
                }
            }
            _ = resync.tick() => enqueue_all(&ctx, &reconcilers, &mut queue).await,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "reconciles still running after {:?}: cancelling them",
            settings.shutdown_grace
        );
        tasks.abort_all();
    }
}

async fn reconcile_one(reconciler: &dyn Reconciler, r: &ObjectRef, ctx: Ctx) -> Outcome {
    let obj = match ctx.get(r.kind, &r.namespace, &r.name).await {
        Ok(Some(obj)) => obj,
        Ok(None) => return Outcome::Gone,
        Err(e) => return Outcome::Failed(Value::Null, e.into()),
    };
    let fut = reconciler.reconcile(obj.clone(), ctx);
    match tokio::spawn(fut).await {
        Ok(Ok(action)) => Outcome::Done(action),
        Ok(Err(e)) => Outcome::Failed(obj, e),
        Err(panic) => Outcome::Failed(obj, ReconcileError::new("ReconcilePanicked", panic)),
    }
}

async fn finish(ctx: &Ctx, settings: &Settings, queue: &mut Queue, key: Key, outcome: Outcome) {
    queue.running.remove(&key);
    match outcome {
        Outcome::Done(action) => {
            queue.failures.remove(&key);
            if let Action::Requeue(after) = action {
                queue.push(key, Instant::now() + after);
            }
        }
        Outcome::Gone => {
            queue.failures.remove(&key);
        }
        Outcome::Failed(obj, err) => {
            let n = queue.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            let delay = settings.backoff(*n);
            tracing::warn!(object = %key.1, attempt = *n, retry_in = ?delay, "reconcile failed: {err}");
            if !obj.is_null() {
                ctx.event(&obj, EventType::Warning, &err.reason, &err.message)
                    .await;
            }
            queue.push(key, Instant::now() + delay);
        }
    }
}

async fn enqueue_changes(
    ctx: &Ctx,
    by_kind: &HashMap<Kind, Vec<usize>>,
    queue: &mut Queue,
    seen: u64,
) -> u64 {
    let store = ctx.store.clone();
    let changes = tokio::task::spawn_blocking(move || store.changes_since(seen, None, None)).await;
    let changes = match changes {
        Ok(Ok(c)) => c,
        other => {
            tracing::warn!("cannot read the change log ({other:?}): resyncing everything");
            let version = ctx.store.version();
            for (kind, idxs) in by_kind {
                for r in list_refs(ctx, *kind).await {
                    for i in idxs {
                        queue.push((*i, r.clone()), Instant::now());
                    }
                }
            }
            return version;
        }
    };
    let mut last = seen;
    for change in changes {
        last = change.version;
        let Ok(r) = ObjectRef::of(&change.object) else {
            continue;
        };
        let mut targets = vec![r.clone()];
        for owner in change.object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let kind = Kind::from_manifest(
                owner["apiVersion"].as_str().unwrap_or(""),
                owner["kind"].as_str().unwrap_or(""),
            );
            if let (Ok(kind), Some(name)) = (kind, owner["name"].as_str()) {
                targets.push(ObjectRef::new(kind, &r.namespace, name));
            }
        }
        for t in targets {
            for i in by_kind.get(&t.kind).into_iter().flatten() {
                queue.push((*i, t.clone()), Instant::now());
            }
        }
    }
    last
}

async fn list_refs(ctx: &Ctx, kind: Kind) -> Vec<ObjectRef> {
    match ctx.list(kind, None, "").await {
        Ok(items) => items.iter().filter_map(|o| ObjectRef::of(o).ok()).collect(),
        Err(e) => {
            tracing::warn!("resync of {kind} failed: {e}");
            Vec::new()
        }
    }
}

async fn enqueue_all(ctx: &Ctx, reconcilers: &[Arc<dyn Reconciler>], queue: &mut Queue) {
    for (i, rec) in reconcilers.iter().enumerate() {
        for r in list_refs(ctx, rec.kind()).await {
            queue.push((i, r), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    const FINALIZER: &str = "test.shardvault.io/cleanup";

    /// Marks SGShardedBackups Completed, fails the first two attempts of any named
    /// `flaky`, and holds deletion with a finalizer until it has "cleaned up".
    struct TestReconciler {
        runs: Mutex<Vec<String>>,
        cleaned: Mutex<Vec<String>>,
    }

    impl Reconciler for Arc<TestReconciler> {
        fn kind(&self) -> Kind {
            Kind::SGShardedBackup
        }

        fn reconcile(
            &self,
            obj: Value,
            ctx: Ctx,
        ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
            let me = self.clone();
            Box::pin(async move {
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                let attempts = {
                    let mut runs = me.runs.lock().unwrap();
                    runs.push(name.clone());
                    runs.iter().filter(|n| **n == name).count()
                };
                if is_deleting(&obj) {
                    me.cleaned.lock().unwrap().push(name);
                    ctx.remove_finalizer(&obj, FINALIZER).await?;
                    return Ok(Action::AwaitChange);
                }
                let obj = ctx.add_finalizer(&obj, FINALIZER).await?;
                if name == "flaky" && attempts <= 2 {
                    return Err(ReconcileError::new(
                        "NotYet",
                        format!("attempt {attempts} fails"),
                    ));
                }
                ctx.update_status(&obj, json!({"process": {"status": "Completed"}}))
                    .await?;
                Ok(Action::AwaitChange)
            })
        }
    }

    fn backup(name: &str) -> Value {
        json!({"apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup", "metadata": {"name": name},
               "spec": {"sgShardedCluster": "c"}})
    }

    async fn until<F: Fn() -> bool>(what: &str, f: F) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconciles_retries_with_backoff_and_finalizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.db")).unwrap());
        store.create(&backup("early")).unwrap();
        let rec = Arc::new(TestReconciler {
            runs: Mutex::new(Vec::new()),
            cleaned: Mutex::new(Vec::new()),
        });
        let shutdown = CancellationToken::new();
        let ctx = Ctx::new(store.clone(), dir.path().to_path_buf(), shutdown.clone());
        let settings = Settings {
            resync: Duration::from_secs(3600),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            concurrency: 4,
            shutdown_grace: Duration::from_secs(5),
        };
        let handle = tokio::spawn(run(
            ctx,
            vec![Arc::new(rec.clone()) as Arc<dyn Reconciler>],
            settings,
        ));
        let status = |name: &str| {
            store
                .get(Kind::SGShardedBackup, "default", name)
                .ok()
                .and_then(|o| {
                    o.pointer("/status/process/status")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        };
        until("existing object reconciled", || {
            status("early").as_deref() == Some("Completed")
        })
        .await;
        store.create(&backup("flaky")).unwrap();
        until("flaky object completes after retries", || {
            status("flaky").as_deref() == Some("Completed")
        })
        .await;
        let flaky = store
            .get(Kind::SGShardedBackup, "default", "flaky")
            .unwrap();
        let events = store.events_for(&flaky).unwrap();
        assert_eq!(
            events.len(),
            2,
            "one Warning per distinct failure: {events:?}"
        );
        assert!(
            events
                .iter()
                .all(|e| e["type"] == "Warning" && e["reason"] == "NotYet")
        );

        store
            .delete(Kind::SGShardedBackup, "default", "early")
            .unwrap();
        until("finalizer removed and object gone", || {
            store
                .get(Kind::SGShardedBackup, "default", "early")
                .is_err()
        })
        .await;
        assert_eq!(*rec.cleaned.lock().unwrap(), ["early"]);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    /// Sleeps in every reconcile and records how many run at once per key.
    struct SlowReconciler {
        running: Mutex<HashMap<String, usize>>,
        max_parallel: Mutex<usize>,
        runs: Mutex<usize>,
    }

    impl Reconciler for Arc<SlowReconciler> {
        fn kind(&self) -> Kind {
            Kind::SGShardedBackup
        }

        fn reconcile(
            &self,
            obj: Value,
            _ctx: Ctx,
        ) -> BoxFuture<'static, Result<Action, ReconcileError>> {
            let me = self.clone();
            Box::pin(async move {
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                {
                    let mut running = me.running.lock().unwrap();
                    let n = running.entry(name.clone()).or_insert(0);
                    *n += 1;
                    let mut max = me.max_parallel.lock().unwrap();
                    *max = (*max).max(*n);
                    *me.runs.lock().unwrap() += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                *me.running.lock().unwrap().get_mut(&name).unwrap() -= 1;
                Ok(Action::AwaitChange)
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_reconcile_per_key_changes_coalesce_and_resync_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.db")).unwrap());
        let rec = Arc::new(SlowReconciler {
            running: Mutex::new(HashMap::new()),
            max_parallel: Mutex::new(0),
            runs: Mutex::new(0),
        });
        let shutdown = CancellationToken::new();
        let ctx = Ctx::new(store.clone(), dir.path().to_path_buf(), shutdown.clone());
        let settings = Settings {
            resync: Duration::from_millis(700),
            ..Settings::default()
        };
        let handle = tokio::spawn(run(
            ctx,
            vec![Arc::new(rec.clone()) as Arc<dyn Reconciler>],
            settings,
        ));
        let mut obj = store.create(&backup("busy")).unwrap();
        for i in 0..20 {
            obj["metadata"]["labels"] = json!({"n": i.to_string()});
            obj = store.update(&obj).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until("the burst is reconciled", || *rec.runs.lock().unwrap() >= 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_burst = *rec.runs.lock().unwrap();
        assert!(
            after_burst < 10,
            "21 changes coalesced into few runs, got {after_burst}"
        );
        assert_eq!(
            *rec.max_parallel.lock().unwrap(),
            1,
            "never two reconciles of one key at once"
        );
        until("a resync reconciles the unchanged object again", || {
            *rec.runs.lock().unwrap() > after_burst
        })
        .await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..Settings::default()
        };
        let got: Vec<u64> = (1..=6).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
    }
}
