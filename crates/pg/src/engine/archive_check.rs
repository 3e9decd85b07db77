//! Gaps in the WAL archive: every segment from the oldest backup's start to the newest
//! archived segment must be there, on the timeline the newest timeline's history says, with
//! the history files of the timelines on the way.

use std::collections::BTreeSet;

use shardvault_storage::StorageError;

use super::layout::{self, Lsn, parse_segment, segment_name};
use super::manifest::list_backups;
use super::prune::list_wal;
use super::{EngineError, Repo};

/// What a check of the WAL archive found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The oldest backup, whose start the check begins at.
    pub backup: String,
    /// First segment checked.
    pub first: String,
    /// Newest archived segment, the last one checked.
    pub last: String,
    /// Segments checked.
    pub checked: u64,
    /// Segments missing from the archive, oldest first.
    pub missing: Vec<String>,
    /// Timeline history files missing from the archive.
    pub missing_history: Vec<String>,
}

impl ArchiveReport {
    /// Whether nothing is missing.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.missing_history.is_empty()
    }
}

/// The newest timeline with a plain segment among the archived `files`.
fn newest_timeline(files: &[String], wal_segment_size: u64) -> Option<u32> {
    files
        .iter()
        .filter_map(|f| parse_segment(f, wal_segment_size))
        .map(|(tli, _)| tli)
        .max()
}

/// `(timeline, first segment of its successor)` of each line of a timeline history file.
fn switches(history: &str, wal_segment_size: u64) -> Vec<(u32, u64)> {
    history
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let tli: u32 = fields.next()?.parse().ok()?;
            let at: Lsn = fields.next()?.parse().ok()?;
            Some((tli, at.0 / wal_segment_size))
        })
        .collect()
}

/// Checks the archived WAL `files` from segment `start` (of backup `backup`) to the newest
/// segment; `history` is the newest timeline's history file when it is archived.
pub fn check(
    files: &[String],
    backup: &str,
    start: &str,
    wal_segment_size: u64,
    history: Option<&str>,
) -> Result<ArchiveReport, EngineError> {
    let (first_tli, first) = parse_segment(start, wal_segment_size).ok_or_else(|| {
        EngineError::Config(format!(
            "backup {backup} names {start:?} as its first WAL segment, which is not a segment name"
        ))
    })?;
    let present: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let newest = newest_timeline(files, wal_segment_size)
        .unwrap_or(first_tli)
        .max(first_tli);
    let last = files
        .iter()
        .filter_map(|f| parse_segment(f, wal_segment_size))
        .filter(|(tli, _)| *tli == newest)
        .map(|(_, segno)| segno)
        .max()
        .unwrap_or(first)
        .max(first);
    let mut missing_history = Vec::new();
    let path = if newest == first_tli {
        Some(Vec::new())
    } else {
        let own = format!("{newest:08X}.history");
        match history {
            Some(text) => {
                let path = switches(text, wal_segment_size);
                let later = path.iter().map(|(t, _)| *t).filter(|t| *t > first_tli);
                for tli in later.chain([newest]) {
                    let name = format!("{tli:08X}.history");
                    if !present.contains(name.as_str()) {
                        missing_history.push(name);
                    }
                }
                Some(path)
            }
            None => {
                missing_history.push(own);
                None
            }
        }
    };
    let mut missing = Vec::new();
    for segno in first..=last {
        let name = |tli| segment_name(tli, segno, wal_segment_size);
        let (found, tli) = match &path {
            Some(path) => {
                let tli = path
                    .iter()
                    .find(|(_, switch)| segno < *switch)
                    .map_or(newest, |(tli, _)| *tli);
                (present.contains(name(tli).as_str()), tli)
            }
            // Without the history any timeline's copy counts.
            None => (
                (first_tli..=newest).any(|tli| present.contains(name(tli).as_str())),
                newest,
            ),
        };
        if !found {
            missing.push(name(tli));
        }
    }
    Ok(ArchiveReport {
        backup: backup.to_string(),
        first: start.to_string(),
        last: segment_name(newest, last, wal_segment_size),
        checked: last - first + 1,
        missing,
        missing_history,
    })
}

/// Checks the archive of `repo` from its oldest backup's start; None when it holds no backup.
pub async fn check_archive(repo: &Repo) -> Result<Option<ArchiveReport>, EngineError> {
    let backups = list_backups(repo).await?;
    let Some(oldest) = backups.first() else {
        return Ok(None);
    };
    let files = list_wal(repo).await?;
    let size = oldest.wal_segment_size;
    let history = match newest_timeline(&files, size).filter(|t| *t > oldest.timeline) {
        None => None,
        Some(tli) => match repo
            .get(&layout::wal_key(&format!("{tli:08X}.history")))
            .await
        {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(EngineError::Storage(StorageError::NotFound { .. })) => None,
            Err(e) => return Err(e),
        },
    };
    check(
        &files,
        &oldest.name,
        &oldest.start_wal_file,
        size,
        history.as_deref(),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_gap_on_one_timeline_is_named() {
        let files = names(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000005",
        ]);
        let r = check(&files, "b", "000000010000000000000002", MB16, None).unwrap();
        assert_eq!(r.missing, names(&["000000010000000000000004"]));
        assert_eq!(
            (r.checked, r.last.as_str()),
            (4, "000000010000000000000005")
        );
        assert!(!r.complete());
        let r = check(&files[..2], "b", "000000010000000000000002", MB16, None).unwrap();
        assert!(r.complete(), "{r:?}");
    }

    #[test]
    fn a_timeline_switch_follows_the_history_and_needs_it() {
        // Timeline 2 branched off timeline 1 in segment 4.
        let history = "1\t0/4000100\tno recovery target specified\n";
        let mut files = names(&[
            "000000010000000000000003",
            "000000010000000000000004.partial",
            "000000020000000000000004",
            "000000020000000000000005",
            "00000002.history",
        ]);
        let r = check(&files, "b", "000000010000000000000003", MB16, Some(history)).unwrap();
        assert!(r.complete(), "{r:?}");
        files.remove(3);
        files.pop();
        let r = check(&files, "b", "000000010000000000000003", MB16, Some(history)).unwrap();
        assert_eq!(r.missing_history, names(&["00000002.history"]));
        assert!(r.missing.is_empty(), "{r:?}");
        let r = check(&files, "b", "000000010000000000000003", MB16, None).unwrap();
        assert_eq!(r.missing_history, names(&["00000002.history"]));
        let files = names(&[
            "000000010000000000000003",
            "000000010000000000000004",
            "000000020000000000000005",
            "00000002.history",
        ]);
        let r = check(&files, "b", "000000010000000000000003", MB16, Some(history)).unwrap();
        assert_eq!(
            r.missing,
            names(&["000000020000000000000004"]),
            "the old timeline's copy is not replayed"
        );
    }
}
