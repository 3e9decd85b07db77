//! The CLI's verbs through `--kubeconfig`: a kube::Client of the daemon's HTTPS listener
//! (TLS, bearer token), with no state directory, print what they print over the socket.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use shardvault_testkit::daemon::Daemon;
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};
use shardvault_testkit::shardvault_bin;

/// The CLI with `--kubeconfig` of `d` and no state directory to fall back on.
fn over_https(d: &Daemon, args: &[&str], input: Option<&str>) -> Command {
    let mut c = Command::new(shardvault_bin());
    c.args(args)
        .arg("--kubeconfig")
        .arg(d.state().join("kubeconfig"))
        .env("SHARDVAULT_HOME", d.state().join("not-this-one"));
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    c
}

fn run(d: &Daemon, args: &[&str], input: Option<&str>) -> Output {
    let mut child = over_https(d, args, input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shardvault binary runs");
    if let Some(text) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("input written");
    }
    child.wait_with_output().expect("the command finishes")
}

fn ok(d: &Daemon, args: &[&str], input: Option<&str>) -> String {
    let out = run(d, args, input);
    assert!(
        out.status.success(),
        "{args:?} over the kubeconfig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_verb_works_over_the_kubeconfig() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    let storage = filesystem_storage("my-storage", &d.state().join("objects"));
    let cluster = DdpCluster::new("my-sharded-cluster").yaml();
    let backup = sharded_backup("manual-backup", "my-sharded-cluster", &[]);
    assert_eq!(
        ok(
            &d,
            &["apply", "-f", "-"],
            Some(&format!("{storage}---\n{cluster}---\n{backup}"))
        ),
        "sgobjectstorage.stackgres.io/my-storage created\n\
         sgshardedcluster.stackgres.io/my-sharded-cluster created\n\
         sgshardedbackup.stackgres.io/manual-backup created\n"
    );
    assert_eq!(
        ok(&d, &["apply", "-f", "-"], Some(&storage)),
        "sgobjectstorage.stackgres.io/my-storage unchanged\n"
    );
    // The same objects, byte for byte, as over the socket.
    for args in [
        &["get", "sgobjs,sgsbk", "-o", "yaml"][..],
        &["get", "sgsbk", "manual-backup", "-o", "json"],
        &["get", "sgobjs", "-o", "name"],
    ] {
        assert_eq!(ok(&d, args, None), d.ok(args), "{args:?}");
    }
    let table = ok(&d, &["get", "sgobjs"], None);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("\nmy-storage "), "{table}");
    let desc = ok(&d, &["describe", "sgsbk", "manual-backup"], None);
    assert!(desc.starts_with("Name:         manual-backup\n"), "{desc}");

    // A refused manifest names its field, as over the socket.
    let out = run(
        &d,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata: {name: a/b}\nspec: {sgShardedCluster: c}\n",
        ),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("* metadata.name"), "{stderr}");

    // A watch over HTTPS sees a change made meanwhile.
    let mut watch = over_https(&d, &["get", "sgobjs", "-w"], None)
        .stdout(Stdio::piped())
        .spawn()
        .expect("get -w runs");
    let mut lines = BufReader::new(watch.stdout.take().expect("piped")).lines();
    let mut next = || lines.next().expect("a row").expect("a line");
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("my-storage "));
    d.apply(&filesystem_storage("later", &d.state().join("objects")));
    assert!(next().starts_with("later "));
    watch.kill().expect("the watch stops");
    watch.wait().expect("the watch is reaped");

    assert_eq!(
        ok(&d, &["delete", "sgobjs", "later", "--wait"], None),
        "sgobjectstorage.stackgres.io \"later\" deleted\n"
    );
    assert_eq!(
        d.ok(&["get", "sgobjs", "-o", "name"]),
        "sgobjectstorage.stackgres.io/my-storage\n"
    );
}

#[test]
fn a_kubeconfig_that_leads_nowhere_says_so() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    let bad = d.state().join("elsewhere.kubeconfig");
    let text = std::fs::read_to_string(d.state().join("kubeconfig")).expect("kubeconfig");
    let token_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("a token line");
    std::fs::write(&bad, text.replace(token_line, "    token: wrong-token")).expect("written");
    let out = Command::new(shardvault_bin())
        .args(["get", "sgobjs", "--kubeconfig"])
        .arg(&bad)
        .output()
        .expect("the shardvault binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not answer") && stderr.contains("elsewhere.kubeconfig"),
        "{stderr}"
    );
    let missing = d.state().join("missing.kubeconfig");
    let out = Command::new(shardvault_bin())
        .args(["get", "sgobjs", "--kubeconfig"])
        .arg(&missing)
        .output()
        .expect("the shardvault binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the kubeconfig"), "{stderr}");
}
