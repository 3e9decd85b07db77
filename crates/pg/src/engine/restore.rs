//! Restore of a stored base backup into an empty directory, set up to recover from the WAL
//! archive to a target and promote.

use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use shardvault_storage::Destination;

use super::chain::{PartToRead, load_chain, parts_to_read};
use super::datadir::CONTROL_FILE;
use super::manifest::{Chunk, FileEntry, Manifest, combined_crc, load_manifest};
use super::{EngineError, Progress, Repo, blocking, layout};
use crate::user;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// As soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// At a restore point made with `pg_create_restore_point`.
    Name(String),
    /// At a commit time; `inclusive` also replays commits exactly at `time`.
    Time {
        time: jiff::Timestamp,
        inclusive: bool,
    },
    /// At the end of the archived WAL.
    Latest,
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Immediate => f.write_str("until the backup is consistent"),
            RecoveryTarget::Name(name) => write!(f, "to restore point {name}"),
            RecoveryTarget::Time {
                time,
                inclusive: true,
            } => write!(f, "to time {time}, including commits at it"),
            RecoveryTarget::Time {
                time,
                inclusive: false,
            } => write!(f, "to time {time}, excluding commits at it"),
            RecoveryTarget::Latest => f.write_str("to the end of the archived WAL"),
        }
    }
}

/// How to restore a backup.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Name of the backup to restore.
    pub backup: String,
    /// Data directory to create (missing or empty).
    pub pgdata: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// Parts downloaded, decoded and written at once.
    pub concurrency: usize,
    /// `restore_command` for recovery (see [`super::wal::restore_command`]).
    pub restore_command: String,
    /// Directory under which tablespaces are recreated as `<dir>/<oid>`; their original
    /// locations when None.
    pub tablespace_dir: Option<PathBuf>,
    /// Called as file data is written: bytes done, bytes in total.
    pub progress: Option<Progress>,
}

/// A value quoted for postgresql.conf.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The recovery settings appended to `postgresql.auto.conf`.
fn recovery_settings(backup: &str, restore_command: &str, target: &RecoveryTarget) -> String {
    let mut s = format!(
        "\n# Added by shardvault restore of backup {backup}\nrestore_command = {}\nrecovery_target_timeline = 'latest'\n",
        conf_quote(restore_command)
    );
    match target {
        RecoveryTarget::Immediate => s.push_str("recovery_target = 'immediate'\n"),
        RecoveryTarget::Name(n) => {
            s.push_str(&format!("recovery_target_name = {}\n", conf_quote(n)))
        }
        RecoveryTarget::Time { time, inclusive } => {
            let t = time.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
            s.push_str(&format!(
                "recovery_target_time = {}\nrecovery_target_inclusive = {}\n",
                conf_quote(&t),
                if *inclusive { "on" } else { "off" }
            ));
        }
        RecoveryTarget::Latest => {}
    }
    s.push_str("recovery_target_action = 'promote'\n");
    s
}

/// Fails unless `dir` is missing or an empty directory.
fn check_empty(dir: &Path) -> Result<(), EngineError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(EngineError::NotEmpty { path: dir.into() }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(dir)(e)),
    }
}

/// Tells whether a stored relative path stays inside the directory it is restored into.
fn stays_inside(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Checks that every path stays inside the data directory, tablespace OIDs are numbers, and
/// each file's chunks cover it in order and add up to its checksum.
pub(super) fn check_manifest(m: &Manifest) -> Result<(), EngineError> {
    let bad = |reason: String| EngineError::BadManifest {
        key: layout::manifest_key(&m.name),
        reason,
    };
    if let Some(d) = m.directories.iter().find(|d| !stays_inside(&d.path)) {
        return Err(bad(format!(
            "directory {:?} escapes the data directory",
            d.path
        )));
    }
    if let Some(t) = m
        .tablespaces
        .iter()
        .find(|t| t.oid.is_empty() || !t.oid.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(format!("tablespace OID {:?} is not a number", t.oid)));
    }
    for f in &m.files {
        let mut at = 0;
        let mut whole = true;
        for c in &f.chunks {
            let (from, len) = c.window();
            let known = match c.source {
                None => c.part < m.parts,
                Some(i) => (i as usize) < m.chain.len(),
            };
            let fits = c.skip + c.take.unwrap_or(0) <= c.len;
            if from != at || !known || !fits || len == 0 {
                whole = false;
                break;
            }
            at += len;
        }
        if !stays_inside(&f.path) {
            return Err(bad(format!("file {:?} escapes the data directory", f.path)));
        }
        if !whole || at != f.size || combined_crc(&f.chunks) != f.crc32c {
            return Err(bad(format!("entry of file {} is inconsistent", f.path)));
        }
    }
    Ok(())
}

