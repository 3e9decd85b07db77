//! The fields of an SGShardedCluster the local runtime keeps but does not act on.

use serde_json::Value;

use crate::shardedcluster::ShardedClusterSpec;

/// Paths of the SGShardedCluster fields the local runtime acts on (`[*]`: every item);
/// everything below a listed path counts as acted on.
const ACTED_ON: &[&str] = &[
    "spec.type",
    "spec.database",
    "spec.postgres.version",
    "spec.coordinator.instances",
    "spec.shards.clusters",
    "spec.shards.instancesPerCluster",
    "spec.configurations.backups[*].sgObjectStorage",
    "spec.configurations.backups[*].cronSchedule",
    "spec.configurations.backups[*].retention",
    "spec.configurations.backups[*].compression",
    "spec.configurations.backups[*].path",
    "spec.configurations.backups[*].paths",
    "spec.configurations.backups[*].performance",
    "spec.configurations.backups[*].useVolumeSnapshot",
    "spec.configurations.backups[*].volumeSnapshotClass",
    "spec.configurations.backups[*].fastVolumeSnapshot",
    "spec.configurations.backups[*].timeout",
    "spec.configurations.backups[*].maxRetries",
    "spec.configurations.backups[*].retainWalsForUnmanagedLifecycle",
    "spec.initialData",
];

/// The set fields of a sharded cluster spec the local runtime does not act on, each as the
/// highest such path (`spec.postgresServices`, `spec.coordinator.sgInstanceProfile`,
/// `spec.configurations.backups[0].reconciliationTimeout`), sorted.
pub fn ignored_fields(spec: &ShardedClusterSpec) -> Vec<String> {
    let value = serde_json::to_value(spec).expect("a spec serializes to JSON");
    let mut out = Vec::new();
    walk(&value, "spec", &mut out);
    out
}

/// The message of the `FieldsNotActedOn` Event for a spec, if any field is not acted on.
pub fn not_acted_on_message(spec: &ShardedClusterSpec) -> Option<String> {
    let fields = ignored_fields(spec);
    (!fields.is_empty()).then(|| {
        format!(
            "kept but not acted on by the local runtime: {}",
            fields.join(", ")
        )
    })
}

fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
    let pattern = pattern_of(path);
    if ACTED_ON.contains(&pattern.as_str()) {
        return;
    }
    let leads_to_acted = ACTED_ON.iter().any(|p| {
        p.strip_prefix(pattern.as_str())
            .is_some_and(|rest| rest.starts_with(['.', '[']))
    });
    match value {
        Value::Object(map) if leads_to_acted => {
            for (key, child) in map {
                walk(child, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) if leads_to_acted => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

/// `backups[0].x` as `backups[*].x`.
fn pattern_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShardedClusterSpec {
        yaml_serde::from_str(yaml).unwrap()
    }

    const BASE: &str = "postgres: {version: '15'}\ncoordinator: {instances: 1}\n\
                        shards: {clusters: 2, instancesPerCluster: 1}\n";

    #[test]
    fn what_the_runtime_acts_on_is_never_listed() {
        let s = spec(&format!(
            "{BASE}type: ddp\ndatabase: app\nconfigurations:\n  backups:\n  - sgObjectStorage: s\n    \
             cronSchedule: '0 1 * * *'\n    retention: 3\n    compression: zstd\n    \
             performance: {{uploadConcurrency: 2}}\n    timeout: 600\n    maxRetries: 1\n\
             initialData: {{restore: {{fromBackup: {{name: b}}, downloadDiskConcurrency: 2}}}}\n"
        ));
        assert_eq!(ignored_fields(&s), Vec::<String>::new());
        assert_eq!(not_acted_on_message(&s), None);
    }

    #[test]
    fn stackgres_fields_are_listed_at_their_highest_path() {
        let s = spec(
            "postgres: {version: '15'}\nshards: {clusters: 2, instancesPerCluster: 1}\n\
             profile: development\n\
             postgresServices: {coordinator: {any: {type: ClusterIP}}}\n\
             nonProductionOptions: {disableClusterPodAntiAffinity: true}\n\
             coordinator:\n  instances: 2\n  sgInstanceProfile: size-s\n  \
             configurations: {sgPostgresConfig: pgconfig}\n  \
             pods: {persistentVolume: {size: 1Gi}}\n\
             configurations:\n  observability: {prometheusAutobind: true}\n  backups:\n  \
             - {sgObjectStorage: s, volumeSnapshotClass: csi, reconciliationTimeout: 60}\n",
        );
        assert_eq!(
            ignored_fields(&s),
            [
                "spec.configurations.backups[0].reconciliationTimeout",
                "spec.configurations.observability",
                "spec.coordinator.configurations",
                "spec.coordinator.pods",
                "spec.coordinator.sgInstanceProfile",
                "spec.nonProductionOptions",
                "spec.postgresServices",
                "spec.profile",
            ]
        );
        let message = not_acted_on_message(&s).unwrap();
        assert!(
            message.starts_with(
                "kept but not acted on by the local runtime: spec.configurations.backups[0]"
            ),
            "{message}"
        );
    }

    #[test]
    fn indexes_become_wildcards() {
        assert_eq!(pattern_of("spec.a[12].b[0]"), "spec.a[*].b[*]");
        assert_eq!(pattern_of("spec.a"), "spec.a");
    }
}
