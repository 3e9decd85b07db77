//! A filesystem storage confined to its root: every key is resolved one component at a time
//! from the root's directory handle, never through a symbolic link and never above the root,
//! on read, write, list and delete. Objects are 0600 and directories 0700, owned by the
//! owner of the root (the server user that archives WAL there); whole objects are staged in
//! the private `.shardvault-tmp` directory and renamed into place.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// Directory under the root where objects are written before being renamed into place.
pub(crate) const STAGING_DIR: &str = ".shardvault-tmp";

/// Staged files older than this are leftovers of a writer that died; removed on open.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// Flags of every directory opened below the root.
fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY
}

/// A filesystem storage root.
#[derive(Debug)]
pub(crate) struct FsRoot {
    root: PathBuf,
}

/// Why a key cannot be used, or the I/O error that happened.
#[derive(Debug)]
pub(crate) enum FsError {
    /// The key has an empty, `.` or `..` component.
    BadKey(String),
    /// A symbolic link (or something else than a directory) is in the way.
    Link(String),
    /// Any other failure.
    Io(std::io::Error),
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::BadKey(key) => write!(f, "key {key} has an empty, `.` or `..` component"),
            FsError::Link(key) => {
                write!(f, "{key} goes through a symbolic link or a non-directory")
            }
            FsError::Io(e) => e.fmt(f),
        }
    }
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> FsError {
        FsError::Io(e.into())
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        FsError::Io(e)
    }
}

impl FsError {
    /// True when what was asked for does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The components of `key`, each a plain name.
fn components(key: &str) -> Result<Vec<&str>, FsError> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(FsError::BadKey(key.to_string()));
    }
    Ok(parts)
}

impl FsRoot {
    /// A root at `root` (not touched until used).
    pub(crate) fn new(root: &Path) -> FsRoot {
        FsRoot { root: root.into() }
    }

    fn open_root(&self) -> Result<OwnedFd, FsError> {
        Ok(nix::fcntl::open(
            &self.root,
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )?)
    }

