//! Files the daemon writes and reads back: written atomically (a fresh temporary file in the
//! same directory, then a rename) without ever following a symbolic link, and read back only
//! when nobody but us can have changed them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who owns a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The process writing it (root for the daemon).
    Us,
    /// The server user (node work reads it).
    ServerUser,
    /// Us, with the server user's group (it may read the file when the mode lets the group).
    UsWithServerGroup,
}

/// Writes `bytes` to `path` with `mode`: a new temporary file beside it (created exclusively,
/// never through a link), synced, given to `owner`, then renamed over `path`.
pub fn write(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, bytes, mode, owner).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32, owner: Owner) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = crate::user::server_ids() {
        match owner {
            Owner::Us => {}
            Owner::ServerUser => std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?,
            Owner::UsWithServerGroup => std::os::unix::fs::fchown(&f, None, Some(gid))?,
        }
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// A name beside `path` no other writer uses: `.<name>.<pid>.<n>.tmp`.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Reads `path` when it is a regular file (not a link) that only we (or root) can have
/// written: owned by us or root and writable by nobody else, in a directory likewise.
pub fn read_trusted(path: &Path) -> std::io::Result<Vec<u8>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    check_ours(dir, &std::fs::symlink_metadata(dir)?)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => untrusted(path, "it is a symbolic link"),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(untrusted(path, "it is not a regular file"));
    }
    check_ours(path, &meta)?;
    use std::io::Read;
    let mut bytes = Vec::new();
    (&f).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Fails unless `path` is owned by us or root and writable by nobody else.
pub fn check_ours(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(untrusted(
            path,
            &format!(
                "it is owned by uid {}, not by us (uid {euid}) or root",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            &format!("others may write it (mode {:o})", meta.mode() & 0o7777),
        ));
    }
    Ok(())
}

fn untrusted(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is not trusted: {why}; shardvault writes its own state there, remove it and let the daemon rewrite it",
            path.display()
        ),
    )
}

/// Creates `dir` and its missing parents owned by us, and makes `dir` itself ours with
/// `mode` (taking it back when it exists with another owner and is not a link): the server
/// user may then pass through but never replace what is inside.
pub fn create_own_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => untrusted(dir, "it is a symbolic link"),
            _ => e,
        })?;
    let meta = f.metadata()?;
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if meta.uid() != euid {
        std::os::unix::fs::fchown(&f, Some(euid), Some(egid))?;
    }
    if meta.mode() & 0o7777 != mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Opens `path` for reading without following a link at its last component.
pub fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_a_planted_link_and_never_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("observed.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = read_trusted(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        write(&path, b"{}", 0o600, Owner::Us).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(read_trusted(&path).unwrap(), b"{}");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn files_others_may_write_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.json");
        write(&path, b"{}", 0o666, Owner::Us).unwrap();
        let err = read_trusted(&path).unwrap_err();
        assert!(err.to_string().contains("others may write it"), "{err}");
    }
}
