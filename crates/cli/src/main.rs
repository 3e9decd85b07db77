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
    /// Node work on one PostgreSQL cluster without the daemon: backup, restore, verify.
    #[command(
        after_help = "Example:\n  shardvault node backup --config shard0.json\n  shardvault node restore --config shard0.json --backup backup-20261124T010000Z --pgdata /srv/restored --target-immediate"
    )]
    Node(cmd::node::Args),
    /// Archives one WAL file to every destination (PostgreSQL's archive_command).
    #[command(
        after_help = "Example:\n  archive_command = 'shardvault wal-push %p --config /etc/shardvault/shard0.json'"
    )]
    WalPush(cmd::wal::PushArgs),
    /// Fetches one WAL file from the archive (PostgreSQL's restore_command); exit 1 if absent.
    #[command(
        after_help = "Example:\n  restore_command = 'shardvault wal-fetch %f %p --config /etc/shardvault/shard0.json'"
    )]
    WalFetch(cmd::wal::FetchArgs),
    /// Lists stored backups.
    #[command(after_help = "Example:\n  shardvault backups ls --config shard0.json")]
    Backups(cmd::node::BackupsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Psql(args) => cmd::psql::run(args),
        Command::Node(args) => cmd::node::run(args),
        Command::WalPush(args) => cmd::wal::run_push(args),
        Command::WalFetch(args) => cmd::wal::run_fetch(args),
        Command::Backups(args) => cmd::node::run_backups(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
