//! Volume snapshots of data directories on a copy-on-write filesystem (the `btrfs` class):
//! a data directory is a subvolume, a snapshot is a read-only snapshot of it, a restore is a
//! writable snapshot of that snapshot; no data is copied.
//!
//! Privileges: the server user creates data directory subvolumes in its own instance
//! directories (`btrfs subvolume create`, allowed to the directory's owner). Snapshots,
//! clones and deletions are made by us (root) with the btrfs ioctls on directories opened
//! without following a link at any step, so nothing the server user can change redirects
//! them; snapshots live in a directory only we can enter, and being read-only subvolumes,
//! nobody can change them in place.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::user;

/// The snapshot drivers `volumeSnapshotClass` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotClass {
    /// Subvolumes and read-only snapshots on btrfs.
    Btrfs,
}

/// The names `volumeSnapshotClass` accepts, in the order they are offered.
pub const CLASSES: [&str; 1] = ["btrfs"];

impl SnapshotClass {
    /// The class `name` names; the default (`btrfs`) when None.
    pub fn parse(name: Option<&str>) -> Result<SnapshotClass, SnapshotError> {
        match name {
            None | Some("btrfs") => Ok(SnapshotClass::Btrfs),
            Some(other) => Err(SnapshotError::UnknownClass(other.to_string())),
        }
    }

    /// The class's name.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotClass::Btrfs => "btrfs",
        }
    }
}

/// Why a snapshot could not be taken, cloned or deleted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// `volumeSnapshotClass` names no driver.
    #[error(
        "{0:?} is not a snapshot class of the local runtime: use one of {CLASSES:?}, or leave it out for btrfs"
    )]
    UnknownClass(String),
    /// The directory is on a filesystem the class cannot snapshot.
    #[error(
        "{} is not on btrfs, so the {class} snapshot class cannot snapshot the data there: put the state directory on a btrfs filesystem, or set useVolumeSnapshot: false",
        dir.display()
    )]
    NotSnapshotCapable { dir: PathBuf, class: &'static str },
    /// A directory on the way is a link, or not what it should be.
    #[error("{}: {why}; it was changed under us, so nothing was done", path.display())]
    Untrusted { path: PathBuf, why: String },
    /// A system call failed.
    #[error("{what} {}: {cause}", path.display())]
    Sys {
        what: &'static str,
        path: PathBuf,
        cause: nix::Error,
    },
    /// `btrfs subvolume create` could not run or failed.
    #[error("btrfs subvolume create {}: {message}", path.display())]
    Create { path: PathBuf, message: String },
}

/// `statfs` type of btrfs.
fn on_btrfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Fails unless `class` can snapshot data kept in `dir` (its nearest existing ancestor).
pub fn check_filesystem(class: SnapshotClass, dir: &Path) -> Result<(), SnapshotError> {
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    match class {
        SnapshotClass::Btrfs if on_btrfs(existing) => Ok(()),
        SnapshotClass::Btrfs => Err(SnapshotError::NotSnapshotCapable {
            dir: dir.to_path_buf(),
            class: class.name(),
        }),
    }
}

/// Tells whether data kept in `dir` can be snapshotted (it is on btrfs).
pub fn can_snapshot(dir: &Path) -> bool {
    check_filesystem(SnapshotClass::Btrfs, dir).is_ok()
}

/// Creates the data directory `pgdata` (missing) as a subvolume of the server user, 0700.
pub async fn create_data_subvolume(pgdata: &Path) -> Result<(), SnapshotError> {
    let fail = |message: String| SnapshotError::Create {
        path: pgdata.to_path_buf(),
        message,
    };
    let out = user::command("btrfs")
        .args(["subvolume", "create"])
        .arg(pgdata)
        .output()
        .await
        .map_err(|e| fail(format!("{e} (install btrfs-progs)")))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    user::make_private_for_server(pgdata).map_err(|e| fail(e.to_string()))
}

/// Tells whether `dir` is the top directory of a btrfs subvolume.
pub fn is_subvolume(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    on_btrfs(dir)
        && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.ino() == SUBVOLUME_INO)
}

/// Inode number of every subvolume's top directory.
const SUBVOLUME_INO: u64 = 256;

/// Opens directory `path` (absolute) one component at a time, never following a link.
fn open_dir(path: &Path) -> Result<OwnedFd, SnapshotError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let sys = |source| SnapshotError::Sys {
        what: "open",
        path: path.to_path_buf(),
        cause: source,
    };
    let mut fd = nix::fcntl::open("/", flags, Mode::empty()).map_err(sys)?;
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => {
                fd = openat(&fd, name, flags, Mode::empty()).map_err(|e| match e {
                    nix::Error::ELOOP | nix::Error::ENOTDIR => SnapshotError::Untrusted {
                        path: path.to_path_buf(),
                        why: format!("{} is not a directory", name.to_string_lossy()),
                    },
                    e => sys(e),
                })?;
            }
            _ => {
                return Err(SnapshotError::Untrusted {
                    path: path.to_path_buf(),
                    why: "it is not a plain absolute path".into(),
                });
            }
        }
    }
    Ok(fd)
}

