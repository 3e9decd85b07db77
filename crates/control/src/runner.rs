//! Runs controllers on kube-runtime: every controller is a `kube::runtime::Controller`
//! over one kind, its failures retried with exponential backoff and recorded as Warning
//! Events, all of them stopped together on shutdown with a grace period for running
//! reconciles (then cancelled).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, FailureKey};
use crate::events::{self, EventType};

/// A controller's error: says which Event reason it is recorded with.
pub trait ReconcileFailure: std::error::Error + Send + Sync + 'static {
    /// A short CamelCase reason, as in Kubernetes Events (`RestoreFailed`).
    fn reason(&self) -> &str;

    /// What went wrong and what to do about it (the Event's message).
    fn message(&self) -> String {
        self.to_string()
    }
}

impl<E: ReconcileFailure> ReconcileFailure for finalizer::Error<E> {
    fn reason(&self) -> &str {
        match self {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
            finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
                "FinalizerFailed"
            }
            _ => "InvalidObject",
        }
    }

    fn message(&self) -> String {
        match self {
            finalizer::Error::ApplyFailed(e) => e.message(),
            finalizer::Error::CleanupFailed(e) => format!("cleanup: {}", e.message()),
            other => other.to_string(),
        }
    }
}

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> FailureKey {
    (
        K::kind(&()).into_owned(),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

fn key_of_ref<K: Resource<DynamicType = ()>>(r: &ObjectRef<K>) -> FailureKey {
    (
        K::kind(&()).into_owned(),
        r.namespace.clone().unwrap_or_default(),
        r.name.clone(),
    )
}

/// Retries a failed reconcile after an exponential backoff (per object, reset by a
/// success) and records the failure as a Warning Event.
pub fn error_policy<K, E>(obj: Arc<K>, err: &E, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    E: ReconcileFailure,
{
    let key = key_of(&*obj);
    let attempt = ctx.failed(key.clone());
    let delay = ctx.settings.backoff(attempt);
    let (reason, message) = (err.reason().to_string(), err.message());
    tracing::warn!(
        "{} {}/{}: reconcile failed (attempt {attempt}, next in {}s): {reason}: {message}",
        key.0,
        key.1,
        key.2,
        delay.as_secs_f32()
    );
    tokio::spawn(async move {
        events::record(&ctx.client, &*obj, EventType::Warning, &reason, &message).await;
    });
    Action::requeue(delay)
}

/// A controller ready to run until shutdown.
pub struct Running {
    /// What it does, for logs ("retention of SGShardedCluster").
    pub name: String,
    /// Runs it; returns once it stopped.
    pub future: BoxFuture<'static, ()>,
}

/// A Controller over every `K` (all namespaces) that stops taking work on shutdown.
pub fn controller<K>(ctx: &Context) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    Controller::new(
        Api::<K>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
}

/// Runs `controller` (named `what` in logs) with `reconcile` and [`error_policy`]: successes
/// reset the object's backoff, watch errors are logged.
pub fn running<K, E, F, Fut>(
    what: &str,
    controller: Controller<K>,
    reconcile: F,
    ctx: Arc<Context>,
) -> Running
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    E: ReconcileFailure,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let name = format!("{what} of {}", K::kind(&()));
    let report = ctx.clone();
    let stream = controller.run(reconcile, error_policy::<K, E>, ctx);
    let label = name.clone();
    let future = stream.for_each(move |result| {
        match result {
            Ok((r, _)) => report.succeeded(&key_of_ref(&r)),
            Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(controller::Error::ObjectNotFound(r)) => {
                tracing::debug!("{r} is gone before its reconcile")
            }
            Err(e) => tracing::warn!("the {label} controller: {e}"),
        }
        futures::future::ready(())
    });
    Running {
        name,
        future: Box::pin(future),
    }
}

/// Runs every controller until `ctx.shutdown` is cancelled; running reconciles then get
/// `ctx.settings.shutdown_grace` to return before they are cancelled.
pub async fn run(controllers: Vec<Running>, ctx: Arc<Context>) {
    let names: Vec<String> = controllers.iter().map(|c| c.name.clone()).collect();
    tracing::info!("controllers running: {}", names.join(", "));
    let all = futures::future::join_all(controllers.into_iter().map(|c| c.future));
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => return,
        () = ctx.shutdown.cancelled() => {}
    }
    let grace = ctx.settings.shutdown_grace;
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            "reconciles still running {}s after shutdown began: cancelling them",
            grace.as_secs_f32()
        );
    }
}
