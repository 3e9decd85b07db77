//! The control plane end to end: the real `shardvault` binary against a daemon in a
//! temporary state directory (controllers off, so no PostgreSQL is started).

use shardvault_testkit::guide::{
    self, AUTOMATED as SPEC_AUTOMATED, CLUSTER, LARGE_CLUSTER, PREREQUISITES as SPEC_PREREQUISITES,
    RESTORE as SPEC_RESTORE, STORAGE,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardvault_testkit::daemon::Daemon;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardvault")
}

/// A daemon with its controllers off (so no PostgreSQL is started) and extra `serve` args.
fn daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--controllers", "none"];
    args.extend_from_slice(extra);
    Daemon::start_with(&args)
}

/// Everything stored, for before/after comparisons.
fn everything(d: &Daemon) -> Value {
    d.json(&["get", "sgobjs,sgscl,sgsbk,sgbkp,secret,ev", "-A"])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One raw HTTP/1.1 request over the daemon's socket: (status, JSON body).
fn http(state: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let Ok(mut s) = UnixStream::connect(state.join("shardvault.sock")) else {
        return (0, Value::Null);
    };
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let payload = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// Manifests as one YAML stream.
fn stream(docs: &[&str]) -> String {
    docs.join("---\n")
}

/// The guide's SGShardedBackups as one YAML stream.
fn spec_backups() -> String {
    stream(&guide::BACKUPS)
}

#[test]
fn spec_manifests_apply_and_read_back() {
    let d = daemon(&[]);
    d.apply(STORAGE);
    d.apply(&STORAGE.replace("my-backup-storage", "s3-backup-storage"));
    assert_eq!(
        d.apply(CLUSTER),
        "sgshardedcluster.stackgres.io/my-sharded-cluster created\n"
    );
    // The guide's first manifest sets only backups: they are added, nothing is dropped.
    assert_eq!(
        d.apply(SPEC_PREREQUISITES),
        "sgshardedcluster.stackgres.io/my-sharded-cluster configured\n"
    );
    let c = d.json(&["get", "sgscl", "my-sharded-cluster"]);
    assert_eq!(c["spec"]["shards"]["clusters"], 3);
    assert_eq!(
        c["spec"]["coordinator"]["pods"]["persistentVolume"]["size"],
        "20Gi"
    );
    assert_eq!(
        c["spec"]["configurations"]["backups"][0]["cronSchedule"],
        "0 5 * * *"
    );
    assert_eq!(c["spec"]["configurations"]["backups"][0]["retention"], 7);
    assert_eq!(c["metadata"]["generation"], 2);
    assert_eq!(
        d.apply(SPEC_PREREQUISITES),
        "sgshardedcluster.stackgres.io/my-sharded-cluster unchanged\n"
    );

    d.apply(SPEC_AUTOMATED);
    let c = d.json(&["get", "sgscl/my-sharded-cluster"]);
    let b = &c["spec"]["configurations"]["backups"][0];
    assert_eq!(b["sgObjectStorage"], "s3-backup-storage");
    assert_eq!(b["performance"]["uploadDiskConcurrency"], 2);
    assert_eq!(c["spec"]["database"], "sharded");

    d.apply(LARGE_CLUSTER);
    assert_eq!(
        d.apply(&spec_backups()),
        "sgshardedbackup.stackgres.io/manual-backup created\n\
         sgshardedbackup.stackgres.io/manual-backup-with-options created\n\
         sgshardedbackup.stackgres.io/auto-managed-backup created\n\
         sgshardedbackup.stackgres.io/large-cluster-backup created\n"
    );
    let o = d.json(&["get", "sgsbk", "manual-backup-with-options"]);
    assert_eq!(
        o["spec"],
        json!({"sgShardedCluster": "my-sharded-cluster", "managedLifecycle": false, "timeout": "PT2H", "maxRetries": 3})
    );
    assert_eq!(
        d.json(&["get", "sgsbk", "large-cluster-backup"])["spec"]["timeout"],
        "PT6H"
    );
    complete_manual_backup(&d);
    d.apply(SPEC_RESTORE);
    let r = d.json(&["get", "SGShardedCluster", "restored-sharded-cluster"]);
    assert_eq!(
        r["spec"]["initialData"]["restore"]["fromBackup"]["name"],
        "manual-backup"
    );
    assert_eq!(
        r["spec"]["shards"]["pods"]["persistentVolume"]["size"],
        "50Gi"
    );
    // Integer-second timeouts are accepted too.
    d.apply("apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: secs}\nspec: {sgShardedCluster: my-sharded-cluster, timeout: 7200}\n");
    let names = d.ok(&["get", "sgsbk", "-o", "name"]);
    assert_eq!(names.lines().count(), 5, "{names}");
}

#[test]
fn get_describe_delete_in_every_form() {
    let d = daemon(&[]);
    d.apply(&stream(&[STORAGE, CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    d.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: prod}\nstringData: {accessKeyId: AKIAEXAMPLE, secretAccessKey: very-secret-value}\n");
    for kind in [
        "sgsbk",
        "SGShardedBackup",
        "sgshardedbackups",
        "sgshardedbackup.stackgres.io",
        "SGSBK",
    ] {
        let out = d.ok(&["get", kind, "manual-backup", "-o", "name"]);
        assert_eq!(
            out, "sgshardedbackup.stackgres.io/manual-backup\n",
            "{kind}"
        );
    }
    let out = d.ok(&[
        "get",
        "sgsbk/manual-backup",
        "sgobjs/my-backup-storage",
        "-o",
        "name",
    ]);
    assert_eq!(
        out,
        "sgshardedbackup.stackgres.io/manual-backup\nsgobjectstorage.stackgres.io/my-backup-storage\n"
    );
    assert_eq!(d.ok(&["get", "secret", "-o", "name"]), "");
    assert_eq!(
        d.ok(&["get", "secret", "-n", "prod", "-o", "name"]),
        "secret/creds\n"
    );
    let all = d.ok(&["get", "secret,sgobjs", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("prod        secret/creds"), "{all}");

    // Secret values appear only when that secret itself is asked for.
    for args in [
        vec!["get", "secret", "-A", "-o", "yaml"],
        vec!["get", "secret", "-A"],
        vec!["describe", "secret", "creds", "-n", "prod"],
        vec!["get", "sgobjs,secret", "-A", "-o", "json"],
    ] {
        let out = d.ok(&args);
        assert!(
            !out.contains("dmVyeS1zZWNyZXQtdmFsdWU") && !out.contains("very-secret-value"),
            "{args:?}: {out}"
        );
    }
    let own = d.ok(&["get", "secret", "creds", "-n", "prod", "-o", "yaml"]);
    assert!(own.contains("dmVyeS1zZWNyZXQtdmFsdWU="), "{own}");
    assert!(
        d.ok(&["describe", "secret", "creds", "-n", "prod"])
            .contains("secretAccessKey:  17 bytes")
    );

    let desc = d.ok(&["describe", "sgscl", "my-sharded-cluster"]);
    for want in [
        "Name:         my-sharded-cluster",
        "Kind:         SGShardedCluster (stackgres.io/v1alpha1)",
        "instancesPerCluster: 2",
        "Events:       <none>",
    ] {
        assert!(desc.contains(want), "{want:?} not in:\n{desc}");
    }
    let missing = d.sv(&["get", "sgsbk", "nope"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("\"nope\" not found"),
        "{}",
        text(&missing.stderr)
    );
    let unknown = d.sv(&["get", "pods"]);
    assert!(text(&unknown.stderr).contains("unknown resource type \"pods\""));

    assert_eq!(
        d.ok(&["delete", "sgsbk", "manual-backup"]),
        "sgshardedbackup.stackgres.io \"manual-backup\" deleted\n"
    );
    assert!(!d.sv(&["get", "sgsbk", "manual-backup"]).status.success());
    let file = d.state().join("b.yaml");
    std::fs::write(&file, spec_backups()).unwrap();
    let out = d.sv(&["delete", "-f", file.to_str().unwrap(), "--wait"]);
    assert!(!out.status.success(), "manual-backup is already gone");
    assert_eq!(text(&out.stdout).lines().count(), 3);
    assert_eq!(d.ok(&["get", "sgsbk", "-o", "name"]), "");
    let wait = d.sv(&[
        "wait",
        "sgscl/my-sharded-cluster",
        "--for=jsonpath={.spec.database}=sharded",
        "--timeout=5s",
    ]);
    assert_eq!(
        text(&wait.stdout),
        "sgshardedcluster.stackgres.io/my-sharded-cluster condition met\n"
    );
    let wait = d.sv(&[
        "wait",
        "sgscl/my-sharded-cluster",
        "--for=jsonpath='{.status.process.status}'=Completed",
        "--timeout=1s",
    ]);
    assert!(!wait.status.success());
    assert!(
        text(&wait.stderr).contains("timed out"),
        "{}",
        text(&wait.stderr)
    );
}

#[test]
fn label_selectors_filter() {
    let d = daemon(&[]);
    let mut docs = Vec::new();
    for (name, sb, tier) in [
        ("a-coord", "a", "gold"),
        ("a-shard0", "a", "silver"),
        ("b-coord", "b", "gold"),
        ("c-coord", "", ""),
    ] {
        let mut labels = String::new();
        if !sb.is_empty() {
            labels =
                format!("  labels:\n    stackgres.io/shardedbackup-name: {sb}\n    tier: {tier}\n");
        }
        docs.push(format!("apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata:\n  name: {name}\n{labels}spec:\n  sgCluster: x-coord\n"));
    }
    d.apply(&docs.join("---\n"));
    let sel = |s: &str| {
        d.ok(&["get", "sgbkp", "-l", s, "-o", "name"])
            .replace("sgbackup.stackgres.io/", "")
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sel("stackgres.io/shardedbackup-name=a"),
        ["a-coord", "a-shard0"]
    );
    assert_eq!(sel("stackgres.io/shardedbackup-name==b"), ["b-coord"]);
    assert_eq!(sel("tier!=gold"), ["a-shard0", "c-coord"]);
    assert_eq!(sel("tier in (gold,bronze)"), ["a-coord", "b-coord"]);
    assert_eq!(sel("tier notin (gold)"), ["a-shard0", "c-coord"]);
    assert_eq!(sel("tier"), ["a-coord", "a-shard0", "b-coord"]);
    assert_eq!(sel("!tier"), ["c-coord"]);
    assert_eq!(
        sel("tier=gold,stackgres.io/shardedbackup-name=a"),
        ["a-coord"]
    );
    let bad = d.sv(&["get", "sgbkp", "-l", "tier in (gold"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("label selector"),
        "{}",
        text(&bad.stderr)
    );
    // The same selector works on the HTTP API, and a watch streams changes as JSON lines.
    let (code, list) = http(
        d.state(),
        "GET",
        "/apis/stackgres.io/v1/namespaces/default/sgbackups?labelSelector=tier%3Dgold",
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(&["delete", "sgbkp", "a-coord"]);
    let mut s = UnixStream::connect(d.state().join("shardvault.sock")).unwrap();
    write!(s, "GET /apis/stackgres.io/v1/sgbackups?watch=true&resourceVersion={version} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = String::new();
    while !line.contains("\"DELETED\"") {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(Instant::now() < deadline);
    }
    assert!(line.contains("a-coord"), "{line}");
}

#[test]
fn deleting_an_owner_deletes_what_it_owns() {
    let d = daemon(&[]);
    d.apply(&stream(&[CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    let owner = d.json(&["get", "sgsbk", "manual-backup"]);
    let uid = owner["metadata"]["uid"].as_str().unwrap();
    let member = |name: &str| {
        format!(
            "apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata:\n  name: {name}\n  labels: {{stackgres.io/shardedbackup-name: manual-backup}}\n  ownerReferences:\n  - {{apiVersion: stackgres.io/v1, kind: SGShardedBackup, name: manual-backup, uid: {uid}, controller: true}}\nspec:\n  sgCluster: my-sharded-cluster-coord\n"
        )
    };
    d.apply(&format!(
        "{}---\n{}",
        member("manual-backup-coord"),
        member("manual-backup-shard0")
    ));
    d.apply("apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata: {name: unowned}\nspec: {sgCluster: x}\n");
    assert_eq!(d.ok(&["get", "sgbkp", "-o", "name"]).lines().count(), 3);
    d.ok(&["delete", "sgshardedbackup", "manual-backup"]);
    assert_eq!(
        d.ok(&["get", "sgbkp", "-o", "name"]),
        "sgbackup.stackgres.io/unowned\n"
    );
    assert_eq!(d.ok(&["get", "sgsbk", "-o", "name"]).lines().count(), 3);
}

#[test]
fn a_concurrent_conflicting_update_is_refused() {
    let d = daemon(&[]);
    d.apply(&stream(&[CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    let read = d.json(&["get", "sgsbk", "manual-backup"]);
    let rv = read["metadata"]["resourceVersion"].as_str().unwrap();
    let edit = |retries: u32| {
        format!(
            "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {{name: manual-backup, resourceVersion: '{rv}'}}\nspec: {{sgShardedCluster: my-sharded-cluster, maxRetries: {retries}}}\n"
        )
    };
    let (one, two) = std::thread::scope(|s| {
        let a = s.spawn(|| d.sv_in(&["apply", "-f", "-"], &edit(1)));
        let b = s.spawn(|| d.sv_in(&["apply", "-f", "-"], &edit(2)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(
        one.status.success(),
        two.status.success(),
        "exactly one writer wins"
    );
    let (winner, loser, want) = if one.status.success() {
        (&one, &two, 1)
    } else {
        (&two, &one, 2)
    };
    assert!(text(&winner.stdout).contains("configured"));
    assert!(
        text(&loser.stderr).contains("was changed by someone else"),
        "{}",
        text(&loser.stderr)
    );
    assert_eq!(
        d.json(&["get", "sgsbk", "manual-backup"])["spec"]["maxRetries"],
        want
    );
    // The HTTP API answers a stale PUT with 409 and a Kubernetes Status.
    let (code, status) = http(
        d.state(),
        "PUT",
        "/apis/stackgres.io/v1/namespaces/default/sgshardedbackups/manual-backup",
        Some(&read),
    );
    assert_eq!(code, 409);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Conflict");
}

#[test]
fn a_restarted_daemon_keeps_everything() {
    let mut d = daemon(&[]);
    d.apply(&stream(&[STORAGE, CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    d.apply(SPEC_PREREQUISITES);
    let before = everything(&d);
    assert!(
        d.signal("TERM").success(),
        "clean exit on SIGTERM: {}",
        d.log()
    );
    assert!(!d.state().join("shardvault.sock").exists());
    let down = d.sv(&["get", "sgsbk"]);
    assert!(
        text(&down.stderr).contains("shardvault is not running in"),
        "{}",
        text(&down.stderr)
    );
    assert!(text(&down.stderr).contains("shardvault up"));
    d.restart();
    assert_eq!(everything(&d), before);
    let more = d.apply("apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: after}\nspec: {sgShardedCluster: my-sharded-cluster}\n");
    assert!(more.contains("created"));
    let after = d.json(&["get", "sgsbk", "after"]);
    let max_before = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!(
        after["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > max_before
    );
}

#[test]
fn up_and_down_run_the_daemon_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let sv = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("SHARDVAULT_HOME", dir.path())
            .output()
            .unwrap()
    };
    let up = sv(&["up", "--controllers", "none"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(text(&up.stdout).contains("shardvault is running in"));
    assert!(text(&sv(&["up"]).stdout).contains("already running"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("shardvault.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(sv(&["get", "sgsbk"]).status.success());
    let down = sv(&["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(text(&sv(&["down"]).stdout).contains("not running"));
    assert!(!sv(&["get", "sgsbk"]).status.success());
}

#[test]
fn kill_9_during_a_burst_leaves_a_prefix() {
    let mut d = daemon(&[]);
    let docs: Vec<String> = (0..1000)
        .map(|i| format!("apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata: {{name: burst-{i:03}}}\nspec: {{sgCluster: c-coord}}\n"))
        .collect();
    let file = d.state().join("burst.yaml");
    std::fs::write(&file, docs.join("---\n")).unwrap();
    let mut apply = Command::new(bin())
        .args(["apply", "-f", file.to_str().unwrap()])
        .env("SHARDVAULT_HOME", d.state())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0;
    let mut lines = BufReader::new(apply.stdout.take().unwrap()).lines();
    while acked < 40 {
        lines.next().unwrap().unwrap();
        acked += 1;
    }
    d.signal("KILL");
    acked += lines
        .map_while(Result::ok)
        .filter(|l| l.ends_with("created"))
        .count();
    let _ = apply.wait();
    d.restart();
    let names: Vec<String> = d
        .ok(&["get", "sgbkp", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("sgbackup.stackgres.io/").to_string())
        .collect();
    let expected: Vec<String> = (0..names.len()).map(|i| format!("burst-{i:03}")).collect();
    assert_eq!(names, expected, "the store holds a prefix of the writes");
    assert!(
        names.len() >= acked,
        "every acknowledged write survived ({} < {acked})",
        names.len()
    );
    assert!(names.len() < 1000, "the kill landed during the burst");
    // The store still takes writes, with versions after the survivors'.
    d.apply("apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata: {name: zz-after}\nspec: {sgCluster: c}\n");
}

/// Manifests that must be refused, each with the field path its error names.
const INVALID: &[(&str, &str)] = &[
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: Bad_Name}\nspec: {sgShardedCluster: c}",
        "metadata.name",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: -x}\nspec: {sgShardedCluster: c}",
        "metadata.name",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x, namespace: Prod}\nspec: {sgShardedCluster: c}",
        "metadata.namespace",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x, labels: {'bad key!': v}}\nspec: {sgShardedCluster: c}",
        "metadata.labels",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x, colour: red}\nspec: {sgShardedCluster: c}",
        "metadata",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c, timeout: two hours}",
        "spec.timeout",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c, maxRetries: -1}",
        "spec.maxRetries",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c, extra: 1}",
        "spec",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: Not_A_Name}",
        "spec.sgShardedCluster",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}",
        "spec",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c, reconciliationTimeout: P1M}",
        "spec.reconciliationTimeout",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c}",
        "apiVersion",
    ),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}", "kind"),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c}\nextra: true",
        "extra",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata: {name: x}\nspec: {sgCluster: c, timeout: soon}",
        "spec.timeout",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: floppy}",
        "spec.type",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: s3}",
        "spec.s3",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: relative/dir}}",
        "spec.filesystem.path",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: /x}, gcs: {bucket: b, gcpCredentials: {}}}",
        "spec.gcs",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: /x}, encryption: {method: rot13}}",
        "spec.encryption.method",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: /x}, encryption: {method: sodium}}",
        "spec.encryption.sodium",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: /x}, encryption: {method: sodium, sodium: {key: {name: k, key: k}, keyTransform: rot}}}",
        "spec.encryption.sodium.keyTransform",
    ),
    (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {key: 'not base64!'}",
        "data.key",
    ),
    (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {key: [1, 2]}",
        "stringData",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, shards: {clusters: 2, instancesPerCluster: 1}}",
        "spec.coordinator",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {type: mongo, postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 2, instancesPerCluster: 1}}",
        "spec.type",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: fifteen}, coordinator: {instances: 1}, shards: {clusters: 2, instancesPerCluster: 1}}",
        "spec.postgres.version",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 0}, shards: {clusters: 2, instancesPerCluster: 1}}",
        "spec.coordinator.instances",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 0, instancesPerCluster: 1}}",
        "spec.shards.clusters",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1, pods: {persistentVolume: {size: 20GB}}}, shards: {clusters: 1, instancesPerCluster: 1}}",
        "spec.coordinator.pods.persistentVolume.size",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1, pods: {persistentVolume: {size: lots}}}}",
        "spec.shards.pods.persistentVolume.size",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, cronSchedule: '0 25 * * *'}]}}",
        "spec.configurations.backups[0].cronSchedule",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, cronSchedule: '0 5 * *'}]}}",
        "spec.configurations.backups[0].cronSchedule",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, retention: 0}]}}",
        "spec.configurations.backups[0].retention",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s}, {sgObjectStorage: t, compression: zip}]}}",
        "spec.configurations.backups[1].compression",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 2, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, paths: [/a, /b]}]}}",
        "spec.configurations.backups[0].paths",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, timeout: PT2X}]}}",
        "spec.configurations.backups[0].timeout",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, performance: {uploadDiskConcurrency: 0}}]}}",
        "spec.configurations.backups[0].performance.uploadDiskConcurrency",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, cronSchedule: '* * * * *', unknownKnob: 1}]}}",
        "spec.configurations.backups[0]",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, initialData: {restore: {fromBackup: {name: b, pointInTimeRecovery: {restoreToTimestamp: yesterday}}}}}",
        "spec.initialData.restore.fromBackup.pointInTimeRecovery.restoreToTimestamp",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, initialData: {restore: {fromBackup: {name: b}, downloadDiskConcurrency: 0}}}",
        "spec.initialData.restore.downloadDiskConcurrency",
    ),
    // Hostile input: paths that climb out of their storage, huge numbers, long names.
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, path: ../../../../tmp/x}]}}",
        "spec.configurations.backups[0].path",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, paths: [a, b/../../c]}]}}",
        "spec.configurations.backups[0].paths[1]",
    ),
    (
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata: {name: x}\nspec: {type: filesystem, filesystem: {path: /var/backups/../../etc}}",
        "spec.filesystem.path",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 100000, instancesPerCluster: 1}}",
        "spec.shards.clusters",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1000}}",
        "spec.shards.instancesPerCluster",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: x}\nspec: {postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 1, instancesPerCluster: 1}, configurations: {backups: [{sgObjectStorage: s, performance: {uploadConcurrency: 100000}}]}}",
        "spec.configurations.backups[0].performance.uploadConcurrency",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: x}\nspec: {sgShardedCluster: c, timeout: -PT1H}",
        "spec.timeout",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: a/b}\nspec: {sgShardedCluster: c}",
        "metadata.name",
    ),
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\nspec: {sgShardedCluster: c}",
        "metadata.name",
    ),
    // A backup of a cluster that does not exist, a restore to a time in the future.
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: orphan}\nspec: {sgShardedCluster: no-such-cluster}",
        "spec.sgShardedCluster",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: from-the-future}\nspec: {type: ddp, postgres: {version: '15'}, coordinator: {instances: 1}, shards: {clusters: 3, instancesPerCluster: 1}, initialData: {restore: {fromBackup: {name: manual-backup, pointInTimeRecovery: {restoreToTimestamp: '2999-01-01T00:00:00Z'}}}}}",
        "spec.initialData.restore.fromBackup.pointInTimeRecovery.restoreToTimestamp",
    ),
    // Changes of immutable fields of objects that exist.
    (
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: manual-backup}\nspec: {sgShardedCluster: another-cluster}",
        "spec.sgShardedCluster",
    ),
    (
        "apiVersion: stackgres.io/v1alpha1\nkind: SGShardedCluster\nmetadata: {name: restored-sharded-cluster}\nspec: {initialData: {restore: {fromBackup: {name: other-backup}}}}",
        "spec.initialData",
    ),
];

