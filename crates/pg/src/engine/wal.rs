//! WAL archiving (`wal-push`), retrieval (`wal-fetch`) with prefetch, and waiting for a
//! segment to reach the archive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shardvault_storage::{Destination, StorageError};

use super::segment_identity::{SegmentExpectation, check_segment};
use super::{EngineError, Repo, blocking, layout};
use crate::config::NodeConfig;

/// Name of the directory beside the fetched file where prefetched segments wait.
pub const PREFETCH_DIR: &str = ".shardvault-prefetch";

/// `path` quoted for `/bin/sh` when it needs it.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `restore_command` that fetches through `shardvault wal-fetch` with node config `config`.
pub fn restore_command(shardvault_bin: &Path, config: &Path) -> String {
    format!(
        "{} wal-fetch %f %p --config {}",
        shell_quote(shardvault_bin),
        shell_quote(config)
    )
}

/// The `restore_command` that fetches through `shardvault wal-fetch` with the settings of the
/// server's environment (`SHARDVAULT_*` variables).
pub fn restore_command_from_environment(shardvault_bin: &Path) -> String {
    format!("{} wal-fetch %f %p", shell_quote(shardvault_bin))
}

/// What pushing a WAL file to one destination did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The file was stored.
    Stored,
    /// The same content was already archived (a retried `archive_command`).
    AlreadyArchived,
}

/// Archives the WAL file at `path` to every destination of `cfg`.
pub async fn push(cfg: &NodeConfig, path: &Path) -> Result<Vec<Pushed>, EngineError> {
    if cfg.destinations.is_empty() {
        return Err(EngineError::Config(format!(
            "node config of {} has no destinations: WAL has nowhere to go; add a backups entry to the cluster",
            cfg.member
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| EngineError::Config(format!("{} is not a WAL file path", path.display())))?
        .to_string();
    let file = path.to_path_buf();
    let data = blocking(move || std::fs::read(&file).map_err(EngineError::io(file))).await?;
    let data = std::sync::Arc::new(data);
    let pushes = cfg.destinations.iter().map(|dest| {
        let data = data.clone();
        let name = name.clone();
        async move { push_one(&Repo::open(dest)?, &name, data).await }
    });
    futures::future::try_join_all(pushes).await
}

async fn push_one(
    repo: &Repo,
    name: &str,
    data: std::sync::Arc<Vec<u8>>,
) -> Result<Pushed, EngineError> {
    let key = layout::wal_key(name);
    if repo.store.exists(&key).await? {
        let stored = match repo.get(&key).await {
            Ok(s) => s,
            // A corrupt copy is replaced by the good one we have.
            Err(EngineError::Storage(StorageError::Corrupt { .. })) => Vec::new(),
            Err(e) => return Err(e),
        };
        if stored == *data {
            return Ok(Pushed::AlreadyArchived);
        }
        if !stored.is_empty() {
            return Err(EngineError::WalConflict {
                name: name.to_string(),
                location: repo.store.describe(),
            });
        }
        tracing::warn!(wal = name, "stored copy is corrupt; replacing it");
    }
    repo.put(&key, data.to_vec()).await?;
    Ok(Pushed::Stored)
}

/// Where prefetched segments for fetches into `dest` are kept.
pub fn prefetch_dir(dest: &Path) -> PathBuf {
    dest.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(PREFETCH_DIR)
}

/// Where a fetched WAL file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Downloaded now.
    Downloaded,
    /// Taken from the prefetch directory.
    Prefetched,
}

/// Fetches WAL file `name` from `source` into `dest` (atomically: a temporary file beside
/// it, then a rename). A missing file is [`EngineError::WalNotFound`].
pub async fn fetch(source: &Destination, name: &str, dest: &Path) -> Result<Fetched, EngineError> {
    let dir = prefetch_dir(dest);
    let ready = dir.join(name);
    if ready.is_file() {
        std::fs::rename(&ready, dest).map_err(EngineError::io(dest))?;
        forget_older(&dir, name);
        return Ok(Fetched::Prefetched);
    }
    let repo = Repo::open(source)?;
    match download(&repo, name, dest).await {
        Err(e @ EngineError::WalNotFound { .. }) => {
            // A missing segment ends recovery; nothing prefetched beyond it is of use.
            // (Missing history files are asked for at every timeline check.)
            if layout::is_segment_name(name) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e)
        }
        other => {
            forget_older(&dir, name);
            other.map(|()| Fetched::Downloaded)
        }
    }
}

/// Removes prefetched segments older than `name` (replay is past them).
fn forget_older(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        if layout::is_segment_name(f) && f[..8] == name[..8.min(name.len())] && f < name {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

async fn download(repo: &Repo, name: &str, dest: &Path) -> Result<(), EngineError> {
    let data = match repo.get(&layout::wal_key(name)).await {
        Ok(d) => d,
        Err(EngineError::Storage(StorageError::NotFound { .. })) => {
            return Err(EngineError::WalNotFound {
                name: name.to_string(),
                location: repo.store.describe(),
            });
        }
        Err(e) => return Err(e),
    };
    // A segment swapped for another valid one would be replayed as if it were this one.
    let any = SegmentExpectation {
        postgres_version_num: 0,
        system_identifier: None,
        wal_segment_size: None,
    };
    check_segment(&layout::wal_key(name), name, &data, &any)?;
    let dest = dest.to_path_buf();
    blocking(move || write_atomically(&dest, &data)).await
}

/// Writes `data` to a temporary file beside `dest`, syncs it and renames it into place.
fn write_atomically(dest: &Path, data: &[u8]) -> Result<(), EngineError> {
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let tmp = dest.with_file_name(format!(".{file_name}.shardvault-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(EngineError::io(&tmp))?;
    f.write_all(data).map_err(EngineError::io(&tmp))?;
    f.sync_all().map_err(EngineError::io(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(EngineError::io(dest))
}

/// Downloads the `count` segments after `name` into `dir` (skipping those already there),
/// stopping at the first one not archived yet; only one prefetcher works on a directory
/// at a time. Returns how many were downloaded.
pub async fn prefetch(
    source: &Destination,
    name: &str,
    count: usize,
    wal_segment_size: u64,
    dir: &Path,
) -> Result<usize, EngineError> {
    let next = layout::next_segments(name, count, wal_segment_size);
    if next.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(dir).map_err(EngineError::io(dir))?;
    let lock_path = dir.join(".lock");
    let lock_file = std::fs::File::create(&lock_path).map_err(EngineError::io(&lock_path))?;
    let Ok(_lock) = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    else {
        return Ok(0);
    };
    let repo = Repo::open(source)?;
    let wanted: Vec<String> = next.into_iter().filter(|n| !dir.join(n).exists()).collect();
    let results: Vec<_> = futures::stream::iter(wanted)
        .map(|n| {
            let repo = &repo;
            async move { download(repo, &n, &dir.join(&n)).await }
        })
        .buffered(source.performance.download_concurrency.max(1))
        .collect()
        .await;
    let mut got = 0;
    for r in results {
        match r {
            Ok(()) => got += 1,
            Err(EngineError::WalNotFound { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Waits until WAL file `segment` is in `repo`'s archive, up to `timeout`.
pub async fn wait_archived(
    repo: &Repo,
    segment: &str,
    timeout: Duration,
) -> Result<(), EngineError> {
    let key = layout::wal_key(segment);
    let deadline = Instant::now() + timeout;
    loop {
        if repo.store.exists(&key).await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(EngineError::NotArchived {
                segment: segment.to_string(),
                secs: timeout.as_secs(),
                standby: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
