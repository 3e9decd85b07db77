//! A reader that goes away early (`shardvault get ... | head`) neither panics a command nor
//! stops an apply half-way: the real binary against a daemon with its controllers off.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardvault_testkit::daemon::Daemon;
use shardvault_testkit::manifests::filesystem_storage;
use shardvault_testkit::shardvault_bin;

/// Objects applied at once: their YAML is far more than a pipe holds (64 KiB).
const MANY: usize = 300;

fn many_storages(d: &Daemon) -> String {
    (0..MANY)
        .map(|i| filesystem_storage(&format!("storage-{i:03}"), &d.state().join("objects")))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The CLI against `d` with stdout going to `stdout`.
fn spawn(d: &Daemon, args: &[&str], stdin: Stdio, stdout: Stdio) -> Child {
    Command::new(shardvault_bin())
        .args(args)
        .env("SHARDVAULT_HOME", d.state())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shardvault binary runs")
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

fn stored_storages(d: &Daemon) -> usize {
    d.json(&["get", "sgobjs"])["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn an_apply_whose_reader_is_gone_applies_every_document() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    let manifests = std::env::temp_dir().join(format!("closed-stdout-{}.yaml", std::process::id()));
    std::fs::write(&manifests, many_storages(&d)).expect("manifests written");
    let out = spawn(
        &d,
        &["apply", "-f", manifests.to_str().expect("utf-8 path")],
        Stdio::null(),
        closed_pipe(),
    )
    .wait_with_output()
    .expect("apply finishes");
    std::fs::remove_file(&manifests).expect("manifests removed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "apply failed: {stderr}");
    assert!(!stderr.contains("panicked"), "apply panicked: {stderr}");
    assert_eq!(
        stored_storages(&d),
        MANY,
        "apply stopped half-way: {stderr}"
    );
}

#[test]
fn get_into_a_reader_that_stops_early_ends_quietly() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    d.apply(&many_storages(&d));
    let full = d.ok(&["get", "sgobjs", "-o", "yaml"]);
    assert!(
        full.len() > 2 * 65536,
        "the YAML ({} bytes) must overflow the pipe for its reader to leave early",
        full.len()
    );
    // `| head -n 1`: one line read, then the reader is gone while most output is pending.
    let mut child = spawn(
        &d,
        &["get", "sgobjs", "-o", "yaml"],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("a first line");
    assert_eq!(first, "apiVersion: v1\n");
    let out = child.wait_with_output().expect("get finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "get -o yaml failed: {stderr}");
    assert!(stderr.is_empty(), "get -o yaml complained: {stderr}");
    // Nobody reads at all, in every output form.
    for args in [
        &["get", "sgobjs", "-o", "json"][..],
        &["get", "sgobjs", "-o", "name"],
        &["get", "sgobjs"],
        &["describe", "sgobjs", "storage-000"],
        &["crds"],
    ] {
        let out = spawn(&d, args, Stdio::null(), closed_pipe())
            .wait_with_output()
            .expect("the command finishes");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} failed: {stderr}");
        assert!(stderr.is_empty(), "{args:?} complained: {stderr}");
    }
}

#[test]
fn a_watch_ends_when_its_reader_goes_away() {
    let d = Daemon::start_with(&["--controllers", "none"]);
    d.apply(&filesystem_storage("first", &d.state().join("objects")));
    let mut child = spawn(&d, &["get", "sgobjs", "-w"], Stdio::null(), Stdio::piped());
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    while !line.starts_with("first") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a row") > 0,
            "the watch ended early"
        );
    }
    drop(reader);
    // The next change is the first write nobody reads: the watch ends there.
    d.apply(&filesystem_storage("second", &d.state().join("objects")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the watch is waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("get -w went on after its reader had gone");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("stderr read");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "get -w failed: {stderr}");
    assert!(!stderr.contains("panicked"), "get -w panicked: {stderr}");
}
