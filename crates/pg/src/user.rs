//! The one place that knows PostgreSQL refuses to run as root: when we are root, servers
//! and node work run as the unprivileged `postgres` user, which owns their files.

use std::path::Path;

/// Name of the unprivileged account servers run as when we are root.
pub const SERVER_USER: &str = "postgres";

/// The uid and gid servers run as, or None when we are not root (run as ourselves).
pub fn server_ids() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name(SERVER_USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("running as root needs the `{SERVER_USER}` user: install Debian's postgresql package (bash scripts/setup.sh)")
        });
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The search path every server-user command gets.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables passed on from our environment: the locale, the time zone and the log filter
/// of node work. Nothing else reaches servers and node work (no `RUST_BACKTRACE`, no
/// credentials that happen to be in the daemon's environment).
fn passed_on(name: &str) -> bool {
    matches!(name, "LANG" | "LANGUAGE" | "TZ" | "SHARDVAULT_LOG") || name.starts_with("LC_")
}

/// A command that runs as the server user (as ourselves when we are not root) with a
/// minimal environment: `PATH`, `HOME`, `USER` and the variables [`passed_on`] keeps.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear().env("PATH", PATH);
    cmd.envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(passed_on)));
    match server_ids() {
        Some((uid, gid)) => {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", "/var/lib/postgresql");
            cmd.env("USER", SERVER_USER);
        }
        None => {
            cmd.envs(
                ["HOME", "USER"]
                    .into_iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            );
        }
    }
    cmd
}

/// Makes the command's process get SIGKILL when the thread that started it dies, so node
/// work never outlives the daemon that tracks it (a killed daemon retries that work after
/// it restarts; an orphan would race the retry). Set after the switch to the server user,
/// which would clear it.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Gives `path` (not recursive) to the server user when we are root.
pub fn chown_to_server_user(path: &Path) -> std::io::Result<()> {
    if let Some((uid, gid)) = server_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Gives `path` and everything below it to the server user when we are root.
pub fn chown_tree_to_server_user(path: &Path) -> std::io::Result<()> {
    if server_ids().is_none() {
        return Ok(());
    }
    chown_to_server_user(path)?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree_to_server_user(&entry?.path())?;
        }
    }
    Ok(())
}

/// Makes `dir` private to the server user: owned by it, mode 0700 (not following a link).
pub fn make_private_for_server(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    let meta = f.metadata()?;
    if let Some((uid, gid)) = server_ids()
        && (meta.uid(), meta.gid()) != (uid, gid)
    {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    if meta.mode() & 0o7777 != 0o700 {
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each new one owned by the server user.
pub fn create_dir_all_for_server(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_for_server(parent)?;
    }
    std::fs::create_dir(dir)?;
    chown_to_server_user(dir)
}
