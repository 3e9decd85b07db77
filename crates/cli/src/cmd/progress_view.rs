//! Progress of running work as `get -w` and `wait` show it: a bar per object on a terminal,
//! otherwise a plain line when it moved and a few seconds have passed.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::progress::{BackupProgress, RestoreProgress, Summary};
use shardvault_api::quantity::human_bytes;

/// How often a plain progress line is written at most, per object.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress of `v`: a backup's `status.progress`, or the sum over the members of a
/// cluster's restore; None when nothing runs.
pub fn of(kind: Kind, v: &Value) -> Option<Summary> {
    match kind {
        Kind::SGShardedBackup | Kind::SGBackup => {
            let p: BackupProgress =
                serde_json::from_value(v.pointer("/status/progress")?.clone()).ok()?;
            Some(Summary::from(&p))
        }
        Kind::SGShardedCluster => {
            let members = v.pointer("/status/restore/members")?.as_array()?;
            let progress: Vec<RestoreProgress> = members
                .iter()
                .filter_map(|m| serde_json::from_value(m.get("progress")?.clone()).ok())
                .collect();
            Summary::of_restore(&progress)
        }
        _ => None,
    }
}

/// Shows the progress of several objects: bars on a terminal, plain lines otherwise.
pub struct View {
    bars: Option<MultiProgress>,
    shown: HashMap<String, ProgressBar>,
    said: HashMap<String, (Instant, Summary)>,
}

impl View {
    /// Bars when stderr is a terminal.
    pub fn new() -> View {
        View {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            shown: HashMap::new(),
            said: HashMap::new(),
        }
    }

    /// Shows where `name` is now; None ends its bar.
    pub fn show(&mut self, name: &str, now: Option<Summary>) {
        let Some(bars) = &self.bars else {
            if let Some(now) = now {
                let due = self
                    .said
                    .get(name)
                    .is_none_or(|(at, last)| *last != now && at.elapsed() >= LINE_EVERY);
                if due {
                    tracing::info!("{name}: {}", now.text());
                    self.said.insert(name.to_string(), (Instant::now(), now));
                }
            }
            return;
        };
        match now {
            Some(now) => {
                let bar = self.shown.entry(name.to_string()).or_insert_with(|| {
                    let bar = bars.add(
                        ProgressBar::new(0).with_style(
                            ProgressStyle::with_template(
                                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        ),
                    );
                    bar.set_prefix(name.to_string());
                    bar
                });
                bar.set_length(now.total);
                bar.set_position(now.done);
                let rate = if now.rate > 0 && now.done < now.total {
                    format!(" {}/s", human_bytes(now.rate))
                } else {
                    String::new()
                };
                bar.set_message(format!("{}{rate}", now.phase));
            }
            None => {
                if let Some(bar) = self.shown.remove(name) {
                    bar.finish_and_clear();
                    bars.remove(&bar);
                }
            }
        }
    }

    /// Runs `print` (which writes to stdout) without the bars in the way.
    pub fn print(&self, print: impl FnOnce()) {
        match &self.bars {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_progress_reads_as_a_sentence() {
        let backup = json!({"status": {"progress": {"phase": "Copying", "bytesDone": 45,
            "bytesTotal": 100, "bytesPerSecond": 3145728, "updated": "2030-01-01T00:00:00Z"}}});
        let shown = of(Kind::SGShardedBackup, &backup).expect("progress");
        assert_eq!(shown.text(), "copying 45% of 100 B, 3.0 MiB/s");
        assert_eq!(of(Kind::SGBackup, &json!({"status": {}})), None);

        let cluster = json!({"status": {"restore": {"fromBackup": "b", "members": [
            {"name": "c-coord", "sgBackup": "b-coord", "phase": "Restoring", "progress": {
                "phase": "Replaying", "bytesDone": 10, "bytesTotal": 10, "bytesPerSecond": 0,
                "replayLsn": "0/3000100", "targetLsn": "0/3000200", "updated": "x"}},
            {"name": "c-shard0", "sgBackup": "b-shard0", "phase": "Restoring"}]}}});
        let shown = of(Kind::SGShardedCluster, &cluster).expect("progress");
        assert_eq!(
            shown.text(),
            "replaying WAL (at 0/3000100 of 0/3000200) 100% of 10 B"
        );
    }
}
