//! StackGres's API as shardvault serves it: `shardvault crds` prints a CRD per kind with
//! the names, printer columns and every field of the guide's manifests, and a real
//! SGShardedCluster manifest with fields the local runtime does not act on applies, runs,
//! keeps them and says which with a `FieldsNotActedOn` Event; a field StackGres does not
//! have is refused with its path.

use shardvault_testkit::guide;
use std::process::Command;

use serde_json::{Value, json};
use shardvault_testkit::daemon::{Daemon, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardvault")
}

/// `shardvault crds`, parsed: CRD name -> document.
fn crds() -> Vec<Value> {
    let out = Command::new(bin()).arg("crds").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("---\n"), "a YAML stream");
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| yaml_serde::from_str(d).unwrap())
        .collect()
}

fn crd_of<'a>(crds: &'a [Value], kind: &str) -> &'a Value {
    crds.iter()
        .find(|c| c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// The schema below `path` (`spec.a[*].b`), following properties and items; `None` when the
/// schema has no such field. Below a subtree kept as written every path is present.
fn schema_at<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = root;
    for step in path {
        if at["x-kubernetes-preserve-unknown-fields"] == true {
            return Some(at);
        }
        at = if step == "[*]" {
            at.get("items")?
        } else if let Some(p) = at["properties"].get(step) {
            p
        } else {
            at.get("additionalProperties")?
        };
    }
    Some(at)
}

