//! The real kubectl (`/usr/bin/kubectl`, v1.32; scripts/setup.sh installs it) drives a
//! `shardvault serve` daemon unmodified, through the kubeconfig the daemon writes: apply,
//! get in every output form, watch, describe, wait, label, annotate, patch, edit, diff,
//! server-side dry-run, delete with owners taking their children, explain, api-resources,
//! version. Controllers are off: these tests are about the API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardvault_testkit::daemon::Daemon;
use shardvault_testkit::guide;

const KUBECTL: &str = "/usr/bin/kubectl";

/// A daemon without controllers, and the kubeconfig it wrote.
struct Kube {
    d: Daemon,
    kubeconfig: PathBuf,
}

fn start() -> Kube {
    let d = Daemon::start_with(&["--controllers", "none"]);
    let kubeconfig = d.state().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = d.ok(&["kubeconfig", "--path"]);
    assert_eq!(Path::new(path.trim()), kubeconfig);
    Kube { d, kubeconfig }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Kube {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // kubectl caches discovery and OpenAPI under $HOME, and `edit` keeps refused
            // changes in $TMPDIR: both in this test's directory.
            .env("HOME", self.d.state())
            .env("TMPDIR", self.d.state())
            .env_remove("KUBECONFIG")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("kubectl runs")
    }

    /// Runs kubectl, asserts it succeeded, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}\n--- daemon log ---\n{}",
            text(&out.stderr),
            text(&out.stdout),
            self.d.log()
        );
        text(&out.stdout)
    }

    /// Writes `yaml` to a file in the state directory and runs `kubectl ARGS -f FILE`.
    fn with_file(&self, args: &[&str], name: &str, yaml: &str) -> Output {
        let file = self.d.state().join(name);
        std::fs::write(&file, yaml).unwrap();
        let mut a = args.to_vec();
        a.extend(["-f", file.to_str().unwrap()]);
        self.run(&a)
    }

    fn apply(&self, name: &str, yaml: &str) -> String {
        let out = self.with_file(&["apply"], name, yaml);
        assert!(
            out.status.success(),
            "kubectl apply of {name} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json prints JSON")
    }

    /// The guide's cluster and its four backups.
    fn backups(&self) {
        self.apply("cluster.yaml", guide::CLUSTER);
        self.apply("large.yaml", guide::LARGE_CLUSTER);
        self.apply("backups.yaml", &guide::BACKUPS.join("---\n"));
    }

    /// Marks `manual-backup` Completed, as the backup controller would, through the status
    /// subresource.
    fn complete_manual_backup(&self) {
        let status = json!({"status": {
            "process": {"status": "Completed", "timing": {"start": "2024-01-15T05:00:00Z", "end": "2024-01-15T05:45:00Z"}},
            "sgBackups": ["manual-backup-coord", "manual-backup-shard0", "manual-backup-shard1", "manual-backup-shard2"],
            "backupInformation": {"postgresVersion": "15.3", "size": {"compressed": 1073741824u64, "uncompressed": 5368709120u64}},
            "restorePoint": {"name": "manual-backup", "time": "2024-01-15T05:44:00Z", "writePauseMs": 3.5, "barrierAttempts": 1, "members": []},
        }});
        self.ok(&[
            "patch",
            "sgsbk",
            "manual-backup",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }
}

#[test]
fn every_manifest_of_the_guide_applies() {
    let k = start();
    assert_eq!(
        k.apply("storage.yaml", guide::STORAGE),
        "sgobjectstorage.stackgres.io/my-backup-storage created\n"
    );
    k.apply(
        "s3.yaml",
        &guide::STORAGE.replace("my-backup-storage", "s3-backup-storage"),
    );
    k.apply("cluster.yaml", guide::CLUSTER);
    k.apply("large.yaml", guide::LARGE_CLUSTER);
    // The guide's backup settings are fragments of the cluster: applied server-side they
    // are merged into it (a client-side apply would drop what the first apply set).
    let out = k.with_file(
        &["apply", "--server-side"],
        "prereq.yaml",
        guide::PREREQUISITES,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "sgshardedcluster.stackgres.io/my-sharded-cluster serverside-applied\n"
    );
    let c = k.json(&["get", "sgscl", "my-sharded-cluster"]);
    assert_eq!(c["spec"]["shards"]["clusters"], 3);
    assert_eq!(
        c["spec"]["configurations"]["backups"][0]["sgObjectStorage"],
        "my-backup-storage"
    );
    let out = k.with_file(&["apply", "--server-side"], "auto.yaml", guide::AUTOMATED);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = k.json(&["get", "sgscl", "my-sharded-cluster"]);
    let b = &c["spec"]["configurations"]["backups"][0];
    assert_eq!(b["sgObjectStorage"], "s3-backup-storage");
    assert_eq!(b["performance"]["uploadDiskConcurrency"], 2);

    assert_eq!(
        k.apply("backups.yaml", &guide::BACKUPS.join("---\n")),
        "sgshardedbackup.stackgres.io/manual-backup created\n\
         sgshardedbackup.stackgres.io/manual-backup-with-options created\n\
         sgshardedbackup.stackgres.io/auto-managed-backup created\n\
         sgshardedbackup.stackgres.io/large-cluster-backup created\n"
    );
    assert_eq!(
        k.apply("backups.yaml", &guide::BACKUPS.join("---\n"))
            .lines()
            .filter(|l| l.ends_with(" unchanged"))
            .count(),
        4
    );
    // A restore from a backup that has not completed is refused, with the field.
    let early = k.with_file(&["apply"], "restore.yaml", guide::RESTORE);
    assert!(!early.status.success());
    assert!(
        text(&early.stderr).contains("spec.initialData.restore.fromBackup"),
        "{}",
        text(&early.stderr)
    );
    k.complete_manual_backup();
    assert_eq!(
        k.apply("restore.yaml", guide::RESTORE),
        "sgshardedcluster.stackgres.io/restored-sharded-cluster created\n"
    );
    // An unknown field is refused with its path, and nothing is stored.
    let bad = k.with_file(
        &["apply"],
        "bad.yaml",
        &guide::BACKUPS[0]
            .replace("manual-backup", "bad")
            .replace("spec:\n", "spec:\n  nope: 1\n"),
    );
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("nope"), "{}", text(&bad.stderr));
    assert!(!k.run(&["get", "sgsbk", "bad"]).status.success());
}

