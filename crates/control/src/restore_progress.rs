//! Where each member of a cluster being restored is, from the runtime's restore board into
//! `status.restore.members[].progress`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use shardvault_api::progress::{RestoreStep, average_rate};
use shardvault_api::shardedcluster::RestoreStatus;
use shardvault_pg::runtime::RestoreProgress as Seen;

/// When each member began to copy, for the average rate.
#[derive(Default)]
pub struct Rates(HashMap<String, Instant>);

/// Sets the progress of every member of `status` from what the runtime `seen`; members it
/// no longer lists keep what they had (their outcome replaces it). `target_lsns` are the
/// members' restore point positions (member order) when the target is the backup's own.
/// True when something changed.
pub fn apply(
    status: &mut RestoreStatus,
    seen: &BTreeMap<String, Seen>,
    target_lsns: &[Option<String>],
    rates: &mut Rates,
) -> bool {
    let mut changed = false;
    for (i, m) in status.members.iter_mut().enumerate() {
        let Some(now) = seen.get(&m.name) else {
            continue;
        };
        let mut p = m.progress.clone().unwrap_or_default();
        let before = p.clone();
        match now {
            Seen::Copying(bytes) => {
                let began = rates.0.entry(m.name.clone()).or_insert_with(Instant::now);
                p.phase = RestoreStep::Copying;
                p.bytes_done = bytes.done;
                p.bytes_total = bytes.total;
                p.bytes_per_second = average_rate(bytes.done, *began);
            }
            Seen::Replaying { lsn, time } => {
                p.phase = RestoreStep::Replaying;
                p.bytes_done = p.bytes_total;
                p.replay_lsn = Some(lsn.clone());
                p.replay_time = time.clone();
            }
        }
        p.target_lsn = target_lsns.get(i).cloned().flatten();
        p.updated = before.updated.clone();
        if p != before || m.progress.is_none() {
            p.updated = jiff::Timestamp::now().to_string();
            m.progress = Some(p);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardvault_api::shardedcluster::{MemberRestoreStatus, RestorePhase};
    use shardvault_pg::node_events::WorkProgress;

    #[test]
    fn members_move_from_copying_to_replaying() {
        let mut status = RestoreStatus {
            from_backup: "b".into(),
            target: None,
            members: ["c-coord", "c-shard0"]
                .into_iter()
                .map(|n| MemberRestoreStatus {
                    name: n.into(),
                    sg_backup: format!("b-{n}"),
                    phase: RestorePhase::Restoring,
                    failure: None,
                    failed_attempts: 0,
                    progress: None,
                })
                .collect(),
        };
        let mut rates = Rates::default();
        let targets = [Some("0/3000000".to_string()), None];
        let seen = BTreeMap::from([(
            "c-coord".to_string(),
            Seen::Copying(WorkProgress { done: 5, total: 10 }),
        )]);
        assert!(apply(&mut status, &seen, &targets, &mut rates));
        assert!(
            !apply(&mut status, &seen, &targets, &mut rates),
            "no change, no write"
        );
        let coord = status.members[0].progress.clone().unwrap();
        assert_eq!(
            (coord.phase, coord.bytes_done, coord.bytes_total),
            (RestoreStep::Copying, 5, 10)
        );
        assert_eq!(coord.target_lsn.as_deref(), Some("0/3000000"));
        assert!(status.members[1].progress.is_none());
        let seen = BTreeMap::from([(
            "c-coord".to_string(),
            Seen::Replaying {
                lsn: "0/2000100".into(),
                time: None,
            },
        )]);
        assert!(apply(&mut status, &seen, &targets, &mut rates));
        let coord = status.members[0].progress.clone().unwrap();
        assert_eq!(
            (coord.phase, coord.bytes_done, coord.replay_lsn.as_deref()),
            (RestoreStep::Replaying, 10, Some("0/2000100"))
        );
    }
}