    /// The owner new objects and directories get when we are root (the root's owner).
    fn owner_of(fd: &OwnedFd) -> Result<Option<(u32, u32)>, FsError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let st = nix::sys::stat::fstat(fd)?;
        Ok(Some((st.st_uid, st.st_gid)))
    }

    /// Opens directory `name` in `parent` without following a link; creates it (0700) when
    /// `create` and it is missing.
    fn open_dir(
        parent: &OwnedFd,
        name: &str,
        create: Option<Option<(u32, u32)>>,
        key: &str,
    ) -> Result<OwnedFd, FsError> {
        match nix::fcntl::openat(parent, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOENT) if create.is_some() => {
                match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let fd = nix::fcntl::openat(parent, name, dir_flags(), Mode::empty())
                    .map_err(|e| Self::link_error(e, key))?;
                if let Some(Some((uid, gid))) = create {
                    std::os::unix::fs::fchown(&fd, Some(uid), Some(gid))?;
                }
                Ok(fd)
            }
            Err(e) => Err(Self::link_error(e, key)),
        }
    }

    fn link_error(e: Errno, key: &str) -> FsError {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => FsError::Link(key.to_string()),
            e => e.into(),
        }
    }

    /// The root, created (0700, with its missing parents) when it does not exist yet.
    fn open_or_create_root(&self) -> Result<OwnedFd, FsError> {
        match self.open_root() {
            Err(e) if e.is_not_found() => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)?;
                self.open_root()
            }
            other => other,
        }
    }

    /// The directory holding `key`'s last component, and that component.
    fn parent_of<'k>(&self, key: &'k str, create: bool) -> Result<(OwnedFd, &'k str), FsError> {
        let parts = components(key)?;
        let root = if create {
            self.open_or_create_root()?
        } else {
            self.open_root()?
        };
        let owner = if create {
            Some(Self::owner_of(&root)?)
        } else {
            None
        };
        let mut dir = root;
        for part in &parts[..parts.len() - 1] {
            dir = Self::open_dir(&dir, part, owner, key)?;
        }
        Ok((dir, parts[parts.len() - 1]))
    }

    /// Reads object `key` whole.
    pub(crate) fn read(&self, key: &str) -> Result<Vec<u8>, FsError> {
        let (dir, name) = self.parent_of(key, false)?;
        let fd = nix::fcntl::openat(
            &dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Self::link_error(e, key))?;
        let mut f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(FsError::Link(key.to_string()));
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// True when `key` is a regular file (a link is not an object).
    pub(crate) fn is_file(&self, key: &str) -> Result<bool, FsError> {
        let (dir, name) = match self.parent_of(key, false) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        match nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes object `key`: staged (0600) in the private staging directory, then renamed
    /// (again once when a delete removed its emptied directory in between).
    pub(crate) fn write(&self, key: &str, data: &[u8]) -> Result<(), FsError> {
        match self.write_once(key, data) {
            Err(FsError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.write_once(key, data)
            }
            other => other,
        }
    }

    fn write_once(&self, key: &str, data: &[u8]) -> Result<(), FsError> {
        let (dir, name) = self.parent_of(key, true)?;
        let root = self.open_root()?;
        let owner = Self::owner_of(&root)?;
        let staging = Self::staging(&root, owner)?;
        let tmp = temp_name();
        let fd = nix::fcntl::openat(
            &staging,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut f = std::fs::File::from(fd);
        let written = (|| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            f.write_all(data)?;
            f.sync_all()?;
            nix::fcntl::renameat(&staging, tmp.as_str(), &dir, name)?;
            Ok::<_, FsError>(())
        })();
        if written.is_err() {
            let _ = nix::unistd::unlinkat(
                &staging,
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        written
    }

    /// Opens (creating, 0700) the staging directory, made private to the root's owner.
    fn staging(root: &OwnedFd, owner: Option<(u32, u32)>) -> Result<OwnedFd, FsError> {
        let fd = Self::open_dir(root, STAGING_DIR, Some(owner), STAGING_DIR)?;
        let st = nix::sys::stat::fstat(&fd)?;
        if st.st_mode & 0o7777 != 0o700
            && (owner.is_some() || st.st_uid == nix::unistd::geteuid().as_raw())
        {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700))?;
        }
        if let Some((uid, gid)) = owner.filter(|o| *o != (st.st_uid, st.st_gid)) {
            std::os::unix::fs::fchown(&fd, Some(uid), Some(gid))?;
        }
        Ok(fd)
    }

    /// Makes the staging directory private and removes what writers that died left there
    /// (files older than an hour); does nothing when the root does not exist yet.
    pub(crate) fn sweep_staging(&self) -> Result<(), FsError> {
        let root = match self.open_root() {
            Ok(root) => root,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let owner = Self::owner_of(&root)?;
        let staging = Self::staging(&root, owner)?;
        let now = SystemTime::now();
        let dir = nix::dir::Dir::from_fd(staging.try_clone()?)?;
        for entry in dir.into_iter().flatten() {
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name == "." || name == ".." {
                continue;
            }
            let Ok(st) =
                nix::sys::stat::fstatat(&staging, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            if !is_dir
                && now
                    .duration_since(modified)
                    .is_ok_and(|age| age > STALE_STAGING)
            {
                let _ = nix::unistd::unlinkat(
                    &staging,
                    name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
        Ok(())
    }

    /// Every object below `dir` ("" for the whole storage) as keys from the root, links and
    /// the staging directory left out.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<String>, FsError> {
        let root = self.open_root()?;
        let mut fd = root;
        if !dir.is_empty() {
            for part in components(dir)? {
                fd = Self::open_dir(&fd, part, None, dir)?;
            }
        }
        let mut keys = Vec::new();
        Self::walk(fd, dir, &mut keys)?;
        Ok(keys)
    }

    fn walk(fd: OwnedFd, at: &str, keys: &mut Vec<String>) -> Result<(), FsError> {
        let listing = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for entry in listing {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." || (at.is_empty() && name == STAGING_DIR) {
                continue;
            }
            let key = if at.is_empty() {
                name.to_string()
            } else {
                format!("{at}/{name}")
            };
            let st = match nix::sys::stat::fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFREG => keys.push(key),
                SFlag::S_IFDIR => match nix::fcntl::openat(&fd, name, dir_flags(), Mode::empty()) {
                    Ok(sub) => Self::walk(sub, &key, keys)?,
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(Self::link_error(e, &key)),
                },
                _ => tracing::warn!(
                    "storage entry {key} is not a file or directory (a link?); it is left alone"
                ),
            }
        }
        Ok(())
    }

    /// Deletes object `key` (a link there is removed itself, never what it points to), then
    /// the directories it leaves empty, up to the root; a missing object is not an error.
    pub(crate) fn delete(&self, key: &str) -> Result<(), FsError> {
        let parts = components(key)?;
        let mut dirs = vec![match self.open_root() {
            Ok(root) => root,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }];
        for part in &parts[..parts.len() - 1] {
            match Self::open_dir(dirs.last().expect("the root"), part, None, key) {
                Ok(fd) => dirs.push(fd),
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let last = dirs.last().expect("the root");
        match nix::unistd::unlinkat(
            last,
            parts[parts.len() - 1],
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        // Emptied directories go too (a concurrent write into one retries, see `write`).
        for (depth, name) in parts[..parts.len() - 1].iter().enumerate().rev() {
            match nix::unistd::unlinkat(&dirs[depth], *name, nix::unistd::UnlinkatFlags::RemoveDir)
            {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Fails unless the root is a directory we can read (missing is fine: created on write).
    pub(crate) fn check(&self) -> Result<(), FsError> {
        match self.open_root() {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A staging file name no other writer uses: `<pid>-<n>-<nanos>`.
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn keys_with_dot_components_are_refused() {
        for key in ["../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(matches!(components(key), Err(FsError::BadKey(_))), "{key}");
        }
        assert_eq!(components("a/b").unwrap(), ["a", "b"]);
    }

    #[test]
    fn links_are_never_followed_on_read_write_list_or_delete() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let storage = tempfile::tempdir().unwrap();
        let fs = FsRoot::new(storage.path());
        std::os::unix::fs::symlink(outside.path(), storage.path().join("b1")).unwrap();
        std::os::unix::fs::symlink(&victim, storage.path().join("obj")).unwrap();

        assert!(matches!(fs.read("b1/victim"), Err(FsError::Link(_))));
        assert!(matches!(fs.read("obj"), Err(FsError::Link(_))));
        assert!(!fs.is_file("obj").unwrap());
        assert!(matches!(fs.write("b1/new", b"x"), Err(FsError::Link(_))));
        assert!(fs.list("").unwrap().is_empty());
        assert!(matches!(fs.list("b1"), Err(FsError::Link(_))));
        assert!(matches!(fs.delete("b1/victim"), Err(FsError::Link(_))));
        fs.delete("obj").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn the_first_write_creates_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsRoot::new(&dir.path().join("not/yet"));
        assert!(fs.list("").is_err_and(|e| e.is_not_found()));
        fs.write("k", b"v").unwrap();
        assert_eq!(fs.read("k").unwrap(), b"v");
    }

    #[test]
    fn objects_and_staging_are_private() {
        let storage = tempfile::tempdir().unwrap();
        let fs = FsRoot::new(storage.path());
        std::fs::create_dir(storage.path().join(STAGING_DIR)).unwrap();
        let staging = storage.path().join(STAGING_DIR);
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o1777)).unwrap();
        fs.write("a/b/obj", b"rows").unwrap();
        fs.write("a/keep", b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&storage.path().join("a/b/obj")), 0o600);
        assert_eq!(mode(&storage.path().join("a/b")), 0o700);
        assert_eq!(mode(&staging), 0o700);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        let mut keys = fs.list("").unwrap();
        keys.sort();
        assert_eq!(keys, ["a/b/obj", "a/keep"]);
        // A delete takes the directories it empties, not the others.
        fs.delete("a/b/obj").unwrap();
        assert!(!storage.path().join("a/b").exists());
        assert!(storage.path().join("a/keep").is_file());
    }
}