/// Every leaf path of a document (`[*]` for list items).
fn leaf_paths(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                path.push(k.clone());
                leaf_paths(c, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for c in items {
                path.push("[*]".into());
                leaf_paths(c, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

const GUIDE: &[(&str, &str)] = &[
    ("SGShardedCluster", guide::PREREQUISITES),
    ("SGShardedBackup", guide::BACKUPS[0]),
    ("SGShardedBackup", guide::BACKUPS[1]),
    ("SGShardedCluster", guide::AUTOMATED),
    (
        "SGShardedBackup",
        "\
status:
  process:
    status: Completed
    timing:
      start: \"2024-01-15T05:00:00Z\"
      end: \"2024-01-15T05:45:00Z\"
      stored: \"2024-01-15T05:46:00Z\"
  sgBackups:
    - my-sharded-cluster-coord-backup-xxxxx
    - my-sharded-cluster-shard0-backup-xxxxx
    - my-sharded-cluster-shard1-backup-xxxxx
  backupInformation:
    postgresVersion: \"15.3\"
    size:
      compressed: 1073741824
      uncompressed: 5368709120
",
    ),
    ("SGShardedCluster", guide::RESTORE),
    (
        "SGShardedCluster",
        "\
spec:
  initialData:
    restore:
      fromBackup:
        name: manual-backup
        pointInTimeRecovery:
          restoreToTimestamp: \"2024-01-15T10:30:00Z\"
",
    ),
    (
        "SGShardedCluster",
        "\
spec:
  initialData:
    restore:
      fromBackup:
        name: manual-backup
      downloadDiskConcurrency: 2
",
    ),
    ("SGShardedBackup", guide::BACKUPS[2]),
    (
        "SGShardedCluster",
        "\
spec:
  configurations:
    backups:
      - sgObjectStorage: primary-storage
        cronSchedule: '0 5 * * *'
        retention: 7
      - sgObjectStorage: archive-storage
        cronSchedule: '0 0 1 * *'
        retention: 12
        path: /archive
",
    ),
    (
        "SGShardedCluster",
        "\
spec:
  configurations:
    backups:
      - sgObjectStorage: s3-storage
        cronSchedule: '0 5 * * *'
        useVolumeSnapshot: true
        volumeSnapshotClass: csi-snapclass
",
    ),
    (
        "SGShardedCluster",
        "\
spec:
  configurations:
    backups:
      - sgObjectStorage: s3-storage
        performance:
          maxNetworkBandwidth: 200000000
          maxDiskBandwidth: 200000000
          uploadDiskConcurrency: 4
",
    ),
    ("SGShardedBackup", guide::BACKUPS[3]),
    (
        "SGShardedCluster",
        "\
spec:
  configurations:
    backups:
      - sgObjectStorage: primary-region-storage
        cronSchedule: '0 5 * * *'
        retention: 7
      - sgObjectStorage: dr-region-storage
        cronSchedule: '0 6 * * *'
        retention: 7
        path: /disaster-recovery
",
    ),
];

#[test]
fn crds_name_every_kind_with_its_columns_and_the_guides_fields() {
    let crds = crds();
    assert_eq!(crds.len(), 4);
    let expected = [
        (
            "SGObjectStorage",
            "v1beta1",
            "sgobjectstorages",
            "sgobjs",
            false,
        ),
        (
            "SGShardedCluster",
            "v1alpha1",
            "sgshardedclusters",
            "sgscl",
            true,
        ),
        ("SGShardedBackup", "v1", "sgshardedbackups", "sgsbk", true),
        ("SGBackup", "v1", "sgbackups", "sgbkp", true),
    ];
    for (kind, version, plural, short, status) in expected {
        let crd = crd_of(&crds, kind);
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["metadata"]["name"], format!("{plural}.stackgres.io"));
        assert_eq!(crd["spec"]["group"], "stackgres.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["plural"], plural);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!([short]));
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{kind}");
        let v = &versions[0];
        assert_eq!(v["name"], version);
        assert_eq!(
            (v["served"].clone(), v["storage"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(
            v.pointer("/subresources/status").is_some(),
            status,
            "{kind}: status subresource"
        );
        let schema = &v["schema"]["openAPIV3Schema"];
        assert!(
            schema["properties"]["spec"]["properties"].is_object(),
            "{kind}"
        );
    }

    // The columns of `shardvault get`, default then wide (priority 1).
    let columns = [
        (
            "SGShardedBackup",
            vec![
                ("CLUSTER", ".spec.sgShardedCluster", 0),
                ("STATUS", ".status.process.status", 0),
                ("STEP", ".status.progress.phase", 0),
                ("DONE", ".status.progress.bytesDone", 0),
                ("TOTAL", ".status.progress.bytesTotal", 1),
                ("START", ".status.process.timing.start", 0),
                ("END", ".status.process.timing.end", 0),
                ("TYPE", ".status.backupInformation.backupType", 0),
                ("COMPRESSED", ".status.backupInformation.size.compressed", 0),
                (
                    "UNCOMPRESSED",
                    ".status.backupInformation.size.uncompressed",
                    0,
                ),
                ("AGE", ".metadata.creationTimestamp", 0),
                ("MANAGED", ".spec.managedLifecycle", 1),
                ("MEMBERS", ".status.sgBackups", 1),
                ("POSTGRES", ".status.backupInformation.postgresVersion", 1),
                ("RESTORE POINT", ".status.restorePoint.name", 1),
                ("PARENT", ".status.backupInformation.parent", 1),
                ("RESTORE READS", ".status.backupInformation.size.restore", 1),
            ],
        ),
        (
            "SGBackup",
            vec![
                ("CLUSTER", ".spec.sgCluster", 0),
                ("STATUS", ".status.process.status", 0),
                ("STEP", ".status.progress.phase", 0),
                ("DONE", ".status.progress.bytesDone", 0),
                ("TOTAL", ".status.progress.bytesTotal", 1),
                ("START", ".status.process.timing.start", 0),
                ("TYPE", ".status.backupInformation.backupType", 0),
                ("COMPRESSED", ".status.backupInformation.size.compressed", 0),
                ("AGE", ".metadata.creationTimestamp", 0),
                (
                    "UNCOMPRESSED",
                    ".status.backupInformation.size.uncompressed",
                    1,
                ),
                ("LSN START", ".status.backupInformation.lsn.start", 1),
                ("LSN END", ".status.backupInformation.lsn.end", 1),
                ("TIMELINE", ".status.backupInformation.timeline", 1),
                ("PARENT", ".status.backupInformation.parent", 1),
                ("RESTORE READS", ".status.backupInformation.size.restore", 1),
            ],
        ),
        (
            "SGShardedCluster",
            vec![
                ("TYPE", ".spec.type", 0),
                ("SHARDS", ".spec.shards.clusters", 0),
                (
                    "READY",
                    ".status.conditions[?(@.type==\"Ready\")].status",
                    0,
                ),
                ("AGE", ".metadata.creationTimestamp", 0),
                ("VERSION", ".spec.postgres.version", 1),
                ("DATABASE", ".spec.database", 1),
                ("COORDINATORS", ".spec.coordinator.instances", 1),
                ("INSTANCES/SHARD", ".spec.shards.instancesPerCluster", 1),
                (
                    "BACKUPS",
                    ".spec.configurations.backups[*].sgObjectStorage",
                    1,
                ),
            ],
        ),
        (
            "SGObjectStorage",
            vec![
                ("TYPE", ".spec.type", 0),
                ("BUCKET", ".spec.*.bucket", 0),
                ("PATH", ".spec.filesystem.path", 0),
                ("AGE", ".metadata.creationTimestamp", 0),
                ("ENCRYPTION", ".spec.encryption.method", 1),
            ],
        ),
    ];
    for (kind, want) in columns {
        let got: Vec<(String, String, i64)> =
            crd_of(&crds, kind)["spec"]["versions"][0]["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        c["jsonPath"].as_str().unwrap().to_string(),
                        c["priority"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
        let want: Vec<(String, String, i64)> = want
            .into_iter()
            .map(|(n, p, prio)| (n.to_string(), p.to_string(), prio))
            .collect();
        assert_eq!(got, want, "{kind}");
    }

    // Every field of every manifest in the guide (and the storage tests use) is in a schema.
    let storage = filesystem_storage("store", std::path::Path::new("/var/backups/x"));
    let backup = sharded_backup("b", "c", &["maxRetries: 3", "timeout: 8"]);
    let docs = GUIDE.iter().copied().chain([
        ("SGObjectStorage", storage.as_str()),
        ("SGShardedBackup", backup.as_str()),
    ]);
    let mut checked = 0;
    for (kind, yaml) in docs {
        let doc: Value = yaml_serde::from_str(yaml).unwrap();
        let schema = &crd_of(&crds, kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut paths = Vec::new();
        leaf_paths(&doc, &mut Vec::new(), &mut paths);
        for path in paths.iter().filter(|p| p[0] == "spec" || p[0] == "status") {
            assert!(
                schema_at(schema, path).is_some(),
                "{kind} has no field {}:\n{yaml}",
                path.join(".")
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked} fields checked");
    // And one that no manifest has is not (the check can fail).
    let schema =
        &crd_of(&crds, "SGShardedCluster")["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(schema_at(schema, &["spec".into(), "noSuchField".into()]).is_none());
}

/// A StackGres SGShardedCluster with fields the local runtime keeps but does not act on.
fn stackgres_cluster() -> Value {
    let mut doc: Value = yaml_serde::from_str(&DdpCluster::new("c").shards(1).yaml()).unwrap();
    let spec = doc["spec"].as_object_mut().unwrap();
    spec.insert("profile".into(), json!("development"));
    spec.insert(
        "postgresServices".into(),
        json!({"coordinator": {"any": {"enabled": true, "type": "ClusterIP"},
                               "primary": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.7"}},
               "shards": {"primaries": {"enabled": false}}}),
    );
    spec.insert(
        "nonProductionOptions".into(),
        json!({"disableClusterPodAntiAffinity": true, "enabledFeatureGates": ["babelfish-flavor"]}),
    );
    let coordinator = spec["coordinator"].as_object_mut().unwrap();
    coordinator.insert("sgInstanceProfile".into(), json!("size-s"));
    coordinator.insert(
        "configurations".into(),
        json!({"sgPostgresConfig": "pgconfig-coord", "sgPoolingConfig": "poolconfig"}),
    );
    coordinator.insert(
        "pods".into(),
        json!({"persistentVolume": {"size": "1Gi", "storageClass": "standard"},
               "scheduling": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "pg", "effect": "NoSchedule"}],
                              "nodeSelector": {"disktype": "ssd"}}}),
    );
    let shards = spec["shards"].as_object_mut().unwrap();
    shards.insert("sgInstanceProfile".into(), json!("size-m"));
    shards.insert(
        "pods".into(),
        json!({"persistentVolume": {"size": "2Gi"},
               "resources": {"containers": {"patroni": {"limits": {"cpu": "2", "memory": "2Gi"}}}}}),
    );
    shards.insert(
        "overrides".into(),
        json!([{"index": 0, "sgInstanceProfile": "size-l", "pods": {"disableEnvoy": true}}]),
    );
    doc
}

fn yaml(doc: &Value) -> String {
    yaml_serde::to_string(doc).unwrap()
}

#[test]
fn a_stackgres_cluster_manifest_applies_runs_keeps_its_fields_and_says_what_is_not_acted_on() {
    let d = Daemon::start();
    let cluster = stackgres_cluster();
    assert_eq!(
        d.apply(&yaml(&cluster)),
        "sgshardedcluster.stackgres.io/c created\n"
    );
    let running = d.wait_until("sgshardedcluster", "c", 180, ready);
    assert_eq!(
        running["spec"], cluster["spec"],
        "every field is kept as written"
    );

    let events = d.json(&["get", "events"]);
    let messages: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "FieldsNotActedOn" && e["involvedObject"]["name"] == "c")
        .map(|e| {
            assert_eq!(e["type"], "Normal");
            assert_eq!(e["count"], 1, "said once, not every reconcile: {e:#}");
            e["message"].as_str().unwrap()
        })
        .collect();
    assert_eq!(messages.len(), 1, "one Event: {events:#}");
    for field in [
        "spec.profile",
        "spec.postgresServices",
        "spec.nonProductionOptions",
        "spec.coordinator.sgInstanceProfile",
        "spec.coordinator.configurations",
        "spec.coordinator.pods",
        "spec.shards.sgInstanceProfile",
        "spec.shards.overrides",
    ] {
        assert!(messages[0].contains(field), "{field} in {}", messages[0]);
    }
    assert!(
        !messages[0].contains("spec.shards.clusters"),
        "{}",
        messages[0]
    );

    // A field no StackGres CRD has is refused with its path, and nothing changes.
    let mut typo = cluster.clone();
    typo["spec"]["coordinator"]["configurations"]["sgPostgresConfg"] = json!("x");
    let out = d.sv_in(&["apply", "-f", "-"], &yaml(&typo));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.coordinator.configurations.sgPostgresConfg: unknown field"),
        "{stderr}"
    );
    let after = d.json(&["get", "sgscl", "c"]);
    assert_eq!(after["spec"], cluster["spec"]);
}
