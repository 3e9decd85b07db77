//! `kubectl apply`'s three-way merge for custom resources (JSON merge patch semantics:
//! maps merge key by key, lists and scalars are replaced whole).

use serde_json::{Map, Value};

/// Merges `applied` into `live`: fields set in `applied` win, fields that were in the
/// `last` applied configuration but are no longer in `applied` are removed, and fields that
/// someone else set (in `live` only) are kept.
pub fn three_way(live: &Value, last: Option<&Value>, applied: &Value) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let last_map = last.and_then(Value::as_object);
            let mut out = Map::new();
            for (k, lv) in l {
                let removed = !a.contains_key(k) && last_map.is_some_and(|m| m.contains_key(k));
                if !removed && !a.contains_key(k) {
                    out.insert(k.clone(), lv.clone());
                }
            }
            for (k, av) in a {
                let merged = match l.get(k) {
                    Some(lv) => three_way(lv, last_map.and_then(|m| m.get(k)), av),
                    None => strip_nulls(av),
                };
                if !merged.is_null() {
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        _ => strip_nulls(applied),
    }
}

/// Merges `patch` into `live` without removing anything the patch does not mention
/// (RFC 7386 merge patch: `null` removes a field).
pub fn merge_patch(live: &Value, patch: &Value) -> Value {
    three_way(live, None, patch)
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removed_fields_go_and_foreign_fields_stay() {
        let last = json!({"spec": {"a": 1, "b": 2}});
        let live = json!({"spec": {"a": 1, "b": 2, "c": 3}, "status": {"x": 1}});
        let applied = json!({"spec": {"a": 5}});
        assert_eq!(
            three_way(&live, Some(&last), &applied),
            json!({"spec": {"a": 5, "c": 3}, "status": {"x": 1}})
        );
    }

    #[test]
    fn lists_are_replaced_and_nulls_remove() {
        let live = json!({"l": [1, 2, 3], "m": {"k": 1, "j": 2}});
        let applied = json!({"l": [4], "m": {"k": null}});
        assert_eq!(
            merge_patch(&live, &applied),
            json!({"l": [4], "m": {"j": 2}})
        );
    }

    #[test]
    fn a_fragment_adds_to_an_object_it_never_applied() {
        let live = json!({"spec": {"type": "citus", "shards": {"clusters": 2}}});
        let applied = json!({"spec": {"configurations": {"backups": [{"sgObjectStorage": "s"}]}}});
        let out = three_way(&live, None, &applied);
        assert_eq!(out["spec"]["type"], "citus");
        assert_eq!(
            out["spec"]["configurations"]["backups"][0]["sgObjectStorage"],
            "s"
        );
    }
}
