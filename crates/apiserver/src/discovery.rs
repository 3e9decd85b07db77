//! Discovery: `/api`, `/apis`, the group and group-version documents (APIResourceList
//! with verbs, short names, categories, singular names), and `/version`.
//!
//! Aggregated discovery (`as=APIGroupDiscoveryList`) is not served: answered with plain
//! `application/json`, kubectl falls back to these documents.

use serde_json::{Value, json};
use shardvault_api::Kind;

use crate::schemas::Schemas;

/// Every verb a served kind supports.
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The versions of `group`, preferred first (the group's newest).
fn versions(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        if !out.contains(&k.version()) {
            out.push(k.version());
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(version_rank(v)));
    out
}

/// Orders Kubernetes versions: GA above beta above alpha, then by number.
fn version_rank(v: &str) -> (u8, u32, u32) {
    let rest = v.trim_start_matches('v');
    let (major, stage, minor) = if let Some((m, n)) = rest.split_once("alpha") {
        (m, 0, n)
    } else if let Some((m, n)) = rest.split_once("beta") {
        (m, 1, n)
    } else {
        (rest, 2, "0")
    };
    (stage, major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

fn group_document(group: &str) -> Value {
    let versions: Vec<Value> = versions(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "preferredVersion": versions[0].clone(), "versions": versions,
    })
}

/// The groups besides the core one.
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for g in Kind::ALL.map(Kind::group) {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// The APIResourceList of one group version.
fn resource_list(group: &str, version: &str, schemas: &Schemas) -> Option<Value> {
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group && k.version() == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in kinds {
        let mut r = json!({
            "name": k.plural(), "singularName": k.name().to_ascii_lowercase(),
            "namespaced": true, "kind": k.name(), "verbs": VERBS,
            "shortNames": k.short_name().into_iter().collect::<Vec<_>>(),
        });
        let categories = schemas.categories(k);
        if !categories.is_empty() {
            r["categories"] = json!(categories);
        }
        resources.push(r);
        if schemas.has_status(k) {
            resources.push(json!({
                "name": format!("{}/status", k.plural()), "singularName": "",
                "namespaced": true, "kind": k.name(), "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": resources,
    }))
}

/// The discovery document at `path`, if it is one.
pub fn document(path: &str, schemas: &Schemas) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": versions(""),
            "serverAddressByClientCIDRs": []})),
        ["api", v] => resource_list("", v, schemas),
        ["apis"] => Some(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups().into_iter().map(group_document).collect::<Vec<_>>(),
        })),
        ["apis", g] if groups().contains(g) => Some(group_document(g)),
        ["apis", g, v] => resource_list(g, v, schemas),
        ["version"] => Some(version()),
        _ => None,
    }
}

/// `/version`: the Kubernetes version whose API is served (that of the k8s-openapi types).
fn version() -> Value {
    json!({
        "major": "1", "minor": "33",
        "gitVersion": format!("v1.33.0+shardvault-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_prefer_ga_then_beta_then_alpha() {
        assert_eq!(versions("stackgres.io"), ["v1", "v1beta1", "v1alpha1"]);
        assert_eq!(versions(""), ["v1"]);
    }

    #[test]
    fn group_versions_list_their_kinds_with_status() {
        let list = document("/apis/stackgres.io/v1", &Schemas::default()).unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"sgshardedbackups"), "{names:?}");
        assert!(document("/apis/stackgres.io/v9", &Schemas::default()).is_none());
        assert!(document("/apis/other.io", &Schemas::default()).is_none());
    }
}
