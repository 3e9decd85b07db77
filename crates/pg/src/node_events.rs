//! Events of shardvault child processes (node work run by the daemon): the child writes one
//! JSON event per line on stderr (a log line, its progress, or its final error); the parent
//! logs each log event once, at its level, about the member it concerns, and passes
//! progress on to whoever follows the work.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The variable that tells a shardvault process its stderr is read by a parent.
pub const FORMAT_VAR: &str = "SHARDVAULT_LOG_FORMAT";

/// The value of [`FORMAT_VAR`] for a child whose events a parent reads.
pub const CHILD: &str = "child";

/// One thing a child reports: one JSON object per line of its stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum NodeEvent {
    /// A log line.
    Log { level: Level, message: String },
    /// How far the work is.
    Progress(WorkProgress),
    /// Why the command failed (its last event).
    Failed { message: String },
}

/// The level of a child's log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Level {
        match level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// Bytes done of a total, of the one thing a node command moves (files of a backup, parts
/// of a restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkProgress {
    pub done: u64,
    pub total: u64,
}

/// Receives the progress of one node command as it comes.
pub type ProgressSink = Arc<dyn Fn(WorkProgress) + Send + Sync>;

impl NodeEvent {
    /// The event as one line (without its newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("node events serialize")
    }

    /// Writes the event to stderr as one line.
    pub fn emit(&self) {
        use std::io::Write;
        let mut line = self.line();
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Makes `cmd` (a shardvault command) write events for a [`Relay`].
pub fn mark(cmd: &mut tokio::process::Command) {
    cmd.env(FORMAT_VAR, CHILD);
}

/// Whether this process writes events for a parent.
pub fn is_child() -> bool {
    std::env::var(FORMAT_VAR).is_ok_and(|v| v == CHILD)
}

/// Follows one child's stderr: logs its log events once about `instance`, hands its
/// progress to the sink, and keeps what it said last for the failure.
pub struct Relay {
    instance: String,
    progress: Option<ProgressSink>,
    failed: Option<String>,
    last: Option<String>,
}

impl Relay {
    /// A relay for a child working on `instance`.
    pub fn new(instance: &str, progress: Option<ProgressSink>) -> Relay {
        Relay {
            instance: instance.to_string(),
            progress,
            failed: None,
            last: None,
        }
    }

    /// Takes one line of the child's stderr (or stdout): an event, or text that is no event
    /// (a program the child ran), logged at info.
    pub fn line(&mut self, line: &str) {
        let instance = self.instance.as_str();
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<NodeEvent>(line) {
            Ok(NodeEvent::Log { level, message }) => {
                match level {
                    Level::Error => tracing::error!(instance, "{message}"),
                    Level::Warn => tracing::warn!(instance, "{message}"),
                    Level::Info => tracing::info!(instance, "{message}"),
                    Level::Debug => tracing::debug!(instance, "{message}"),
                }
                self.last = Some(message);
            }
            Ok(NodeEvent::Progress(p)) => {
                if let Some(sink) = &self.progress {
                    sink(p);
                }
            }
            Ok(NodeEvent::Failed { message }) => self.failed = Some(message),
            Err(_) => {
                tracing::info!(instance, "{line}");
                self.last = Some(line.to_string());
            }
        }
    }

    /// What the child said failed: its final error, else its last line.
    pub fn failure(self) -> String {
        self.failed
            .or(self.last)
            .unwrap_or_else(|| "no message".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn events_round_trip_and_the_final_error_wins() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink: ProgressSink = {
            let seen = seen.clone();
            Arc::new(move |p| seen.lock().unwrap().push(p))
        };
        let mut relay = Relay::new("c-coord-0", Some(sink));
        let warn = NodeEvent::Log {
            level: Level::Warn,
            message: "stored copy is corrupt; replacing it".into(),
        };
        assert_eq!(
            warn.line(),
            r#"{"event":"log","level":"warn","message":"stored copy is corrupt; replacing it"}"#
        );
        relay.line(&warn.line());
        relay.line(&NodeEvent::Progress(WorkProgress { done: 3, total: 29 }).line());
        relay.line("restored backup b into /d");
        relay.line(
            &NodeEvent::Failed {
                message: "backup b not found in /s".into(),
            }
            .line(),
        );
        assert_eq!(*seen.lock().unwrap(), [WorkProgress { done: 3, total: 29 }]);
        assert_eq!(relay.failure(), "backup b not found in /s");

        let mut quiet = Relay::new("x", None);
        quiet.line(&warn.line());
        assert_eq!(quiet.failure(), "stored copy is corrupt; replacing it");
        assert_eq!(Relay::new("x", None).failure(), "no message");
    }
}