#[test]
fn get_prints_every_output_form() {
    let k = start();
    k.backups();
    let table = k.ok(&["get", "sgsbk"]);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAME "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("manual-backup ")),
        "{table}"
    );
    assert_eq!(table.lines().count(), 5, "{table}");

    let yaml = k.ok(&["get", "sgsbk", "manual-backup-with-options", "-o", "yaml"]);
    assert!(yaml.contains("  timeout: PT2H\n"), "{yaml}");
    assert!(yaml.contains("kind: SGShardedBackup\n"), "{yaml}");
    let obj = k.json(&["get", "sgsbk", "manual-backup-with-options"]);
    assert_eq!(obj["spec"]["maxRetries"], 3);
    assert_eq!(
        k.ok(&[
            "get",
            "sgsbk",
            "large-cluster-backup",
            "-o",
            "jsonpath={.spec.sgShardedCluster}"
        ]),
        "my-large-sharded-cluster"
    );
    let cols = k.ok(&[
        "get",
        "sgsbk",
        "-o",
        "custom-columns=NAME:.metadata.name,TIMEOUT:.spec.timeout",
        "--sort-by=.metadata.name",
    ]);
    let rows: Vec<Vec<&str>> = cols
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TIMEOUT"]);
    assert!(
        rows.contains(&vec!["large-cluster-backup", "PT6H"]),
        "{cols}"
    );
    assert!(rows.contains(&vec!["manual-backup", "<none>"]), "{cols}");
    let names = k.ok(&["get", "sgshardedbackups", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "sgshardedbackup.stackgres.io/auto-managed-backup",
            "sgshardedbackup.stackgres.io/large-cluster-backup",
            "sgshardedbackup.stackgres.io/manual-backup",
            "sgshardedbackup.stackgres.io/manual-backup-with-options",
        ]
    );

    k.ok(&["label", "sgsbk", "manual-backup", "tier=gold"]);
    assert_eq!(
        k.ok(&["get", "sgsbk", "-l", "tier=gold", "-o", "name"]),
        "sgshardedbackup.stackgres.io/manual-backup\n"
    );
    assert_eq!(
        k.ok(&["get", "sgsbk", "-l", "tier!=gold", "-o", "name"])
            .lines()
            .count(),
        3
    );
    let all = k.ok(&["get", "sgscl", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.contains("\ndefault "), "{all}");
    let none = k.run(&["get", "sgsbk", "missing"]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("\"missing\" not found"),
        "{}",
        text(&none.stderr)
    );
}

