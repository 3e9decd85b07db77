//! `shardvault demo`: the whole journey on the embedded default.

use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `shardvault demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to keep the demo's state (a fresh temporary directory by default).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep the clusters running and the state dir after the demo.
    #[arg(long)]
    keep: bool,
}

/// Runs the demo; exit status 0 only if every check passed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = (args.state_dir, args.keep);
    anyhow::bail!("the demo is not built yet: the sharded backup path is in progress (see NOTES.md)")
}
