//! The CustomResourceDefinitions of the StackGres kinds, generated from the typed resources.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Kind, SGBackup, SGObjectStorage, SGShardedBackup, SGShardedCluster};

/// Every CRD shardvault serves, in `Kind::ALL` order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        SGObjectStorage::crd(),
        SGShardedCluster::crd(),
        SGShardedBackup::crd(),
        SGBackup::crd(),
    ]
}

/// The CRD of a kind (`None` for the core kinds Secret and Event).
pub fn crd(kind: Kind) -> Option<CustomResourceDefinition> {
    match kind {
        Kind::SGObjectStorage => Some(SGObjectStorage::crd()),
        Kind::SGShardedCluster => Some(SGShardedCluster::crd()),
        Kind::SGShardedBackup => Some(SGShardedBackup::crd()),
        Kind::SGBackup => Some(SGBackup::crd()),
        Kind::Secret | Kind::Event => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stackgres_kind_has_its_crd_with_names_and_status() {
        let all = crds();
        assert_eq!(all.len(), 4);
        for kind in Kind::ALL {
            let Some(crd) = crd(kind) else {
                assert!(kind.group().is_empty(), "{kind} has no CRD");
                continue;
            };
            let names = &crd.spec.names;
            assert_eq!(crd.spec.group, kind.group());
            assert_eq!(names.kind, kind.name());
            assert_eq!(names.plural, kind.plural());
            assert_eq!(
                names.short_names.as_deref(),
                Some(&[kind.short_name().unwrap().to_string()][..])
            );
            assert_eq!(crd.spec.scope, "Namespaced");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, kind.version());
            let has_status = version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some());
            assert_eq!(has_status, kind != Kind::SGObjectStorage, "{kind}");
            assert!(all.contains(&crd));
        }
    }
}
