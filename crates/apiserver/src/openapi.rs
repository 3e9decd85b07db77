//! OpenAPI v3: `/openapi/v3` lists one document per group version; each holds the kinds'
//! schemas (from the CRDs, `x-kubernetes-group-version-kind` tagged, as `kubectl explain`
//! looks them up) and their paths with the query parameters the server takes (kubectl
//! checks there that `fieldValidation` is supported before it relies on the server).

use serde_json::{Map, Value, json};
use shardvault_api::Kind;

use crate::schemas::Schemas;

/// `api/v1` or `apis/GROUP/VERSION`, as the OpenAPI v3 index names group versions.
fn gv_key(kind: Kind) -> String {
    match kind.group() {
        "" => format!("api/{}", kind.version()),
        g => format!("apis/{g}/{}", kind.version()),
    }
}

/// `io.stackgres.v1.SGShardedBackup`, `io.k8s.api.core.v1.Secret`: the schema name.
fn schema_name(kind: Kind) -> String {
    match kind.group() {
        "" => format!("io.k8s.api.core.{}.{}", kind.version(), kind.name()),
        g => {
            let reversed: Vec<&str> = g.split('.').rev().collect();
            format!("{}.{}.{}", reversed.join("."), kind.version(), kind.name())
        }
    }
}

fn gvk(kind: Kind) -> Value {
    json!({"group": kind.group(), "version": kind.version(), "kind": kind.name()})
}

/// The schema of a core kind (no CRD): its top-level fields.
fn core_schema(kind: Kind) -> Value {
    let mut props = json!({
        "apiVersion": {"type": "string", "description": "The versioned schema of this representation of an object."},
        "kind": {"type": "string", "description": "The REST resource this object represents."},
        "metadata": {"type": "object", "description": "Standard object's metadata."},
    });
    match kind {
        Kind::Secret => {
            props["data"] = json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"},
                "description": "The secret data, base64 encoded, by key."});
            props["stringData"] = json!({"type": "object", "additionalProperties": {"type": "string"},
                "description": "Secret data in plain text, merged into data on write."});
            props["type"] = json!({"type": "string", "description": "Used to ease programmatic handling of secret data."});
            props["immutable"] = json!({"type": "boolean", "description": "When true, the data cannot be changed."});
        }
        Kind::Event => {
            for (f, d) in [
                ("reason", "Why the action was taken, machine-readable."),
                ("message", "A human-readable description of the status of this operation."),
                ("type", "Normal or Warning."),
                ("firstTimestamp", "When the event was first recorded."),
                ("lastTimestamp", "When the event last occurred."),
            ] {
                props[f] = json!({"type": "string", "description": d});
            }
            props["count"] = json!({"type": "integer", "description": "How many times the event occurred."});
            props["involvedObject"] = json!({"type": "object", "description": "The object this event is about."});
        }
        _ => {}
    }
    json!({"type": "object", "properties": props})
}

/// The query parameters writes take.
fn write_parameters() -> Value {
    let param = |name: &str, desc: &str| {
        json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string"}, "uniqueItems": true})
    };
    json!([
        param("dryRun", "All: check the request and store nothing."),
        param("fieldManager", "The name of the writer."),
        param("fieldValidation", "Strict, Warn or Ignore: how unknown fields are treated (always refused here, with their path)."),
    ])
}

fn paths(kind: Kind) -> Map<String, Value> {
    let base = match kind.group() {
        "" => format!("/api/{}", kind.version()),
        g => format!("/apis/{g}/{}", kind.version()),
    };
    let op = |id: &str| {
        json!({
            "operationId": format!("{id}{}", kind.name()),
            "x-kubernetes-group-version-kind": gvk(kind),
            "parameters": write_parameters(),
            "responses": {"200": {"description": "OK"}},
        })
    };
    let mut out = Map::new();
    out.insert(
        format!("{base}/namespaces/{{namespace}}/{}", kind.plural()),
        json!({"post": op("create")}),
    );
    out.insert(
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", kind.plural()),
        json!({"put": op("replace"), "patch": op("patch")}),
    );
    out
}

/// The index: one entry per group version.
pub fn index() -> Value {
    let mut paths = Map::new();
    for k in Kind::ALL {
        let key = gv_key(k);
        let url = format!("/openapi/v3/{key}");
        paths.insert(key, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// The document of group version `key` (`apis/stackgres.io/v1`).
pub fn document(key: &str, schemas: &Schemas) -> Option<Value> {
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| gv_key(*k) == key)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut components = Map::new();
    let mut all_paths = Map::new();
    for k in kinds {
        let mut schema = schemas.schema(k).cloned().unwrap_or_else(|| core_schema(k));
        schema["x-kubernetes-group-version-kind"] = json!([gvk(k)]);
        components.insert(schema_name(k), schema);
        all_paths.extend(paths(k));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "shardvault", "version": env!("CARGO_PKG_VERSION")},
        "paths": all_paths,
        "components": {"schemas": components},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_every_group_version_document() {
        let idx = index();
        for key in ["api/v1", "apis/stackgres.io/v1", "apis/stackgres.io/v1alpha1"] {
            let url = idx["paths"][key]["serverRelativeURL"].as_str().unwrap();
            let doc = document(url.trim_start_matches("/openapi/v3/"), &Schemas::default());
            assert!(doc.is_some(), "{key}");
        }
        assert_eq!(schema_name(Kind::SGShardedBackup), "io.stackgres.v1.SGShardedBackup");
    }

    #[test]
    fn patch_operations_declare_field_validation() {
        let doc = document("apis/stackgres.io/v1", &Schemas::default()).unwrap();
        let op = &doc["paths"]["/apis/stackgres.io/v1/namespaces/{namespace}/sgshardedbackups/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "SGShardedBackup");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
    }
}
