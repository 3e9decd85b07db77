//! A `shardvault serve` daemon in a temporary state directory, and the CLI run against it.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TempStateDir, shardvault_bin};

/// A running daemon; killed (and its PostgreSQL servers stopped) on drop.
pub struct Daemon {
    state: TempStateDir,
    child: Option<Child>,
    args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon with every controller, in a fresh state directory.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with extra `serve` arguments (e.g. `--controllers none`).
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_in(TempStateDir::new(), args)
    }

    /// Starts a daemon with extra `serve` arguments in the given state directory (e.g. one
    /// on a loop-mounted btrfs image).
    pub fn start_in(state: TempStateDir, args: &[&str]) -> Daemon {
        let mut d = Daemon {
            state,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        self.state.path()
    }

    /// Starts the daemon (again) and waits until the CLI reaches it.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state().join("test-serve.log"))
            .expect("daemon log");
        let child = Command::new(shardvault_bin())
            .arg("serve")
            .arg("--state-dir")
            .arg(self.state())
            .args(&self.args)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("shardvault serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.state().join("shardvault.sock").exists()
            || !self.sv(&["get", "sgobjs"]).status.success()
        {
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the daemon's runtime last observed of cluster `name` in namespace `default`.
    pub fn observed(&self, name: &str) -> shardvault_pg::runtime::cluster::ClusterObserved {
        use shardvault_pg::runtime::{ClusterId, ClusterRuntime, LocalRuntime};
        LocalRuntime::observing(self.state(), crate::shardvault_bin())
            .observed(&ClusterId::new("default", name))
            .unwrap_or_else(|e| panic!("cluster {name} does not run: {e}"))
    }

    /// Process ids of the processes whose command line holds `words` and this daemon's state
    /// directory (so a test sees its own daemon's work, never another test's).
    pub fn processes(&self, words: &str) -> Vec<u32> {
        let state = self.state().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline.contains(words) && cmdline.contains(&state)
            })
            .collect()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state().join("test-serve.log")).unwrap_or_default()
    }

    /// Sends signal `sig` (`TERM`, `KILL`, ...) to the daemon and waits for it to exit.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        child.wait().expect("the daemon exits")
    }

    /// Runs the CLI against this daemon.
    pub fn sv(&self, args: &[&str]) -> Output {
        Command::new(shardvault_bin())
            .args(args)
            .env("SHARDVAULT_HOME", self.state())
            .output()
            .expect("the shardvault binary runs")
    }

    /// Runs the CLI and returns stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.sv(args);
        assert!(
            out.status.success(),
            "shardvault {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `input` on its standard input.
    pub fn sv_in(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(shardvault_bin())
            .args(args)
            .env("SHARDVAULT_HOME", self.state())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the shardvault binary runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("input written");
        child.wait_with_output().expect("the command finishes")
    }

    /// Applies a manifest given as text that must be accepted; returns what apply printed.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.sv_in(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `get ... -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("get -o json prints JSON")
    }

    /// Polls `get KIND NAME -o json` until `pred` holds; panics with the object after `secs`.
    pub fn wait_until(
        &self,
        kind: &str,
        name: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.sv(&["get", kind, name, "-o", "json"]);
            let obj: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if pred(&obj) {
                return obj;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}/{name} did not reach the expected state in {secs} s:\n{obj:#}\n--- daemon log tail ---\n{}",
                self.log()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `status.process.status` of a backup object ("" when it has none yet).
pub fn phase(o: &Value) -> &str {
    o.pointer("/status/process/status")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether an object's first condition (Ready) is True.
pub fn ready(o: &Value) -> bool {
    o.pointer("/status/conditions/0/status") == Some(&Value::from("True"))
}
