//! The embedded Kubernetes API server of shardvault.
//!
//! Serves the objects of a [`shardvault_store::Store`] with the Kubernetes API (paths,
//! resourceVersion semantics, watch, patch types, status subresource, `Status` errors), so
//! that `kube::Client` and the real `kubectl` drive it unmodified. Listeners: HTTPS on
//! 127.0.0.1 with a self-signed certificate and a bearer token (written into a
//! kubeconfig), an owner-only Unix socket without token, and optionally plain HTTP with a
//! token.

mod admission;
pub mod auth;
mod discovery;
mod fields;
mod jsonpath;
mod kubeconfig;
mod openapi;
mod params;
mod patch;
mod path;
mod resources;
mod schemas;
mod server;
mod status;
mod table;
mod tls;
mod watch;

pub use admission::Admission;
pub use schemas::Schemas;
pub use server::{ApiServer, ServeOptions};

/// Header carrying what an apply (`PATCH` with a whole manifest) did: created, configured
/// or unchanged.
pub const APPLY_OUTCOME_HEADER: &str = "x-shardvault-apply";

/// Everything that can stop the API server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be opened.
    #[error("cannot listen on {what}: {cause}")]
    Listen {
        /// The address or socket path.
        what: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot make the API server's TLS certificate: {0}")]
    Certificate(String),
}
