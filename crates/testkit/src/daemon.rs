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
    controllers: bool,
}

impl Daemon {
    /// Starts a daemon with every controller, in a fresh state directory.
    pub fn start() -> Daemon {
        Daemon::start_with(true)
    }

    /// Starts a daemon with or without its controllers.
    pub fn start_with(controllers: bool) -> Daemon {
        let mut d = Daemon {
            state: TempStateDir::new(),
            child: None,
            controllers,
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
        let mut cmd = Command::new(shardvault_bin());
        cmd.arg("serve").arg("--state-dir").arg(self.state());
        if !self.controllers {
            cmd.args(["--controllers", "none"]);
        }
        let child = cmd
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("shardvault serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.sv(&["get", "sgobjs"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state().join("test-serve.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
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

    /// Applies a manifest given as text (`apply -f -`); returns the whole output.
    pub fn apply(&self, yaml: &str) -> Output {
        let mut child = Command::new(shardvault_bin())
            .args(["apply", "-f", "-"])
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
            .write_all(yaml.as_bytes())
            .expect("manifest written");
        child.wait_with_output().expect("apply finishes")
    }

    /// Applies a manifest that must be accepted.
    pub fn apply_ok(&self, yaml: &str) {
        let out = self.apply(yaml);
        assert!(
            out.status.success(),
            "apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
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
