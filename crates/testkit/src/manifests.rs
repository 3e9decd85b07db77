//! Manifests tests apply, built instead of pasted: the storage, cluster and backup shapes the
//! guide uses, with the few knobs tests turn.

use std::path::Path;

/// An SGObjectStorage of our `filesystem` type.
pub fn filesystem_storage(name: &str, path: &Path) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: {name}
spec:
  type: filesystem
  filesystem:
    path: {}
",
        path.display()
    )
}

/// An SGShardedBackup of `cluster`, with `extra` lines (indented two spaces) under `spec`.
pub fn sharded_backup(name: &str, cluster: &str, extra: &[&str]) -> String {
    let mut doc = format!(
        "apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: {name}
spec:
  sgShardedCluster: {cluster}
"
    );
    for line in extra {
        doc.push_str(&format!("  {line}\n"));
    }
    doc
}

/// `doc` (one manifest whose `metadata:` has no annotations yet) with annotation `key: value`.
pub fn with_annotation(doc: &str, key: &str, value: &str) -> String {
    doc.replacen(
        "metadata:\n",
        &format!("metadata:\n  annotations:\n    {key}: '{value}'\n"),
        1,
    )
}

/// An SGShardedCluster of type ddp: PostgreSQL 15, database `app`, one coordinator and shards
/// of one server each.
#[derive(Debug, Clone)]
pub struct DdpCluster {
    name: String,
    shards: u32,
    backups_to: Option<String>,
    compression: Option<String>,
    entry_lines: Vec<String>,
    annotations: Vec<(String, String)>,
    restored_from: Option<String>,
}

impl DdpCluster {
    /// Cluster `name` with 2 shards, no backups, nothing restored.
    pub fn new(name: &str) -> DdpCluster {
        DdpCluster {
            name: name.to_string(),
            shards: 2,
            backups_to: None,
            compression: None,
            entry_lines: Vec::new(),
            annotations: Vec::new(),
            restored_from: None,
        }
    }

    /// With `n` shard clusters.
    pub fn shards(mut self, n: u32) -> DdpCluster {
        self.shards = n;
        self
    }

    /// With one `backups[]` entry to SGObjectStorage `storage`.
    pub fn backups_to(mut self, storage: &str) -> DdpCluster {
        self.backups_to = Some(storage.to_string());
        self
    }

    /// With `compression` in its `backups[]` entry.
    pub fn compression(mut self, compression: &str) -> DdpCluster {
        self.compression = Some(compression.to_string());
        self
    }

    /// With `line` (YAML, such as `retention: 1`) in its `backups[]` entry.
    pub fn entry_line(mut self, line: &str) -> DdpCluster {
        self.entry_lines.push(line.to_string());
        self
    }

    /// With annotation `key: value`.
    pub fn annotation(mut self, key: &str, value: &str) -> DdpCluster {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }

    /// Restored from SGShardedBackup `backup` (`initialData.restore.fromBackup.name`).
    pub fn restored_from(mut self, backup: &str) -> DdpCluster {
        self.restored_from = Some(backup.to_string());
        self
    }

    /// The manifest.
    pub fn yaml(&self) -> String {
        let mut doc = format!(
            "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata:\n  name: {}\n",
            self.name
        );
        if !self.annotations.is_empty() {
            doc.push_str("  annotations:\n");
            for (k, v) in &self.annotations {
                doc.push_str(&format!("    {k}: '{v}'\n"));
            }
        }
        doc.push_str(&format!(
            "spec:
  type: ddp
  database: app
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: {}
    instancesPerCluster: 1
",
            self.shards
        ));
        if let Some(storage) = &self.backups_to {
            doc.push_str(&format!(
                "  configurations:\n    backups:\n      - sgObjectStorage: {storage}\n"
            ));
            if let Some(c) = &self.compression {
                doc.push_str(&format!("        compression: {c}\n"));
            }
            for line in &self.entry_lines {
                doc.push_str(&format!("        {line}\n"));
            }
        }
        if let Some(backup) = &self.restored_from {
            doc.push_str(&format!(
                "  initialData:\n    restore:\n      fromBackup:\n        name: {backup}\n"
            ));
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_manifests_validate() {
        let docs = [
            filesystem_storage("store", Path::new("/var/backups/x")),
            sharded_backup("b", "c", &["maxRetries: 3", "timeout: 8"]),
            with_annotation(
                &sharded_backup("i", "c", &[]),
                "shardvault.io/backup-type",
                "incremental",
            ),
            DdpCluster::new("c")
                .shards(1)
                .backups_to("store")
                .compression("zstd")
                .entry_line("retention: 2")
                .entry_line("incremental: {fullEvery: 3, maxChainSizePercent: 50}")
                .annotation("shardvault.io/restore-point-schedule", "0 * * * *")
                .yaml(),
            DdpCluster::new("r").restored_from("b").yaml(),
        ];
        for doc in docs {
            let value: serde_json::Value = yaml_serde::from_str(&doc).unwrap();
            shardvault_api::validate(&value).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        }
    }
}