#[test]
fn get_watch_prints_a_row_per_change() {
    let k = start();
    k.backups();
    let mut watch = k
        .cmd(&["get", "sgsbk", "manual-backup", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("manual-backup "));
    k.ok(&["label", "sgsbk", "manual-backup", "seen=yes"]);
    assert!(next().starts_with("manual-backup "));
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn describe_wait_and_events() {
    let k = start();
    k.backups();
    let uid = k.ok(&[
        "get",
        "sgsbk",
        "manual-backup",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = json!({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup",
            "name": "manual-backup", "namespace": "default", "uid": uid},
        "type": "Warning", "reason": "Failed", "message": "shard1: connection refused",
        "count": 2, "firstTimestamp": "2024-01-15T05:00:00Z", "lastTimestamp": "2024-01-15T05:00:00Z",
    });
    let out = k.with_file(&["create"], "event.json", &event.to_string());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let desc = k.ok(&["describe", "sgsbk", "manual-backup"]);
    assert!(desc.contains("Name:         manual-backup"), "{desc}");
    assert!(
        desc.contains("Sg Sharded Cluster:  my-sharded-cluster"),
        "{desc}"
    );
    assert!(desc.contains("Events:"), "{desc}");
    assert!(desc.contains("Warning  Failed"), "{desc}");
    assert!(desc.contains("shard1: connection refused"), "{desc}");

    let mut wait = k
        .cmd(&[
            "wait",
            "sgsbk/manual-backup",
            "--for=jsonpath={.status.process.status}=Completed",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        wait.try_wait().unwrap().is_none(),
        "wait ended before the change"
    );
    k.complete_manual_backup();
    let out = wait.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "sgshardedbackup.stackgres.io/manual-backup condition met\n"
    );
}

#[test]
fn label_annotate_patch_and_edit_change_objects() {
    let k = start();
    k.backups();
    k.ok(&["annotate", "sgsbk", "manual-backup", "owner=ops"]);
    let o = k.json(&["get", "sgsbk", "manual-backup"]);
    assert_eq!(o["metadata"]["annotations"]["owner"], "ops");
    // Core kinds take strategic merge patches (kubectl's default for them).
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  key: value\n";
    assert_eq!(k.apply("secret.yaml", secret), "secret/creds created\n");
    assert_eq!(
        k.ok(&["label", "secret", "creds", "team=db"]),
        "secret/creds labeled\n"
    );
    assert_eq!(
        k.ok(&["annotate", "secret", "creds", "note=rotated"]),
        "secret/creds annotated\n"
    );
    let s = k.json(&["get", "secret", "creds"]);
    assert_eq!(s["metadata"]["labels"]["team"], "db");
    assert_eq!(s["data"]["key"], "dmFsdWU=");

    assert_eq!(
        k.ok(&[
            "patch",
            "sgsbk",
            "manual-backup-with-options",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"maxRetries":5}}"#
        ]),
        "sgshardedbackup.stackgres.io/manual-backup-with-options patched\n"
    );
    let o = k.json(&["get", "sgsbk", "manual-backup-with-options"]);
    assert_eq!(o["spec"]["maxRetries"], 5);
    assert_eq!(o["metadata"]["generation"], 2);

    let editor = k.d.state().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/timeout: PT2H/timeout: PT3H/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = k
        .cmd(&["edit", "sgsbk", "manual-backup-with-options"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "sgshardedbackup.stackgres.io/manual-backup-with-options edited\n"
    );
    assert_eq!(
        k.json(&["get", "sgsbk", "manual-backup-with-options"])["spec"]["timeout"],
        "PT3H"
    );
    // An edit that breaks validation is refused (the copy kubectl keeps names the field)
    // and changes nothing.
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/maxRetries: 5/maxRetries: many/' \"$1\"\n",
    )
    .unwrap();
    let out = k
        .cmd(&["edit", "sgsbk", "manual-backup-with-options"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("\"manual-backup-with-options\" is invalid"),
        "{stderr}"
    );
    let copy = stderr
        .split('"')
        .find(|p| p.contains("kubectl-edit-"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let kept = std::fs::read_to_string(copy).unwrap();
    assert!(kept.contains("spec.maxRetries"), "{kept}");
    assert_eq!(
        k.json(&["get", "sgsbk", "manual-backup-with-options"])["spec"]["maxRetries"],
        5
    );
}

#[test]
fn diff_and_server_dry_run_change_nothing() {
    let k = start();
    k.backups();
    let changed = guide::BACKUPS[1].replace("PT2H", "PT4H");
    let out = k.with_file(&["diff"], "changed.yaml", &changed);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff found a change: {}",
        text(&out.stderr)
    );
    let diff = text(&out.stdout);
    assert!(diff.contains("-  timeout: PT2H"), "{diff}");
    assert!(diff.contains("+  timeout: PT4H"), "{diff}");
    let out = k.with_file(&["apply", "--dry-run=server"], "changed.yaml", &changed);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "sgshardedbackup.stackgres.io/manual-backup-with-options configured (server dry run)\n"
    );
    let new = guide::BACKUPS[0].replace("manual-backup", "dry-one");
    let out = k.with_file(&["create", "--dry-run=server"], "new.yaml", &new);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        k.json(&["get", "sgsbk", "manual-backup-with-options"])["spec"]["timeout"],
        "PT2H"
    );
    assert!(!k.run(&["get", "sgsbk", "dry-one"]).status.success());
    let out = k.with_file(&["diff"], "same.yaml", guide::BACKUPS[1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn delete_takes_what_the_owner_owns() {
    let k = start();
    k.backups();
    let uid = k.ok(&[
        "get",
        "sgsbk",
        "manual-backup",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let child = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: child\n  ownerReferences:\n  - apiVersion: stackgres.io/v1\n    kind: SGShardedBackup\n    name: manual-backup\n    uid: {uid}\nstringData:\n  k: v\n"
    );
    k.apply("child.yaml", &child);
    assert_eq!(
        k.ok(&["delete", "sgsbk", "manual-backup"]),
        "sgshardedbackup.stackgres.io \"manual-backup\" deleted\n"
    );
    assert!(!k.run(&["get", "secret", "child"]).status.success());
    assert_eq!(k.ok(&["get", "sgsbk", "-o", "name"]).lines().count(), 3);
    k.ok(&[
        "delete",
        "-f",
        k.d.state().join("backups.yaml").to_str().unwrap(),
        "--ignore-not-found",
    ]);
    assert_eq!(k.ok(&["get", "sgsbk", "-o", "name"]), "");
}

#[test]
fn explain_api_resources_and_version() {
    let k = start();
    let explain = k.ok(&["explain", "sgshardedbackup.spec"]);
    assert!(explain.contains("KIND:       SGShardedBackup"), "{explain}");
    assert!(explain.contains("VERSION:    v1"), "{explain}");
    assert!(explain.contains("sgShardedCluster"), "{explain}");
    let resources = k.ok(&["api-resources"]);
    let row = resources
        .lines()
        .find(|l| l.starts_with("sgshardedbackups "))
        .unwrap_or_else(|| panic!("{resources}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            "sgshardedbackups",
            "sgsbk",
            "stackgres.io/v1",
            "true",
            "SGShardedBackup"
        ]
    );
    assert!(
        resources.lines().any(|l| l.starts_with("secrets ")),
        "{resources}"
    );
    let version = k.ok(&["version"]);
    assert!(version.contains("Client Version: v1.32"), "{version}");
    assert!(
        version.contains("Server Version: v1.32.0+shardvault"),
        "{version}"
    );
}
