//! A loop-mounted btrfs filesystem for one test: an image file in the test's own temporary
//! directory (`truncate` + `mkfs.btrfs`), mounted with `mount -o loop` on a mount point
//! beside it; unmounted (which detaches the loop device), then removed, on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempStateDir;

/// Size of the image (sparse: only what is written takes room): a few small sharded
/// clusters, their WAL archive and snapshots.
const IMAGE_SIZE: &str = "4G";

/// A btrfs filesystem mounted for one test.
pub struct LoopBtrfs {
    mount: PathBuf,
    // Removed after the filesystem is unmounted.
    _tmp: tempfile::TempDir,
}

/// Runs `program args`, with what it wrote in the error when it fails.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e} (bash scripts/setup.sh installs it)"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {} failed ({}): {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

impl LoopBtrfs {
    /// Makes and mounts the filesystem; a clear error when this machine cannot (not root,
    /// no `mkfs.btrfs`, no loop devices or no btrfs in the kernel).
    pub fn new() -> Result<LoopBtrfs, String> {
        if shardvault_pg::user::server_ids().is_none() {
            return Err("a loop-mounted btrfs image needs root".into());
        }
        let tmp = tempfile::Builder::new()
            .prefix("sv-btrfs-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let image = tmp.path().join("image");
        let mount = tmp.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("{}: {e}", mount.display()))?;
        run(
            "truncate",
            &["-s".as_ref(), IMAGE_SIZE.as_ref(), image.as_os_str()],
        )?;
        run("mkfs.btrfs", &["-q".as_ref(), image.as_os_str()])?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mount.as_os_str(),
            ],
        )
        .map_err(|e| format!("this machine cannot loop-mount a btrfs image: {e}"))?;
        Ok(LoopBtrfs { mount, _tmp: tmp })
    }

    /// The mount point (owned by root, 0755).
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// A state directory on this filesystem, owned by the server user (see [`TempStateDir`]).
    pub fn state_dir(&self) -> TempStateDir {
        TempStateDir::new_in(&self.mount)
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        crate::stop_servers_under(&self.mount, 10);
        // The loop device of `mount -o loop` is detached when the filesystem is unmounted;
        // a process of the test still inside it makes a lazy unmount the last resort.
        if let Err(e) = run("umount", &[self.mount.as_os_str()]) {
            eprintln!("{e}; unmounting lazily");
            let _ = run("umount", &["-l".as_ref(), self.mount.as_os_str()]);
        }
    }
}
