//! Where shardvault keeps its state: `--state-dir`, else `$SHARDVAULT_HOME`, else
//! `/var/lib/shardvault` for root (the server user must be able to reach cluster data under
//! it, and root's home is closed to it), else `~/.local/share/shardvault`.

use std::path::PathBuf;

/// Resolves the state directory from the flag, the environment, or the user's data dir.
pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(dir) = std::env::var_os("SHARDVAULT_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if shardvault_pg::user::server_ids().is_some() {
        return PathBuf::from("/var/lib/shardvault");
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data_home.join("shardvault")
}
