//! The kinds of resource shardvault knows, and the names the CLI accepts for them.

use std::fmt;

/// A kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Where backups are stored (`stackgres.io/v1beta1`).
    SGObjectStorage,
    /// A sharded cluster (`stackgres.io/v1alpha1`).
    SGShardedCluster,
    /// A backup of a whole sharded cluster (`stackgres.io/v1`).
    SGShardedBackup,
    /// A backup of one member cluster (`stackgres.io/v1`).
    SGBackup,
    /// Credentials and keys (`v1`).
    Secret,
    /// Something that happened to an object (`v1`).
    Event,
}

impl Kind {
    /// Every kind, in display order.
    pub const ALL: [Kind; 6] = [
        Kind::SGObjectStorage,
        Kind::SGShardedCluster,
        Kind::SGShardedBackup,
        Kind::SGBackup,
        Kind::Secret,
        Kind::Event,
    ];

    /// The kind's name as written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SGObjectStorage => "SGObjectStorage",
            Kind::SGShardedCluster => "SGShardedCluster",
            Kind::SGShardedBackup => "SGShardedBackup",
            Kind::SGBackup => "SGBackup",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
        }
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Event => "",
            _ => "stackgres.io",
        }
    }

    /// The version within the group.
    pub fn version(self) -> &'static str {
        match self {
            Kind::SGObjectStorage => "v1beta1",
            Kind::SGShardedCluster => "v1alpha1",
            Kind::SGShardedBackup | Kind::SGBackup | Kind::Secret | Kind::Event => "v1",
        }
    }

    /// `apiVersion` as written in manifests.
    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_string(),
            g => format!("{g}/{}", self.version()),
        }
    }

    /// Lower-case plural, as in URL paths (`sgshardedbackups`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::SGObjectStorage => "sgobjectstorages",
            Kind::SGShardedCluster => "sgshardedclusters",
            Kind::SGShardedBackup => "sgshardedbackups",
            Kind::SGBackup => "sgbackups",
            Kind::Secret => "secrets",
            Kind::Event => "events",
        }
    }

    /// Short name, as kubectl accepts it.
    pub fn short_name(self) -> Option<&'static str> {
        match self {
            Kind::SGObjectStorage => Some("sgobjs"),
            Kind::SGShardedCluster => Some("sgscl"),
            Kind::SGShardedBackup => Some("sgsbk"),
            Kind::SGBackup => Some("sgbkp"),
            Kind::Secret => None,
            Kind::Event => Some("ev"),
        }
    }

    /// `resource.group` as kubectl prints it (`sgshardedbackup.stackgres.io`).
    pub fn qualified(self) -> String {
        let singular = self.name().to_ascii_lowercase();
        match self.group() {
            "" => singular,
            g => format!("{singular}.{g}"),
        }
    }

    /// Finds a kind by plural, singular, short name or Kind, in any case, with an optional
    /// `.stackgres.io` suffix.
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let bare = lower
            .strip_suffix(".stackgres.io")
            .unwrap_or(&lower)
            .to_string();
        Kind::ALL.into_iter().find(|k| {
            bare == k.plural()
                || bare == k.name().to_ascii_lowercase()
                || Some(bare.as_str()) == k.short_name()
        })
    }

    /// Finds a kind from `apiVersion` and `kind` of a manifest.
    pub fn from_manifest(api_version: &str, kind: &str) -> Result<Kind, String> {
        let k = Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind)
            .ok_or_else(|| {
                format!(
                    "unknown kind {kind:?}: shardvault knows {}",
                    Kind::ALL.map(|k| k.name()).join(", ")
                )
            })?;
        if k.api_version() != api_version {
            return Err(format!(
                "kind {kind} is served as apiVersion {:?}, not {api_version:?}",
                k.api_version()
            ));
        }
        Ok(k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_resolve() {
        for (n, k) in [
            ("sgsbk", Kind::SGShardedBackup),
            ("SGShardedBackup", Kind::SGShardedBackup),
            ("sgshardedbackups", Kind::SGShardedBackup),
            ("sgbackup.stackgres.io", Kind::SGBackup),
            ("sgobjs", Kind::SGObjectStorage),
            ("SGSCL", Kind::SGShardedCluster),
            ("secret", Kind::Secret),
        ] {
            assert_eq!(Kind::from_cli_name(n), Some(k), "{n}");
        }
        assert_eq!(Kind::from_cli_name("pods"), None);
    }

    #[test]
    fn manifest_kinds_check_api_version() {
        assert_eq!(
            Kind::from_manifest("stackgres.io/v1alpha1", "SGShardedCluster"),
            Ok(Kind::SGShardedCluster)
        );
        assert!(Kind::from_manifest("stackgres.io/v1", "SGShardedCluster").is_err());
        assert!(Kind::from_manifest("v1", "Pod").is_err());
    }
}
