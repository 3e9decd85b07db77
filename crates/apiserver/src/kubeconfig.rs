//! The kubeconfig that lets `kubectl` and `kube::Client` reach the HTTPS listener.

use std::net::SocketAddr;

use base64::Engine;
use serde_json::json;

/// The name of the cluster, user and context in the kubeconfig.
pub const CONTEXT: &str = "shardvault";

/// A kubeconfig (YAML) for `https://addr` trusting `ca_pem`, authenticating with `token`.
pub fn render(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": format!("https://{addr}"),
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {
            "cluster": CONTEXT, "user": CONTEXT, "namespace": "default",
        }}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    yaml_serde::to_string(&config).unwrap_or_default()
}
