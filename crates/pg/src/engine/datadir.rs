//! Which parts of a data directory a base backup reads, following PostgreSQL's own rules
//! (those of `pg_basebackup`): what is rebuilt at startup or belongs to the running server
//! is skipped, the directories themselves are kept.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EngineError;
use super::manifest::{DirEntry, Tablespace};

/// Top-level directories whose contents are skipped (the directory itself is kept).
const SKIP_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Top-level files never copied: the running server's, or written from `pg_backup_stop`'s
/// answer, or ones that would change how a restored copy starts.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "standby.signal",
    "recovery.signal",
];

/// The control file, read after everything else (a standby's backup ends at its
/// minimum recovery point) and restored last.
pub(crate) const CONTROL_FILE: &str = "global/pg_control";

/// A file to back up.
#[derive(Debug, Clone)]
pub(crate) struct FileToRead {
    /// Path relative to the data directory (tablespaces under `pg_tblspc/<oid>/`).
    pub rel: String,
    /// Where to read it.
    pub abs: PathBuf,
    /// Size when listed.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, nanoseconds since the Unix epoch, when listed.
    pub mtime_ns: Option<i64>,
}

/// What a backup reads: directories, files and tablespaces.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub dirs: Vec<DirEntry>,
    pub files: Vec<FileToRead>,
    pub tablespaces: Vec<Tablespace>,
}

fn skipped_anywhere(name: &str) -> bool {
    name.starts_with("pgsql_tmp") || name == "pg_internal.init" || is_temp_relation(name)
}

/// Temporary relation files: `t<backend>_<relfilenode>[_fork][.segment]`.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, tail)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && tail.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// Lists `pgdata` (and the tablespaces linked from `pg_tblspc`), tolerating entries that
/// vanish while listed.
pub(crate) fn list(pgdata: &Path) -> Result<Listing, EngineError> {
    let mut listing = Listing::default();
    walk(pgdata, "", &mut listing)?;
    listing.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(listing)
}

fn walk(dir: &Path, rel: &str, out: &mut Listing) -> Result<(), EngineError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(EngineError::io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => names.push(e.file_name()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(dir)(e)),
        }
    }
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else {
            return Err(EngineError::Config(format!(
                "{}: file name {name:?} is not UTF-8; PostgreSQL does not create such names, move it out of the data directory",
                dir.display()
            )));
        };
        let abs = dir.join(name);
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        if skipped_anywhere(name) || (rel.is_empty() && SKIP_FILES.contains(&name)) {
            continue;
        }
        if rel == "pg_tblspc" {
            let location = match std::fs::read_link(&abs) {
                Ok(l) => l,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(EngineError::io(&abs)(e)),
            };
            out.tablespaces.push(Tablespace {
                oid: name.to_string(),
                location,
            });
        }
        let meta = match std::fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io(&abs)(e)),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.dirs.push(DirEntry {
                path: child.clone(),
                mode,
            });
            if rel.is_empty() && SKIP_CONTENTS.contains(&name) {
                if name == "pg_wal" {
                    out.dirs.push(DirEntry {
                        path: "pg_wal/archive_status".into(),
                        mode,
                    });
                }
                continue;
            }
            walk(&abs, &child, out)?;
        } else if meta.is_file() {
            out.files.push(FileToRead {
                rel: child,
                abs,
                size: meta.len(),
                mode,
                mtime_ns: meta
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .and_then(|t| i64::try_from(t.as_nanosecond()).ok()),
            });
        }
    }
    Ok(())
}

/// Removes from a copy of a running server's data directory (a snapshot's clone) what a
/// base backup leaves out, keeping the directories (and an empty `pg_wal/archive_status`).
pub(crate) fn clear_server_state(pgdata: &Path) -> Result<(), EngineError> {
    let gone_ok = |path: &Path, r: std::io::Result<()>| match r {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(EngineError::io(path)(e)),
        _ => Ok(()),
    };
    for name in SKIP_FILES {
        let path = pgdata.join(name);
        gone_ok(&path, std::fs::remove_file(&path))?;
    }
    for name in SKIP_CONTENTS {
        let dir = pgdata.join(name);
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            r => r.map_err(EngineError::io(&dir))?,
        };
        for entry in entries {
            let path = entry.map_err(EngineError::io(&dir))?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone_ok(&path, removed)?;
        }
    }
    let status = pgdata.join("pg_wal/archive_status");
    std::fs::create_dir(&status).map_err(EngineError::io(&status))?;
    std::fs::set_permissions(&status, std::fs::Permissions::from_mode(0o700))
        .map_err(EngineError::io(&status))?;
    remove_skipped(pgdata)
}

/// Removes every entry below `dir` a backup skips wherever it is (temporary files).
fn remove_skipped(dir: &Path) -> Result<(), EngineError> {
    for entry in std::fs::read_dir(dir).map_err(EngineError::io(dir))? {
        let entry = entry.map_err(EngineError::io(dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(EngineError::io(&path))?.is_dir();
        let skipped = entry.file_name().to_str().is_some_and(skipped_anywhere);
        match (skipped, is_dir) {
            (true, true) => std::fs::remove_dir_all(&path).map_err(EngineError::io(&path))?,
            (true, false) => std::fs::remove_file(&path).map_err(EngineError::io(&path))?,
            (false, true) => remove_skipped(&path)?,
            (false, false) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_what_postgres_skips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "base/1",
            "pg_wal/archive_status",
            "pg_replslot/s",
            "global",
            "base/1/pgsql_tmp",
        ] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        for f in [
            "base/1/123",
            "base/1/t3_456",
            "base/1/pg_internal.init",
            "pg_wal/000000010000000000000001",
            "pg_replslot/s/state",
            "postmaster.pid",
            "global/pg_control",
            "PG_VERSION",
        ] {
            std::fs::write(p.join(f), b"x").unwrap();
        }
        let l = list(p).unwrap();
        let files: Vec<_> = l.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(files, ["PG_VERSION", "base/1/123", "global/pg_control"]);
        let dirs: Vec<_> = l.dirs.iter().map(|d| d.path.as_str()).collect();
        clear_server_state(p).unwrap();
        assert!(!p.join("postmaster.pid").exists());
        assert!(!p.join("pg_wal/000000010000000000000001").exists());
        assert!(p.join("pg_wal/archive_status").is_dir());
        assert!(!p.join("base/1/t3_456").exists() && !p.join("base/1/pgsql_tmp").exists());
        assert!(p.join("base/1/123").exists() && p.join("pg_replslot").is_dir());
        assert_eq!(
            dirs,
            [
                "base",
                "base/1",
                "global",
                "pg_replslot",
                "pg_wal",
                "pg_wal/archive_status"
            ]
        );
    }
}
