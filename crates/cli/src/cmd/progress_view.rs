//! Progress of running work as `get -w` and `wait` show it: a bar per object on a terminal,
//! otherwise a plain line when it moved and a few seconds have passed.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::progress::{BackupProgress, RestoreProgress, RestoreStep, percent};
use shardvault_api::quantity::human_bytes;

/// How often a plain progress line is written at most, per object.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How far an object's work is, as its status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// What it does now (`copying`, `waiting for WAL`, ...).
    pub phase: String,
    pub done: u64,
    pub total: u64,
    /// Bytes per second.
    pub rate: u64,
}

impl Shown {
    /// The progress of `v`: a backup's `status.progress`, or the sum over the members of a
    /// cluster's restore; None when nothing runs.
    pub fn of(kind: Kind, v: &Value) -> Option<Shown> {
        match kind {
            Kind::SGShardedBackup | Kind::SGBackup => {
                let p: BackupProgress =
                    serde_json::from_value(v.pointer("/status/progress")?.clone()).ok()?;
                Some(Shown {
                    phase: p.phase.to_string(),
                    done: p.bytes_done,
                    total: p.bytes_total,
                    rate: p.bytes_per_second,
                })
            }
            Kind::SGShardedCluster => {
                let members = v.pointer("/status/restore/members")?.as_array()?;
                let progress: Vec<RestoreProgress> = members
                    .iter()
                    .filter_map(|m| serde_json::from_value(m.get("progress")?.clone()).ok())
                    .collect();
                restore_sum(&progress)
            }
            _ => None,
        }
    }

    /// One cell or line: `copying 45% of 27.0 MiB, 3.1 MiB/s`.
    pub fn text(&self) -> String {
        if self.total == 0 {
            return self.phase.clone();
        }
        let mut text = format!(
            "{} {}% of {}",
            self.phase,
            percent(self.done, self.total),
            human_bytes(self.total)
        );
        if self.rate > 0 && self.done < self.total {
            text.push_str(&format!(", {}/s", human_bytes(self.rate)));
        }
        text
    }
}

/// The restore of members summed: copying while any member copies, else replaying WAL.
fn restore_sum(members: &[RestoreProgress]) -> Option<Shown> {
    if members.is_empty() {
        return None;
    }
    let copying = members.iter().any(|m| m.phase == RestoreStep::Copying);
    let phase = if copying {
        RestoreStep::Copying.to_string()
    } else {
        let at: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let lsn = m.replay_lsn.as_deref()?;
                Some(match &m.target_lsn {
                    Some(t) => format!("{lsn} of {t}"),
                    None => lsn.to_string(),
                })
            })
            .collect();
        format!("{} (at {})", RestoreStep::Replaying, at.join(", "))
    };
    Some(Shown {
        phase,
        done: members.iter().map(|m| m.bytes_done).sum(),
        total: members.iter().map(|m| m.bytes_total).sum(),
        rate: members.iter().map(|m| m.bytes_per_second).sum(),
    })
}

/// Shows the progress of several objects: bars on a terminal, plain lines otherwise.
pub struct View {
    bars: Option<MultiProgress>,
    shown: HashMap<String, ProgressBar>,
    said: HashMap<String, (Instant, Shown)>,
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
    pub fn show(&mut self, name: &str, now: Option<Shown>) {
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
        let shown = Shown::of(Kind::SGShardedBackup, &backup).expect("progress");
        assert_eq!(shown.text(), "copying 45% of 100 B, 3.0 MiB/s");
        assert_eq!(Shown::of(Kind::SGBackup, &json!({"status": {}})), None);

        let cluster = json!({"status": {"restore": {"fromBackup": "b", "members": [
            {"name": "c-coord", "sgBackup": "b-coord", "phase": "Restoring", "progress": {
                "phase": "Replaying", "bytesDone": 10, "bytesTotal": 10, "bytesPerSecond": 0,
                "replayLsn": "0/3000100", "targetLsn": "0/3000200", "updated": "x"}},
            {"name": "c-shard0", "sgBackup": "b-shard0", "phase": "Restoring"}]}}});
        let shown = Shown::of(Kind::SGShardedCluster, &cluster).expect("progress");
        assert_eq!(
            shown.text(),
            "replaying WAL (at 0/3000100 of 0/3000200) 100% of 10 B"
        );
    }
}