/// Checks that each tablespace's original location (used when no tablespace directory is
/// given) is a plain absolute path (no `..`), neither inside nor above the data directory,
/// and that no two tablespaces share one.
fn check_tablespace_locations(m: &Manifest, pgdata: &Path) -> Result<(), EngineError> {
    use std::path::Component;
    for (i, t) in m.tablespaces.iter().enumerate() {
        let plain = t.location.is_absolute()
            && t.location
                .components()
                .skip(1)
                .all(|c| matches!(c, Component::Normal(_)));
        let problem = if !plain {
            Some("is not a plain absolute path")
        } else if t.location.starts_with(pgdata) || pgdata.starts_with(&t.location) {
            Some("overlaps the data directory")
        } else if m.tablespaces[..i]
            .iter()
            .any(|o| o.location.starts_with(&t.location) || t.location.starts_with(&o.location))
        {
            Some("overlaps another tablespace")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(EngineError::BadManifest {
                key: layout::manifest_key(&m.name),
                reason: format!(
                    "tablespace {} location {} {problem}; restore it with --tablespace-dir",
                    t.oid,
                    t.location.display()
                ),
            });
        }
    }
    Ok(())
}

/// Restores backup `opts.backup` from `source` into `opts.pgdata`, ready to start and
/// recover to `opts.target`. Changes nothing if the directory is not empty.
pub async fn restore(source: &Destination, opts: &RestoreOptions) -> Result<Manifest, EngineError> {
    check_empty(&opts.pgdata)?;
    let repo = Repo::open(source)?;
    let manifest = load_manifest(&repo, &opts.backup).await?;
    if let Some(snapshot) = &manifest.snapshot {
        return Err(EngineError::Config(format!(
            "backup {} is a volume snapshot ({} snapshot {} {}): its data is not in storage; \
             restore it into a new cluster beside it (the runtime clones the snapshot), or \
             restore a copy of it in storage",
            manifest.name, snapshot.class, snapshot.name, snapshot.location
        )));
    }
    check_manifest(&manifest)?;
    let tablespaces: Vec<(String, PathBuf)> = manifest
        .tablespaces
        .iter()
        .map(|t| {
            let at = match &opts.tablespace_dir {
                Some(d) => d.join(&t.oid),
                None => t.location.clone(),
            };
            (t.oid.clone(), at)
        })
        .collect();
    if opts.tablespace_dir.is_none() {
        check_tablespace_locations(&manifest, &opts.pgdata)?;
    }
    for (_, at) in &tablespaces {
        check_empty(at)?;
    }
    let label = repo
        .get(&layout::backup_file_key(&manifest.name, "backup_label"))
        .await?;
    let chain = load_chain(&repo, &manifest).await?;
    let parts = parts_to_read(&manifest, &chain)?;

    let pgdata = opts.pgdata.clone();
    let m = manifest.clone();
    let spaces = tablespaces.clone();
    blocking(move || create_tree(&pgdata, &m, &spaces)).await?;

    let total = manifest.data_bytes();
    let done = Arc::new(AtomicU64::new(0));
    if let Some(p) = &opts.progress {
        p(0, total);
    }
    let files: Arc<Vec<FileEntry>> = Arc::new(manifest.files.clone());
    let concurrency = opts.concurrency.max(1);
    let control: Vec<Vec<u8>> = futures::stream::iter(parts)
        .map(|PartToRead { key, chunks }| {
            let repo = repo.clone();
            let files = files.clone();
            let pgdata = opts.pgdata.clone();
            let done = done.clone();
            let progress = opts.progress.clone();
            async move {
                let payload = repo.get(&key).await?;
                let (control, bytes) =
                    blocking(move || write_part(&pgdata, &key, &payload, &files, &chunks)).await?;
                let now = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                if let Some(p) = &progress {
                    p(now, total);
                }
                Ok::<_, EngineError>(control)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    // Writeback was started as parts were written; now wait for it, file by file (only our
    // own files, never the whole filesystem), in parallel.
    futures::stream::iter(
        manifest
            .files
            .iter()
            .filter(|f| f.path != CONTROL_FILE && f.size > 0),
    )
    .map(|f| {
        let path = opts.pgdata.join(&f.path);
        blocking(move || {
            std::fs::File::open(&path)
                .and_then(|file| file.sync_data())
                .map_err(EngineError::io(&path))
        })
    })
    .buffer_unordered(concurrency)
    .try_collect::<Vec<()>>()
    .await?;
    let control: Vec<u8> = control.into_iter().flatten().collect();
    let control_entry = manifest.files.iter().find(|f| f.path == CONTROL_FILE);
    if control_entry.is_none_or(|f| f.size != control.len() as u64) {
        return Err(EngineError::BadManifest {
            key: layout::manifest_key(&manifest.name),
            reason: format!("no complete {CONTROL_FILE}"),
        });
    }
    let spcmap = if manifest.has_tablespace_map {
        Some(tablespace_map(&tablespaces))
    } else {
        None
    };
    let settings = recovery_settings(&manifest.name, &opts.restore_command, &opts.target);
    let pgdata = opts.pgdata.clone();
    blocking(move || finish(&pgdata, &label, spcmap.as_deref(), &settings, &control)).await?;
    Ok(manifest)
}

/// Makes `opts.pgdata`, a clone of the volume snapshot of backup `opts.backup` made by the
/// runtime, ready to start and recover to `opts.target` with the label stored in `source`.
pub async fn restore_snapshot_clone(
    source: &Destination,
    opts: &RestoreOptions,
) -> Result<Manifest, EngineError> {
    let repo = Repo::open(source)?;
    let manifest = load_manifest(&repo, &opts.backup).await?;
    if manifest.snapshot.is_none() {
        return Err(EngineError::Config(format!(
            "backup {} is not a volume snapshot: restore it without --snapshot-clone into an empty directory",
            manifest.name
        )));
    }
    let label = repo
        .get(&layout::backup_file_key(&manifest.name, "backup_label"))
        .await?;
    let settings = recovery_settings(&manifest.name, &opts.restore_command, &opts.target);
    let (pgdata, m) = (opts.pgdata.clone(), manifest.clone());
    blocking(move || {
        super::snapshot::prepare_clone(&pgdata, &m)?;
        write_recovery_files(&pgdata, &label, None, &settings)?;
        sync_dirs(&pgdata)
    })
    .await?;
    tracing::info!(backup = %manifest.name, pgdata = %opts.pgdata.display(), "snapshot clone ready to recover");
    Ok(manifest)
}

/// `tablespace_map` content for tablespaces at their restored locations.
fn tablespace_map(spaces: &[(String, PathBuf)]) -> String {
    spaces
        .iter()
        .map(|(oid, at)| format!("{oid} {}\n", at.display()))
        .collect()
}

/// Creates the data directory (0700), every directory of the backup and the tablespaces
/// with their links.
fn create_tree(
    pgdata: &Path,
    m: &Manifest,
    spaces: &[(String, PathBuf)],
) -> Result<(), EngineError> {
    user::create_dir_all_for_server(pgdata).map_err(EngineError::io(pgdata))?;
    set_mode(pgdata, 0o700)?;
    for d in &m.directories {
        let path = pgdata.join(&d.path);
        if let Some((_, at)) = d
            .path
            .strip_prefix("pg_tblspc/")
            .and_then(|oid| spaces.iter().find(|(o, _)| o == oid))
        {
            user::create_dir_all_for_server(at).map_err(EngineError::io(at))?;
            set_mode(at, 0o700)?;
            std::os::unix::fs::symlink(at, &path).map_err(EngineError::io(&path))?;
            continue;
        }
        std::fs::create_dir(&path).map_err(EngineError::io(&path))?;
        set_mode(&path, d.mode)?;
    }
    for f in m.files.iter().filter(|f| f.path != CONTROL_FILE) {
        let path = pgdata.join(&f.path);
        let file = open_for_write(&path, f.mode)?;
        if f.size > 0 {
            // One extent allocation instead of one per write (parts arrive in any order);
            // where the filesystem cannot, the file grows as it is written.
            let _ = nix::fcntl::fallocate(
                &file,
                nix::fcntl::FallocateFlags::empty(),
                0,
                f.size as libc::off_t,
            );
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EngineError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(EngineError::io(path))
}

fn open_for_write(path: &Path, mode: u32) -> Result<std::fs::File, EngineError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(EngineError::io(path))
}

/// Writes the windows of the chunks of one decoded part, each stored chunk checked against
/// its checksum once; returns the control file's bytes (written last, by [`finish`]) and
/// the bytes written. Writeback of what was written starts at once, without waiting.
fn write_part(
    pgdata: &Path,
    key: &str,
    payload: &[u8],
    files: &[FileEntry],
    chunks: &[(usize, Chunk)],
) -> Result<(Vec<u8>, u64), EngineError> {
    let mut control = Vec::new();
    let mut bytes = 0;
    let mut checked = std::collections::HashSet::new();
    let mut open: Option<Written> = None;
    for (i, c) in chunks {
        let f = &files[*i];
        let corrupt = |reason: String| EngineError::Corrupt {
            object: key.to_string(),
            reason: format!(
                "file {} bytes {}..{}: {reason}",
                f.path,
                c.offset,
                c.offset + c.len
            ),
        };
        let data = payload
            .get(c.at as usize..(c.at + c.len) as usize)
            .ok_or_else(|| corrupt("part is shorter than the manifest says".into()))?;
        if !checked.contains(&c.at) {
            let crc = crc32c::crc32c(data);
            if crc != c.crc32c {
                return Err(corrupt(format!(
                    "checksum {crc:08x} instead of {:08x}",
                    c.crc32c
                )));
            }
            checked.insert(c.at);
        }
        let (offset, len) = c.window();
        let skip = (offset - c.offset) as usize;
        let data = &data[skip..skip + len as usize];
        if f.path == CONTROL_FILE {
            control.extend_from_slice(data);
            continue;
        }
        // A file's windows come one after another: it is opened once, and its writeback
        // started once for the range written.
        if open.as_ref().is_none_or(|o| o.index != *i) {
            if let Some(done) = open.take() {
                done.start_writeback();
            }
            let path = pgdata.join(&f.path);
            open = Some(Written {
                index: *i,
                file: open_for_write(&path, f.mode)?,
                path,
                from: offset,
                to: offset,
            });
        }
        let w = open.as_mut().expect("opened above");
        w.file
            .write_all_at(data, offset)
            .map_err(EngineError::io(&w.path))?;
        (w.from, w.to) = (w.from.min(offset), w.to.max(offset + len));
        bytes += len;
    }
    if let Some(done) = open {
        done.start_writeback();
    }
    Ok((control, bytes))
}

/// A file being written by [`write_part`] and the range written so far.
struct Written {
    index: usize,
    file: std::fs::File,
    path: PathBuf,
    from: u64,
    to: u64,
}

impl Written {
    /// Asks the kernel to start writing the range back, without waiting (a no-op where the
    /// call is not supported); the final flush then finds little left to do.
    fn start_writeback(self) {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.from as libc::off64_t,
                (self.to - self.from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

/// Writes backup_label, tablespace_map, recovery settings and `recovery.signal`, gives the
/// tree to the server user, syncs every directory, and only then puts `pg_control` in place.
fn finish(
    pgdata: &Path,
    label: &[u8],
    spcmap: Option<&str>,
    settings: &str,
    control: &[u8],
) -> Result<(), EngineError> {
    write_recovery_files(pgdata, label, spcmap, settings)?;
    user::chown_tree_to_server_user(pgdata).map_err(EngineError::io(pgdata))?;
    let links = pgdata.join("pg_tblspc");
    for link in std::fs::read_dir(&links).map_err(EngineError::io(&links))? {
        let link = link.map_err(EngineError::io(&links))?.path();
        let at = std::fs::read_link(&link).map_err(EngineError::io(&link))?;
        user::chown_tree_to_server_user(&at).map_err(EngineError::io(&at))?;
        sync_dirs(&at)?;
    }
    sync_dirs(pgdata)?;
    let target = pgdata.join(CONTROL_FILE);
    let tmp = target.with_extension("shardvault-tmp");
    let mut f = open_for_write(&tmp, 0o600)?;
    f.write_all(control).map_err(EngineError::io(&tmp))?;
    f.sync_all().map_err(EngineError::io(&tmp))?;
    user::chown_to_server_user(&tmp).map_err(EngineError::io(&tmp))?;
    std::fs::rename(&tmp, &target).map_err(EngineError::io(&target))?;
    sync_dir(&pgdata.join("global"))
}

/// Writes backup_label, tablespace_map, `recovery.signal` and the recovery settings (appended
/// to `postgresql.auto.conf`), each synced.
fn write_recovery_files(
    pgdata: &Path,
    label: &[u8],
    spcmap: Option<&str>,
    settings: &str,
) -> Result<(), EngineError> {
    let write = |name: &str, data: &[u8]| {
        let path = pgdata.join(name);
        let mut f = open_for_write(&path, 0o600)?;
        f.write_all(data).map_err(EngineError::io(&path))?;
        f.sync_all().map_err(EngineError::io(&path))
    };
    write("backup_label", label)?;
    if let Some(map) = spcmap {
        write("tablespace_map", map.as_bytes())?;
    }
    write("recovery.signal", b"")?;
    let auto = pgdata.join("postgresql.auto.conf");
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&auto)
        .map_err(EngineError::io(&auto))?;
    conf.write_all(settings.as_bytes())
        .map_err(EngineError::io(&auto))?;
    conf.sync_all().map_err(EngineError::io(&auto))
}

/// Flushes a directory's entries (names created, renamed) to disk.
fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(EngineError::io(dir))
}

/// Flushes `dir` and every directory below it (files were flushed as they were written).
fn sync_dirs(dir: &Path) -> Result<(), EngineError> {
    for entry in std::fs::read_dir(dir).map_err(EngineError::io(dir))? {
        let entry = entry.map_err(EngineError::io(dir))?;
        if entry.file_type().map_err(EngineError::io(dir))?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_settings_quote_and_target() {
        let s = recovery_settings(
            "b1",
            "/bin/sv wal-fetch %f %p --config '/x/it''s.json'",
            &RecoveryTarget::Time {
                time: "2026-01-02T03:04:05.5Z".parse().unwrap(),
                inclusive: false,
            },
        );
        assert!(
            s.contains("restore_command = '/bin/sv wal-fetch %f %p --config ''/x/it''''s.json'''"),
            "{s}"
        );
        assert!(
            s.contains("recovery_target_time = '2026-01-02 03:04:05.500000+00'"),
            "{s}"
        );
        assert!(s.contains("recovery_target_inclusive = off"), "{s}");
        assert!(s.contains("recovery_target_action = 'promote'"), "{s}");
        let s = recovery_settings("b1", "x", &RecoveryTarget::Name("rp'1".into()));
        assert!(s.contains("recovery_target_name = 'rp''1'"), "{s}");
        assert!(
            !recovery_settings("b1", "x", &RecoveryTarget::Latest).contains("recovery_target =")
        );
    }

    #[test]
    fn tablespace_locations_that_escape_are_refused() {
        let manifest = |locations: &[&str]| {
            let mut m: Manifest = serde_json::from_value(serde_json::json!({
                "format": 1, "name": "b1", "startLsn": "0/0", "endLsn": "0/0", "timeline": 1,
                "startWalFile": "", "endWalFile": "", "walSegmentSize": 16777216,
                "systemIdentifier": "1", "postgresVersion": "15", "postgresVersionNum": 150000,
                "fromReplica": false, "controlData": {}, "compression": "none",
                "size": {"compressed": 0, "uncompressed": 0},
                "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z",
                "hostname": "h", "pgdata": "/d", "parts": 0, "hasTablespaceMap": true,
                "tablespaces": [], "directories": [], "files": []
            }))
            .unwrap();
            m.tablespaces = locations
                .iter()
                .enumerate()
                .map(|(i, l)| super::super::manifest::Tablespace {
                    oid: format!("{}", 16384 + i),
                    location: l.into(),
                })
                .collect();
            m
        };
        let pgdata = Path::new("/srv/pg/data");
        assert!(check_tablespace_locations(&manifest(&["/srv/ts1", "/srv/ts2"]), pgdata).is_ok());
        for (locations, problem) in [
            (&["/srv/pg/data/x"][..], "overlaps the data directory"),
            (&["/srv"][..], "overlaps the data directory"),
            (&["/srv/ts/../../etc"][..], "is not a plain absolute path"),
            (&["ts"][..], "is not a plain absolute path"),
            (
                &["/srv/ts", "/srv/ts/inner"][..],
                "overlaps another tablespace",
            ),
        ] {
            let err = check_tablespace_locations(&manifest(locations), pgdata).unwrap_err();
            assert!(err.to_string().contains(problem), "{locations:?}: {err}");
            assert!(err.to_string().contains("--tablespace-dir"), "{err}");
        }
    }

    #[test]
    fn paths_that_escape_are_refused() {
        assert!(stays_inside("base/1/123"));
        for p in ["", "../x", "base/../../x", "/etc/passwd", "./x"] {
            assert!(!stays_inside(p), "{p}");
        }
    }
}
