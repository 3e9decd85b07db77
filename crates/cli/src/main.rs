//! shardvault: backup and restore of sharded PostgreSQL clusters.

mod cmd;

use clap::{Parser, Subcommand};

/// Backup and restore for sharded PostgreSQL clusters, with StackGres's resources.
#[derive(Parser)]
#[command(name = "shardvault", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole journey in one command: cluster, backup, restores, verification.
    #[command(after_help = "Example:\n  shardvault demo\n  shardvault demo --keep --state-dir /tmp/sv-demo")]
    Demo(cmd::demo::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
