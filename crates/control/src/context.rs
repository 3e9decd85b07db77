//! What every reconcile gets: the Kubernetes API client, the cluster runtime, the clock, the
//! shutdown signal and the loop's timing, plus the failure counts behind retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::Api;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use shardvault_pg::runtime::ClusterRuntime;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// Timing of the controllers.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Every object is reconciled at least this often.
    pub resync: Duration,
    /// Delay after the first failure; doubled for each further one.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// Reconciles of one controller running at once (over all objects).
    pub concurrency: u16,
    /// How long shutdown waits for running reconciles before cancelling them.
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            concurrency: 8,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// The delay before retry number `failures` (1 for the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// An object a controller failed on: kind, namespace, name.
pub type FailureKey = (String, String, String);

/// The shared state of every controller.
pub struct Context {
    /// The Kubernetes API (the embedded server, or a real cluster).
    pub client: Client,
    /// What runs the sharded clusters and their node work.
    pub runtime: Arc<dyn ClusterRuntime>,
    /// Where controllers get the time.
    pub clock: Arc<dyn Clock>,
    /// Cancelled on shutdown; long reconciles stop at their next step.
    pub shutdown: CancellationToken,
    /// Timing of the controller loops.
    pub settings: Settings,
    failures: Mutex<HashMap<FailureKey, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("runtime", &self.runtime)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context over `client` and `runtime`.
    pub fn new(
        client: Client,
        runtime: Arc<dyn ClusterRuntime>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        settings: Settings,
    ) -> Context {
        Context {
            client,
            runtime,
            clock,
            shutdown,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The API of kind `K` in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Counts one more failure of `key` and returns how many in a row there were.
    pub fn failed(&self, key: FailureKey) -> u32 {
        let mut failures = self.failures.lock().expect("not poisoned");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of `key` (it reconciled fine).
    pub fn succeeded(&self, key: &FailureKey) {
        self.failures.lock().expect("not poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