#[test]
fn invalid_manifests_are_refused_with_their_field_path() {
    let d = daemon(&[]);
    d.apply(&stream(&[STORAGE, CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    complete_manual_backup(&d);
    d.apply(SPEC_RESTORE);
    let before = everything(&d);
    assert!(INVALID.len() >= 30);
    let docs: Vec<&str> = INVALID.iter().map(|(m, _)| *m).collect();
    let out = d.sv_in(&["apply", "-f", "-"], &docs.join("\n---\n"));
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "", "nothing was applied");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .strip_prefix("error: ")
        .unwrap_or(&stderr)
        .split("\nerror: ")
        .collect();
    assert_eq!(
        errors.len(),
        INVALID.len(),
        "one error per manifest:\n{stderr}"
    );
    for (i, ((manifest, path), err)) in INVALID.iter().zip(&errors).enumerate() {
        let source = if i == 0 {
            "<stdin>:".to_string()
        } else {
            format!("<stdin>#{}:", i + 1)
        };
        assert!(
            err.starts_with(&source),
            "error {i} is not about its manifest: {err}"
        );
        assert!(
            err.contains(&format!("* {path}")),
            "manifest {i} should name {path:?}:\n{manifest}\ngot: {err}"
        );
    }
    assert_eq!(everything(&d), before, "the store is unchanged");
    // Malformed YAML is refused before anything is sent.
    let out = d.sv_in(
        &["apply", "-f", "-"],
        &format!("{STORAGE}\n---\nkind: [unclosed\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("document 2 is not valid YAML"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(everything(&d), before);
}

/// Marks `manual-backup` Completed with a restore point, as the backup controller would
/// (controllers are off here), so that the guide's restore manifest is admitted.
fn complete_manual_backup(d: &Daemon) {
    set_status(
        d,
        "/apis/stackgres.io/v1/namespaces/default/sgshardedbackups",
        "manual-backup",
        json!({
            "process": {"status": "Completed", "timing": {"start": "2024-01-15T05:00:00Z", "end": "2024-01-15T05:45:00Z"}},
            "sgBackups": ["manual-backup-coord", "manual-backup-shard0", "manual-backup-shard1", "manual-backup-shard2"],
            "backupInformation": {"postgresVersion": "15.3", "size": {"compressed": 1073741824u64, "uncompressed": 5368709120u64}},
            "restorePoint": {"name": "manual-backup", "time": "2024-01-15T05:44:00Z", "writePauseMs": 3.5, "barrierAttempts": 1, "members": []},
        }),
    );
}

fn set_status(d: &Daemon, kind_path: &str, name: &str, status: Value) {
    let path = format!("{kind_path}/{name}");
    let (code, mut obj) = http(d.state(), "GET", &path, None);
    assert_eq!(code, 200, "{path}");
    obj["status"] = status;
    let (code, body) = http(d.state(), "PUT", &format!("{path}/status"), Some(&obj));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn tables_and_yaml_snapshots() {
    let d = daemon(&[]);
    d.apply(&stream(&[STORAGE, CLUSTER, LARGE_CLUSTER, &spec_backups()]));
    d.apply(SPEC_PREREQUISITES);
    d.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: backup-keys}\nstringData: {accessKeyId: AKIA, secretAccessKey: s3cr3t}\n");
    let sb = "/apis/stackgres.io/v1/namespaces/default/sgshardedbackups";
    set_status(
        &d,
        sb,
        "manual-backup",
        json!({
            "process": {"status": "Completed", "timing": {"start": "2024-01-15T05:00:00Z", "end": "2024-01-15T05:45:00Z", "stored": "2024-01-15T05:46:00Z"}},
            "sgBackups": ["manual-backup-coord", "manual-backup-shard0", "manual-backup-shard1", "manual-backup-shard2"],
            "backupInformation": {"postgresVersion": "15.3", "backupType": "incremental", "parent": "nightly",
                "size": {"compressed": 1073741824u64, "uncompressed": 5368709120u64, "restore": 4294967296u64}},
        }),
    );
    set_status(
        &d,
        sb,
        "manual-backup-with-options",
        json!({"process": {"status": "Running", "timing": {"start": "2024-01-15T06:00:00Z"}}}),
    );
    let mut members = Vec::new();
    for m in ["coord", "shard0"] {
        members.push(format!("apiVersion: stackgres.io/v1\nkind: SGBackup\nmetadata:\n  name: manual-backup-{m}\n  labels: {{stackgres.io/shardedbackup-name: manual-backup}}\nspec: {{sgCluster: my-sharded-cluster-{m}}}\n"));
    }
    d.apply(&members.join("---\n"));
    set_status(
        &d,
        "/apis/stackgres.io/v1/namespaces/default/sgbackups",
        "manual-backup-coord",
        json!({
            "process": {"status": "Completed", "timing": {"start": "2024-01-15T05:00:01Z", "end": "2024-01-15T05:20:00Z"}},
            "backupInformation": {"hostname": "h", "systemIdentifier": "1", "postgresVersion": "15.3", "pgData": "/d",
                "size": {"compressed": 268435456u64, "uncompressed": 1342177280u64, "restore": 1073741824u64}, "lsn": {"start": "0/2000028", "end": "0/2000100"},
                "startWalFile": "000000010000000000000002", "timeline": 1, "backupType": "incremental", "parent": "nightly-coord"},
        }),
    );
    set_status(
        &d,
        "/apis/stackgres.io/v1alpha1/namespaces/default/sgshardedclusters",
        "my-sharded-cluster",
        json!({
            "members": [
                {"name": "my-sharded-cluster-coord", "instances": [{"name": "c0", "role": "primary", "port": 5432, "state": "Running"}]},
                {"name": "my-sharded-cluster-shard0", "instances": [{"name": "s0", "role": "primary", "port": 5433, "state": "Starting"}]},
            ],
        }),
    );
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\b\d+s\b", "[age]");
    settings.add_filter(r"creationTimestamp: .*", "creationTimestamp: [time]");
    settings.add_filter(r"uid: .*", "uid: [uid]");
    settings.add_filter(r"resourceVersion: .*", "resourceVersion: [rv]");
    settings.bind(|| {
        insta::assert_snapshot!("get_sgshardedbackups", d.ok(&["get", "sgsbk"]));
        insta::assert_snapshot!(
            "get_sgshardedbackups_wide",
            d.ok(&["get", "sgsbk", "-o", "wide"])
        );
        insta::assert_snapshot!(
            "get_sgbackups",
            d.ok(&[
                "get",
                "sgbkp",
                "-l",
                "stackgres.io/shardedbackup-name=manual-backup"
            ])
        );
        insta::assert_snapshot!(
            "get_sgshardedclusters_wide",
            d.ok(&["get", "sgscl", "-o", "wide"])
        );
        insta::assert_snapshot!("get_storage_and_secrets", d.ok(&["get", "sgobjs,secret"]));
        insta::assert_snapshot!(
            "get_sgshardedbackup_yaml",
            d.ok(&["get", "sgsbk", "manual-backup", "-o", "yaml"])
        );
        insta::assert_snapshot!(
            "get_sgshardedcluster_yaml",
            d.ok(&["get", "sgscl", "my-sharded-cluster", "-o", "yaml"])
        );
    });
}

#[test]
fn tcp_needs_the_bearer_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_dir = tempfile::tempdir().unwrap();
    let token = token_dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token-0123456789\n").unwrap();
    let wrong = token_dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let addr = format!("127.0.0.1:{port}");
    let d = daemon(&["--listen", &addr, "--token-file", token.to_str().unwrap()]);
    d.apply(CLUSTER);
    d.apply(guide::BACKUPS[0]);
    let remote = |token: &Path| {
        Command::new(bin())
            .args([
                "get",
                "sgsbk",
                "-o",
                "name",
                "--server",
                &addr,
                "--token-file",
            ])
            .arg(token)
            .env("SHARDVAULT_HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let ok = remote(&token);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        text(&ok.stdout),
        "sgshardedbackup.stackgres.io/manual-backup\n"
    );
    let refused = remote(&wrong);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("bearer token"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn describe_shows_events() {
    let d = daemon(&[]);
    d.apply(CLUSTER);
    d.apply(guide::BACKUPS[0]);
    let obj = d.json(&["get", "sgsbk", "manual-backup"]);
    for (name, reason, message) in [
        ("e1", "Started", "taking 4 member backups"),
        ("e2", "Failed", "shard1: connection refused"),
    ] {
        let event = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup", "name": "manual-backup",
                               "namespace": "default", "uid": obj["metadata"]["uid"]},
            "type": if reason == "Failed" { "Warning" } else { "Normal" },
            "reason": reason, "message": message, "count": 2,
            "firstTimestamp": "2024-01-15T05:00:00Z", "lastTimestamp": "2024-01-15T05:00:00Z",
        });
        let (code, body) = http(
            d.state(),
            "POST",
            "/api/v1/namespaces/default/events",
            Some(&event),
        );
        assert_eq!(code, 201, "{body}");
    }
    let desc = d.ok(&["describe", "sgsbk/manual-backup"]);
    assert!(desc.contains("Events:\n  TYPE"), "{desc}");
    assert!(desc.contains("Normal    Started"), "{desc}");
    assert!(desc.contains("(x2)   shard1: connection refused"), "{desc}");
    let events = d.ok(&["get", "events"]);
    assert!(events.contains("sgshardedbackup/manual-backup"), "{events}");
    // Deleting the object takes its Events with it.
    d.ok(&["delete", "sgsbk", "manual-backup"]);
    assert_eq!(d.ok(&["get", "ev", "-o", "name"]), "");
}

#[test]
fn get_watch_prints_a_row_per_change() {
    let d = daemon(&[]);
    d.apply(CLUSTER);
    d.apply(guide::BACKUPS[0]);
    let mut watch = Command::new(bin())
        .args(["get", "sgsbk", "-w"])
        .env("SHARDVAULT_HOME", d.state())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("manual-backup "));
    d.apply("apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: later}\nspec: {sgShardedCluster: my-sharded-cluster}\n");
    assert!(next().starts_with("later "));
    d.ok(&["delete", "sgsbk", "manual-backup"]);
    assert!(next().starts_with("manual-backup "));
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn sigterm_stops_the_daemon_promptly_even_with_watches_open() {
    let mut d = daemon(&[]);
    d.apply(CLUSTER);
    let mut watch = Command::new(bin())
        .args(["get", "sgscl", "-w"])
        .env("SHARDVAULT_HOME", d.state())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("NAME"));
    let started = std::time::Instant::now();
    d.signal("TERM");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "SIGTERM took {took:?}"
    );
    assert!(d.log().contains("shardvault stopped"), "{}", d.log());
    watch.kill().ok();
    watch.wait().unwrap();
}
