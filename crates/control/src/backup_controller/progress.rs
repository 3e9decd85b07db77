//! Progress of a running sharded backup in status: each member SGBackup's `status.progress`
//! and their sum in the SGShardedBackup's, written every few seconds by one task.

use std::time::Duration;

use kube::api::Api;
use serde_json::Value;
use shardvault_api::backup::{BackupPhase, BackupStatus, SGBackup};
use shardvault_api::progress::{BackupProgress, BackupStep, average_rate};
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::node_events::WorkProgress;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::children::{member_status, set_child};
use super::now;
use crate::sharded_backup::Progress;
use crate::status;

/// How often progress is written while bytes move.
const EVERY: Duration = Duration::from_secs(2);

/// What the backup reports, in the order it happens.
pub(super) enum Update {
    Started(usize),
    Copying(usize, WorkProgress),
    Done(usize, Box<BackupSummary>),
    Step(BackupStep),
}

/// A [`Progress`] that sends its reports to [`follow`].
pub(super) struct ChannelProgress(pub mpsc::UnboundedSender<Update>);

impl Progress for ChannelProgress {
    fn member_started(&self, index: usize) {
        let _ = self.0.send(Update::Started(index));
    }
    fn member_copying(&self, index: usize, done: WorkProgress) {
        let _ = self.0.send(Update::Copying(index, done));
    }
    fn member_done(&self, index: usize, summary: &BackupSummary) {
        let _ = self.0.send(Update::Done(index, Box::new(summary.clone())));
    }
    fn step(&self, step: BackupStep) {
        let _ = self.0.send(Update::Step(step));
    }
}

/// Where one member's backup is, as last reported.
#[derive(Default)]
struct Member {
    started: Option<jiff::Timestamp>,
    copy_began: Option<Instant>,
    bytes: WorkProgress,
    step: BackupStep,
    done: bool,
    changed: bool,
}

impl Member {
    fn progress(&self) -> BackupProgress {
        progress(self.step, self.bytes, self.copy_began)
    }
}

fn progress(step: BackupStep, bytes: WorkProgress, began: Option<Instant>) -> BackupProgress {
    BackupProgress {
        phase: step,
        bytes_done: bytes.done,
        bytes_total: bytes.total,
        bytes_per_second: began.map_or(0, |b| average_rate(bytes.done, b.into_std())),
        updated: now(),
    }
}

/// Where the backups of member SGBackups `names` (stored at `configs`) go: the SGBackups
/// and SGShardedBackup `sharded` in `api` say so as reports come, until the reports end.
pub(super) struct Follower {
    pub children: Api<SGBackup>,
    pub api: Api<SGShardedBackup>,
    pub sharded: String,
    pub names: Vec<String>,
    pub configs: Vec<Value>,
}

impl Follower {
    /// Applies reports from `rx` until every sender is gone.
    pub(super) async fn follow(self, mut rx: mpsc::UnboundedReceiver<Update>) {
        let mut members: Vec<Member> = self.names.iter().map(|_| Member::default()).collect();
        let mut step: Option<BackupStep> = None;
        let mut tick = tokio::time::interval(EVERY);
        let mut sum_changed = true;
        loop {
            tokio::select! {
                update = rx.recv() => {
                    let Some(update) = update else { break };
                    match update {
                        Update::Started(i) => {
                            members[i].started = Some(jiff::Timestamp::now());
                            self.write_running(i, &members[i]).await;
                        }
                        Update::Copying(i, bytes) => {
                            let m = &mut members[i];
                            m.copy_began.get_or_insert_with(Instant::now);
                            m.step = BackupStep::Copying;
                            m.bytes = bytes;
                            m.changed = true;
                        }
                        Update::Done(i, summary) => {
                            let m = &mut members[i];
                            m.done = true;
                            m.bytes.done = m.bytes.total.max(m.bytes.done);
                            set_child(&self.children, &self.names[i], &member_status(&summary, &self.configs[i])).await;
                        }
                        Update::Step(s) => {
                            step = Some(s);
                            for (i, m) in members.iter_mut().enumerate().filter(|(_, m)| !m.done) {
                                m.step = s;
                                self.write_running(i, m).await;
                            }
                        }
                    }
                    sum_changed = true;
                }
                _ = tick.tick() => {
                    for (i, m) in members.iter_mut().enumerate() {
                        if m.changed && !m.done {
                            m.changed = false;
                            self.write_running(i, m).await;
                        }
                    }
                    if std::mem::take(&mut sum_changed) {
                        self.write_sum(&sum(&members, step)).await;
                    }
                }
            }
        }
    }

    /// Writes member `i` as running, with its progress.
    async fn write_running(&self, i: usize, m: &Member) {
        let mut s = BackupStatus::default();
        s.process.status = BackupPhase::Running;
        s.process.timing.start = m.started.map(|t| t.to_string());
        s.sg_backup_config = Some(self.configs[i].clone());
        s.progress = Some(m.progress());
        set_child(&self.children, &self.names[i], &s).await;
    }

    /// Writes the sharded backup's progress (nothing else of its status).
    async fn write_sum(&self, p: &BackupProgress) {
        let written = async {
            let Some(obj) = self.api.get_opt(&self.sharded).await? else {
                return Ok(());
            };
            let old = obj.status.clone().unwrap_or_default();
            if old.process.status != BackupPhase::Running {
                return Ok(());
            }
            let new = shardvault_api::shardedbackup::ShardedBackupStatus {
                progress: Some(p.clone()),
                ..old.clone()
            };
            status::replace(&self.api, &obj, &old, &new).await
        };
        if let Err(e) = written.await {
            tracing::warn!(
                "SGShardedBackup {}: cannot write its progress: {e}",
                self.sharded
            );
        }
    }
}

/// The sharded backup's progress: the members' bytes summed, at the step of the whole (or
/// copying while any member copies).
fn sum(members: &[Member], step: Option<BackupStep>) -> BackupProgress {
    let bytes = members
        .iter()
        .fold(WorkProgress::default(), |a, m| WorkProgress {
            done: a.done + m.bytes.done,
            total: a.total + m.bytes.total,
        });
    let began = members.iter().filter_map(|m| m.copy_began).min();
    let step = step.unwrap_or(if members.iter().all(|m| m.done) {
        BackupStep::Copied
    } else if began.is_some() {
        BackupStep::Copying
    } else {
        BackupStep::Starting
    });
    progress(step, bytes, began)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardvault_api::progress::percent;

    #[test]
    fn the_sum_adds_members_and_takes_the_step_of_the_whole() {
        let copying = |done, total| Member {
            copy_began: Some(Instant::now()),
            bytes: WorkProgress { done, total },
            step: BackupStep::Copying,
            ..Member::default()
        };
        let members = [copying(10, 100), copying(30, 50), Member::default()];
        let p = sum(&members, None);
        assert_eq!(
            (
                p.phase,
                p.bytes_done,
                p.bytes_total,
                percent(p.bytes_done, p.bytes_total)
            ),
            (BackupStep::Copying, 40, 150, 26)
        );
        assert_eq!(sum(&[], None).phase, BackupStep::Copied);
        assert_eq!(sum(&[Member::default()], None).phase, BackupStep::Starting);
        let p = sum(&members, Some(BackupStep::WaitingForWal));
        assert_eq!(p.phase, BackupStep::WaitingForWal);
    }
}
