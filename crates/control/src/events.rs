//! Kubernetes Events (core v1) about the objects controllers reconcile. An Event repeated
//! (same object, type, reason and message) counts up on one Event instead of adding one.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

pub use kube::runtime::events::EventType;

/// Records an Event about `obj`; a failure to record is logged, not returned.
pub async fn record<K>(client: &Client, obj: &K, kind: EventType, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    if let Err(e) = try_record(client, obj, kind, reason, message).await {
        tracing::warn!(
            "cannot record the {reason} Event about {} {}: {e}",
            K::kind(&()),
            obj.name_any()
        );
    }
}

fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// The name of the Event for one (object, type, reason, message): the object's name and a
/// hash (a DNS label, at most 62 characters), so a repeat finds the Event it counts up.
fn event_name(obj_name: &str, uid: &str, kind: &str, reason: &str, message: &str) -> String {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [uid, kind, reason, message] {
        for b in part.bytes().chain([0]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let base: String = obj_name.chars().take(45).collect();
    format!("{}-{hash:016x}", base.trim_end_matches('-'))
}

async fn try_record<K>(
    client: &Client,
    obj: &K,
    kind: EventType,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let uid = obj.uid().unwrap_or_default();
    let name = event_name(&obj.name_any(), &uid, type_name(kind), reason, message);
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let now = Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(obj.name_any()),
            namespace: Some(namespace),
            uid: Some(uid),
            ..ObjectReference::default()
        },
        type_: Some(type_name(kind).into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        ..Event::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let old = api.get(&name).await?;
            let patch = serde_json::json!({
                "count": old.count.unwrap_or(1).saturating_add(1),
                "lastTimestamp": now,
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_stable_and_tell_repeats_from_new_events() {
        let a = event_name("c1", "u1", "Warning", "RestoreFailed", "m");
        assert_eq!(a, event_name("c1", "u1", "Warning", "RestoreFailed", "m"));
        assert_ne!(a, event_name("c1", "u1", "Warning", "RestoreFailed", "m2"));
        assert_ne!(a, event_name("c1", "u2", "Warning", "RestoreFailed", "m"));
        assert!(a.starts_with("c1-"), "{a}");
        let long = event_name(&"x".repeat(80), "u", "Normal", "R", "m");
        assert!(long.len() <= 45 + 17, "{long}");
    }
}
