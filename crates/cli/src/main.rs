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
    /// Opens psql on the primary of a local sharded cluster's coordinator or shard.
    #[command(
        after_help = "Example:\n  shardvault psql my-cluster\n  shardvault psql my-cluster --shard 1 -- -c 'SELECT count(*) FROM accounts'"
    )]
    Psql(cmd::psql::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Psql(args) => cmd::psql::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
