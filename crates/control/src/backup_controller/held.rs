//! Deletion protection of a chain's parents: a sharded backup that an incremental still
//! needs keeps its finalizer (as Kubernetes keeps a PersistentVolumeClaim a pod uses) until
//! that incremental is deleted too.

use std::collections::{HashMap, HashSet};

use kube::ResourceExt;
use shardvault_api::shardedbackup::SGShardedBackup;

/// The sharded backup an incremental is over.
pub(super) fn parent(b: &SGShardedBackup) -> Option<&str> {
    b.status
        .as_ref()?
        .backup_information
        .as_ref()?
        .parent
        .as_deref()
}

/// The first backup of `all` (one namespace) that is not being deleted and whose chain of
/// parents reaches `obj`: deleting `obj` would leave it unrestorable.
pub(super) fn needed_by<'a>(
    obj: &SGShardedBackup,
    all: &'a [SGShardedBackup],
) -> Option<&'a SGShardedBackup> {
    let name = obj.name_any();
    let by_name: HashMap<String, &SGShardedBackup> =
        all.iter().map(|b| (b.name_any(), b)).collect();
    let reaches = |b: &SGShardedBackup| {
        let mut seen = HashSet::new();
        let mut at = parent(b);
        while let Some(p) = at {
            if p == name {
                return true;
            }
            if !seen.insert(p) {
                return false;
            }
            at = by_name.get(p).and_then(|b| parent(b));
        }
        false
    };
    all.iter().find(|b| {
        b.metadata.deletion_timestamp.is_none()
            && b.spec.sg_sharded_cluster == obj.spec.sg_sharded_cluster
            && reaches(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, parent: Option<&str>, deleting: bool) -> SGShardedBackup {
        let mut b: SGShardedBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"sgShardedCluster": "shop"},
            "status": {"backupInformation": {"postgresVersion": "15",
                "size": {"compressed": 0, "uncompressed": 0},
                "parent": parent}}
        }))
        .unwrap();
        if deleting {
            b.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        b
    }

    #[test]
    fn a_parent_is_held_while_any_later_link_of_its_chain_stays() {
        let all = [
            backup("full", None, false),
            backup("inc1", Some("full"), true),
            backup("inc2", Some("inc1"), false),
        ];
        // inc2 stays and reaches full through inc1, which is being deleted but held.
        assert_eq!(
            needed_by(&all[0], &all).map(|b| b.name_any()),
            Some("inc2".into())
        );
        assert_eq!(
            needed_by(&all[1], &all).map(|b| b.name_any()),
            Some("inc2".into())
        );
        assert!(needed_by(&all[2], &all).is_none());
        // The whole chain deleted together: nothing holds.
        let gone = [
            backup("full", None, true),
            backup("inc1", Some("full"), true),
            backup("inc2", Some("inc1"), true),
        ];
        assert!(gone.iter().all(|b| needed_by(b, &gone).is_none()));
        // A loop of parents ends.
        let looped = [backup("a", Some("b"), false), backup("b", Some("a"), false)];
        assert!(needed_by(&backup("c", None, false), &looped).is_none());
    }
}
