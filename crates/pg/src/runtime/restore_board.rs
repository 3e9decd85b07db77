//! How far the restores of a cluster's members are, as the runtime sees them, for the
//! controller to put in status while the runtime is busy restoring.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::node_events::WorkProgress;

/// How far the restore of one member's primary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreProgress {
    /// Its backup's files are being written.
    Copying(WorkProgress),
    /// It replays WAL: the position replayed and the commit time of the last transaction.
    Replaying { lsn: String, time: Option<String> },
}

/// The latest [`RestoreProgress`] of each member being restored, by member name.
#[derive(Debug, Clone, Default)]
pub struct RestoreBoard(Arc<Mutex<BTreeMap<String, RestoreProgress>>>);

impl RestoreBoard {
    /// Records where `member` is.
    pub fn set(&self, member: &str, progress: RestoreProgress) {
        self.lock().insert(member.to_string(), progress);
    }

    /// Forgets `member` (restored, or failed).
    pub fn clear(&self, member: &str) {
        self.lock().remove(member);
    }

    /// Every member being restored and where it is.
    pub fn snapshot(&self) -> BTreeMap<String, RestoreProgress> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RestoreProgress>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
