//! shardvault: backup and restore of sharded PostgreSQL clusters.

mod cmd;
#[cfg(test)]
mod help_tests;

use clap::{Parser, Subcommand};

/// Backup and restore for sharded PostgreSQL clusters, with StackGres's resources.
#[derive(Parser)]
#[command(
    name = "shardvault",
    version,
    about = "Backup and restore for sharded PostgreSQL clusters, with StackGres's resources",
    after_help = "Example:\n  shardvault up\n  shardvault apply -f sgshardedcluster.yaml\n  shardvault get sgshardedbackup"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole journey in one command: cluster, backup, restores, verification.
    #[command(
        after_help = "Example:\n  shardvault demo\n  shardvault demo --keep --state-dir /tmp/sv-demo"
    )]
    Demo(cmd::demo::Args),
    /// Runs the control plane in the foreground: store, HTTP API, controllers.
    #[command(
        after_help = "Example:\n  shardvault serve --state-dir /var/lib/shardvault\n  shardvault serve --listen 127.0.0.1:7443 --token-file /etc/shardvault/token"
    )]
    Serve(cmd::serve::Args),
    /// Runs only the controllers, as a client of any Kubernetes API server.
    #[command(
        after_help = "Example:\n  shardvault serve --controllers none &\n  shardvault operator --kubeconfig ~/.local/share/shardvault/kubeconfig"
    )]
    Operator(cmd::operator::Args),
    /// Starts `shardvault serve` in the background and waits until it answers.
    #[command(after_help = "Example:\n  shardvault up\n  SHARDVAULT_HOME=/tmp/sv shardvault up")]
    Up(cmd::daemon::UpArgs),
    /// Stops the background daemon (PostgreSQL servers are left alone).
    #[command(after_help = "Example:\n  shardvault down")]
    Down(cmd::daemon::DownArgs),
    /// Prints the kubeconfig of the running daemon, for kubectl and other Kubernetes clients.
    #[command(
        after_help = "Example:\n  kubectl --kubeconfig \"$(shardvault kubeconfig --path)\" get sgshardedbackups\n  shardvault kubeconfig > ~/.kube/shardvault.yaml"
    )]
    Kubeconfig(cmd::daemon::KubeconfigArgs),
    /// Creates or updates resources from manifests, as `kubectl apply` does.
    #[command(
        after_help = "Example:\n  shardvault apply -f sgshardedbackup.yaml\n  shardvault apply -f manifests/ -f extra.yaml\n  cat backup.yaml | shardvault apply -f -"
    )]
    Apply(cmd::apply::Args),
    /// Lists resources or shows one.
    #[command(
        after_help = "Example:\n  shardvault get sgshardedbackup\n  shardvault get sgsbk manual-backup -o yaml\n  shardvault get sgbackup -l stackgres.io/shardedbackup-name=manual-backup\n  shardvault get sgscl,sgobjs -A"
    )]
    Get(cmd::get::Args),
    /// Shows an object in detail, with its Events.
    #[command(after_help = "Example:\n  shardvault describe sgshardedbackup manual-backup")]
    Describe(cmd::describe::Args),
    /// Deletes resources and what they own.
    #[command(
        after_help = "Example:\n  shardvault delete sgshardedbackup manual-backup\n  shardvault delete -f sgshardedbackup.yaml --wait"
    )]
    Delete(cmd::delete::Args),
    /// Waits until a resource reaches a state.
    #[command(
        after_help = "Example:\n  shardvault wait sgsbk/manual-backup --for=jsonpath='{.status.process.status}'=Completed --timeout=10m"
    )]
    Wait(cmd::wait::Args),
    /// Opens psql on the primary of a local sharded cluster's coordinator or shard.
    #[command(
        after_help = "Example:\n  shardvault psql my-cluster\n  shardvault psql my-cluster --shard 1 -- -c 'SELECT count(*) FROM accounts'"
    )]
    Psql(cmd::psql::Args),
    /// Node work on one PostgreSQL server without the daemon: backup, restore, verify
    /// (settings from SHARDVAULT_* and PG* variables or --config FILE).
    #[command(
        after_help = "Example:\n  export SHARDVAULT_STORAGE_PREFIX=/var/backups/pg PGDATA=/var/lib/postgresql/15/main\n  shardvault node backup\n  shardvault node restore --backup LATEST --pgdata /srv/restored --target-immediate"
    )]
    Node(cmd::node::Args),
    /// Archives one WAL file to every destination (PostgreSQL's archive_command).
    #[command(
        after_help = "Example:\n  archive_command = 'shardvault wal-push %p'     # SHARDVAULT_* in the server's environment\n  archive_command = 'shardvault wal-push %p --config /etc/shardvault.yaml'"
    )]
    WalPush(cmd::wal::PushArgs),
    /// Fetches one WAL file from the archive (PostgreSQL's restore_command); exit 1 if absent.
    #[command(
        after_help = "Example:\n  restore_command = 'shardvault wal-fetch %f %p'\n  restore_command = 'shardvault wal-fetch %f %p --config /etc/shardvault.yaml'"
    )]
    WalFetch(cmd::wal::FetchArgs),
    /// Reports WAL segments and timeline histories missing from the archive, from the oldest
    /// backup's start to the newest segment; exit 1 if any is missing.
    #[command(
        after_help = "Example:\n  SHARDVAULT_STORAGE_PREFIX=/var/backups/pg shardvault wal-verify\n  shardvault wal-verify --config /etc/shardvault.yaml"
    )]
    WalVerify(cmd::wal::VerifyArgs),
    /// Reads a sharded backup back from storage and checks every checksum and WAL segment.
    #[command(after_help = "Example:\n  shardvault verify sgshardedbackup manual-backup")]
    Verify(cmd::verify::Args),
    /// Stored backups: lists, deletes and retains one server's, lists sharded ones in an
    /// SGObjectStorage or imports one as resources.
    #[command(
        after_help = "Example:\n  shardvault backups ls\n  shardvault backups retain 2 --confirm\n  shardvault backups ls --storage my-backup-storage\n  shardvault backups import --storage my-backup-storage manual-backup"
    )]
    Backups(cmd::catalog::BackupsArgs),
    /// Prints the CustomResourceDefinitions of the StackGres kinds as a YAML stream.
    #[command(
        after_help = "Example:\n  shardvault crds > crds.yaml\n  shardvault crds | kubectl apply -f -"
    )]
    Crds,
    /// Retention of scheduled backups: what the next pass would delete.
    #[command(after_help = "Example:\n  shardvault retention plan my-sharded-cluster")]
    Retention(cmd::retention::Args),
    /// Prints the address of the daemon's read-only web console, with its token.
    #[command(
        after_help = "Example:\n  shardvault serve --console-listen 127.0.0.1:8080 &\n  chromium \"$(shardvault console)\""
    )]
    Console(cmd::console::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Operator(args) => cmd::operator::run(args),
        Command::Up(args) => cmd::daemon::up(args),
        Command::Down(args) => cmd::daemon::down(args),
        Command::Kubeconfig(args) => cmd::daemon::kubeconfig(args),
        Command::Apply(args) => cmd::apply::run(args),
        Command::Get(args) => cmd::get::run(args),
        Command::Describe(args) => cmd::describe::run(args),
        Command::Delete(args) => cmd::delete::run(args),
        Command::Wait(args) => cmd::wait::run(args),
        Command::Psql(args) => cmd::psql::run(args),
        Command::Node(args) => cmd::node::run(args),
        Command::WalPush(args) => cmd::wal::run_push(args),
        Command::WalFetch(args) => cmd::wal::run_fetch(args),
        Command::WalVerify(args) => cmd::wal::run_verify(args),
        Command::Backups(args) => cmd::catalog::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Retention(args) => cmd::retention::run(args),
        Command::Console(args) => cmd::console::run(args),
        Command::Crds => cmd::crds::run(),
    };
    let result = result.and_then(|code| match cmd::stdout::failure() {
        Some(e) => anyhow::bail!("cannot write to standard output: {e}"),
        None => Ok(code),
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            let message = cmd::error_chain::sentence(&err);
            if shardvault_pg::node_events::is_child() {
                shardvault_pg::node_events::NodeEvent::Failed { message }.emit();
            } else {
                eprintln!("error: {message}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
