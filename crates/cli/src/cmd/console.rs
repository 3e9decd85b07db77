//! `shardvault console`: the address of the daemon's web console, with its token.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::state_dir;
use super::stdout::outln;

/// File in the state directory holding the console's login address (mode 0600).
pub const URL_FILE: &str = "console.url";

/// Options of `shardvault console`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// State directory of the daemon (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Writes the login address of a console listening at `addr` where only the owner reads it.
pub fn write_url(dir: &Path, addr: SocketAddr, token: &str) -> anyhow::Result<()> {
    let path = dir.join(URL_FILE);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "http://{addr}/login?token={token}")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Prints the console's login address.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = state_dir::resolve(args.state_dir);
    let path = dir.join(URL_FILE);
    let url = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no web console runs for {}: start the daemon with `shardvault serve --console-listen 127.0.0.1:8080`",
            dir.display()
        )
    })?;
    outln!("{}", url.trim());
    Ok(ExitCode::SUCCESS)
}