/// `struct btrfs_ioctl_vol_args_v2` of `linux/btrfs.h` (4096 bytes).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_vol_args` of `linux/btrfs.h` (4096 bytes).
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `_IOW(BTRFS_IOCTL_MAGIC, nr, 4096 bytes)`.
const fn iow(nr: u64) -> u64 {
    (1 << 30) | (4096 << 16) | (0x94 << 8) | nr
}
const SNAP_CREATE_V2: u64 = iow(23);
const SNAP_DESTROY: u64 = iow(15);
const SUBVOL_RDONLY: u64 = 1 << 1;

/// A plain directory entry name (no `/`, not `.` or `..`) as C bytes of at most `max` bytes.
fn entry_name(name: &str, max: usize) -> Result<CString, SnapshotError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > max {
        return Err(SnapshotError::Untrusted {
            path: PathBuf::from(name),
            why: "it is not a plain directory name".into(),
        });
    }
    CString::new(name).map_err(|_| SnapshotError::Untrusted {
        path: PathBuf::from(name),
        why: "it holds a NUL byte".into(),
    })
}

/// Makes `<dest_dir>/<name>` a snapshot of subvolume `source`: read-only or writable.
fn snapshot(
    source: &Path,
    dest_dir: &Path,
    name: &str,
    read_only: bool,
) -> Result<(), SnapshotError> {
    let src = open_dir(source)?;
    let meta = nix::sys::stat::fstat(&src).map_err(|source_err| SnapshotError::Sys {
        what: "stat",
        path: source.to_path_buf(),
        cause: source_err,
    })?;
    if meta.st_ino != SUBVOLUME_INO || !on_btrfs(source) {
        return Err(SnapshotError::Untrusted {
            path: source.to_path_buf(),
            why: "it is not a btrfs subvolume".into(),
        });
    }
    let dest = open_dir(dest_dir)?;
    let cname = entry_name(name, 4039)?;
    let mut args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    args.name[..cname.as_bytes().len()].copy_from_slice(cname.as_bytes());
    // SAFETY: the request is BTRFS_IOC_SNAP_CREATE_V2 with its 4096-byte argument, which
    // lives for the call; both descriptors are open.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), SNAP_CREATE_V2 as _, &args) };
    nix::Error::result(rc)
        .map(drop)
        .map_err(|source_err| SnapshotError::Sys {
            what: "snapshot into",
            path: dest_dir.join(name),
            cause: source_err,
        })
}

/// Takes a read-only snapshot of the subvolume `source` as `<dest_dir>/<name>`.
pub fn snapshot_read_only(source: &Path, dest_dir: &Path, name: &str) -> Result<(), SnapshotError> {
    snapshot(source, dest_dir, name, true)
}

/// Makes `<dest_dir>/<name>` a writable snapshot (a clone) of snapshot `source`.
pub fn clone_writable(source: &Path, dest_dir: &Path, name: &str) -> Result<(), SnapshotError> {
    snapshot(source, dest_dir, name, false)
}

/// Deletes the subvolume `<dir>/<name>`; false when there is none.
pub fn delete(dir: &Path, name: &str) -> Result<bool, SnapshotError> {
    let parent = match open_dir(dir) {
        Ok(fd) => fd,
        Err(SnapshotError::Sys {
            cause: nix::Error::ENOENT,
            ..
        }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let cname = entry_name(name, 4087)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..cname.as_bytes().len()].copy_from_slice(cname.as_bytes());
    // SAFETY: the request is BTRFS_IOC_SNAP_DESTROY with its 4096-byte argument, which lives
    // for the call; the descriptor is open.
    let rc = unsafe { libc::ioctl(parent.as_raw_fd(), SNAP_DESTROY as _, &args) };
    match nix::Error::result(rc) {
        Ok(_) => Ok(true),
        Err(nix::Error::ENOENT) => Ok(false),
        Err(source) => Err(SnapshotError::Sys {
            what: "delete subvolume",
            path: dir.join(name),
            cause: source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_named_and_unknown_ones_say_which_exist() {
        assert_eq!(SnapshotClass::parse(None).unwrap(), SnapshotClass::Btrfs);
        assert_eq!(SnapshotClass::parse(Some("btrfs")).unwrap().name(), "btrfs");
        let err = SnapshotClass::parse(Some("csi-snapclass")).unwrap_err();
        assert!(err.to_string().contains("\"csi-snapclass\""), "{err}");
        assert!(err.to_string().contains("btrfs"), "{err}");
    }

    #[test]
    fn argument_blocks_are_the_kernels_size() {
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
    }

    #[test]
    fn names_with_slashes_are_refused() {
        assert!(entry_name("a/b", 100).is_err());
        assert!(entry_name("..", 100).is_err());
        assert!(entry_name("b1-coord", 100).is_ok());
    }
}
