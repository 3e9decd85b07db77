//! Writing a controller's status through the status subresource: the new status replaces
//! the old one as a whole (a JSON merge patch that also nulls what went away), and nothing
//! is written when nothing changed.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new` (keys of `old` missing in `new` become
/// null, objects are patched key by key, anything else is replaced).
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Replaces the status of `obj` (whose status was `old` when read) with `new`; writes
/// nothing when they are equal.
pub async fn replace<K, S>(api: &Api<K>, obj: &K, old: &S, new: &S) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == new {
        return Ok(());
    }
    let old = serde_json::to_value(old).expect("status serializes");
    let new = serde_json::to_value(new).expect("status serializes");
    let patch = serde_json::json!({ "status": merge_patch(&old, &new) });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_patch_nulls_what_went_away_and_leaves_what_stayed() {
        let old = json!({"conditions": [{"type": "Ready"}], "restore": {"fromBackup": "b", "target": "t"}, "members": [1]});
        let new = json!({"conditions": [{"type": "Ready", "status": "True"}], "restore": {"fromBackup": "b"}, "members": [1]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"conditions": [{"type": "Ready", "status": "True"}], "restore": {"target": null}})
        );
        assert_eq!(
            merge_patch(&json!({"restore": {"a": 1}}), &json!({})),
            json!({"restore": null})
        );
    }
}
