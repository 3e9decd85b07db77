//! `shardvault node ...`: node work on one PostgreSQL cluster without the daemon, with the
//! settings of [`super::settings`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shardvault_api::quantity::human_bytes;
use shardvault_pg::engine::{
    self, BackupOptions, ParentChoice, Progress, RecoveryTarget, Repo, RestoreOptions,
};
use shardvault_pg::node_events::{self, NodeEvent, WorkProgress};

use super::settings::SettingsArgs;
use super::stdout::outln;

/// Options of `shardvault node`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(clap::Subcommand)]
enum NodeCommand {
    /// Takes a base backup of the running server (PGHOST, PGPORT, PGUSER, PGDATA) into the
    /// storage.
    #[command(
        after_help = "Example:\n  SHARDVAULT_STORAGE_PREFIX=/var/backups/pg PGDATA=/var/lib/postgresql/15/main \\\n      shardvault node backup --name nightly-1\n  shardvault node backup --config /etc/shardvault.yaml --incremental --json"
    )]
    Backup(BackupArgs),
    /// Restores a backup (or LATEST) into an empty directory, set up to recover to a target
    /// and promote.
    #[command(
        after_help = "Example:\n  shardvault node restore --backup LATEST --pgdata /srv/pg/restored\n  shardvault node restore --config /etc/shardvault.yaml --backup nightly-1 \\\n      --pgdata /srv/pg/restored --target-time 2026-11-24T01:30:00Z"
    )]
    Restore(RestoreArgs),
    /// Checks every object of a backup (or LATEST) and the WAL it needs.
    #[command(
        after_help = "Example:\n  shardvault node verify --backup LATEST\n  shardvault node verify --config /etc/shardvault.yaml --backup nightly-1"
    )]
    Verify(VerifyArgs),
}

/// Options of `shardvault node backup`.
#[derive(clap::Args)]
struct BackupArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Backup name (default `backup-YYYYMMDDTHHMMSSZ`, UTC).
    #[arg(long)]
    name: Option<String>,
    /// Print the backup's summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the backup's last WAL segment to be archived.
    #[arg(long, default_value_t = 300)]
    wal_timeout: u64,
    /// Store only the blocks changed since the newest backup of this member in the
    /// destination (a full backup when there is none it can build on; the summary says which).
    #[arg(long, conflicts_with = "parent")]
    incremental: bool,
    /// Store only the blocks changed since this backup (an error if it cannot be the parent).
    #[arg(long, value_name = "BACKUP")]
    parent: Option<String>,
}

/// Options of `shardvault node restore`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("target").multiple(false))]
struct RestoreArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Name of the backup to restore, or LATEST for the newest.
    #[arg(long)]
    backup: String,
    /// Data directory to create (missing or empty).
    #[arg(long)]
    pgdata: PathBuf,
    /// Stop recovery as soon as the backup is consistent.
    #[arg(long, group = "target")]
    target_immediate: bool,
    /// Stop recovery at this restore point (pg_create_restore_point).
    #[arg(long, group = "target", value_name = "NAME")]
    target_name: Option<String>,
    /// Stop recovery at this time (RFC 3339, e.g. 2026-11-24T01:30:00Z).
    #[arg(long, group = "target", value_name = "TIME")]
    target_time: Option<jiff::Timestamp>,
    /// With --target-time: stop just before commits at exactly that time.
    #[arg(long, requires = "target_time")]
    target_exclusive: bool,
    /// Replay all archived WAL (the default).
    #[arg(long, group = "target")]
    target_latest: bool,
    /// Parts downloaded, decoded and written at once (default: the destination's downloadConcurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Recreate tablespaces under DIR/<oid> instead of their original locations.
    #[arg(long, value_name = "DIR")]
    tablespace_dir: Option<PathBuf>,
    /// The restore_command the restored server runs (default: `shardvault wal-fetch %f %p`,
    /// with `--config FILE` when one was given; the server then needs the same settings in
    /// its environment).
    #[arg(long, value_name = "COMMAND")]
    restore_command: Option<String>,
    /// The backup is a volume snapshot and --pgdata already holds its clone (made by the
    /// runtime): only set it up to recover.
    #[arg(long, conflicts_with_all = ["concurrency", "tablespace_dir"])]
    snapshot_clone: bool,
}

/// Options of `shardvault node verify`.
#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Name of the backup to check, or LATEST for the newest.
    #[arg(long)]
    backup: String,
}

/// A multi-threaded runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Part buffers (megabytes each) are allocated on many blocking threads: with two malloc
    // arenas they are reused (no page faults per part) without piling up in one arena per
    // thread, so peak memory stays a few part sizes per worker.
    // SAFETY: mallopt only changes allocator tuning; it runs before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The name of backup `name` of `repo`: `LATEST` is the newest complete one.
pub(crate) async fn backup_name(repo: &Repo, name: &str) -> anyhow::Result<String> {
    if name != "LATEST" {
        return Ok(name.to_string());
    }
    let backups = engine::list_backups(repo).await?;
    let newest = backups.last().with_context(|| {
        format!(
            "LATEST: there is no backup in {}: take one with `shardvault node backup`",
            repo.store.describe()
        )
    })?;
    Ok(newest.name.clone())
}

/// A progress reporter: events for the daemon (at most one a second), a bar on a terminal,
/// else a log line every tenth of the way.
fn progress(what: &'static str) -> Progress {
    if node_events::is_child() {
        let last = std::sync::Mutex::new(None::<std::time::Instant>);
        Arc::new(move |done, total| {
            let mut last = last.lock().expect("not poisoned");
            if done < total && last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(std::time::Instant::now());
            NodeEvent::Progress(WorkProgress { done, total }).emit();
        })
    } else if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_message(what);
        Arc::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish();
            }
        })
    } else {
        let last = std::sync::Mutex::new(u64::MAX);
        Arc::new(move |done, total| {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            let mut last = last.lock().expect("not poisoned");
            if *last != tenth {
                *last = tenth;
                tracing::info!("{what}: {} of {} MiB", done >> 20, total >> 20);
            }
        })
    }
}

/// Runs `shardvault node ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match args.command {
        NodeCommand::Backup(a) => rt.block_on(backup(a)),
        NodeCommand::Restore(a) => rt.block_on(restore(a)),
        NodeCommand::Verify(a) => rt.block_on(verify(a)),
    }
}

async fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let settings = a.settings.load()?;
    let cfg = &settings.node;
    let dest = cfg
        .destinations
        .first()
        .cloned()
        .with_context(|| format!("{}: no destinations: add one to back up", settings.origin))?;
    if cfg.pgdata.as_os_str().is_empty() {
        anyhow::bail!(
            "PGDATA is not set in {}: set it to the data directory of the server to back up",
            settings.origin
        );
    }
    let opts = BackupOptions {
        archive_timeout: Duration::from_secs(a.wal_timeout),
        progress: Some(progress("backup")),
        parent: match (a.parent, a.incremental) {
            (Some(name), _) => ParentChoice::Named(name),
            (None, true) => ParentChoice::Newest,
            (None, false) => ParentChoice::Full,
        },
        ..BackupOptions::named(a.name.unwrap_or_else(engine::backup::default_name))
    };
    let manifest = engine::backup(cfg, &dest, &opts).await?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&manifest.summary())?);
    } else {
        let kind = match &manifest.parent {
            Some(parent) => format!("incremental over {parent}"),
            None => "full".to_string(),
        };
        eprintln!(
            "backup {} ({kind}) complete: {} files, {} stored, {} read by a restore, end LSN {}",
            manifest.name,
            manifest.files.len(),
            human_bytes(manifest.size.compressed),
            human_bytes(manifest.restore_bytes()),
            manifest.end_lsn
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let settings = a.settings.load()?;
    let source = settings.source()?;
    let backup = backup_name(&Repo::open(&source)?, &a.backup).await?;
    let restore_command = match (a.restore_command, &settings.file) {
        (Some(command), _) => command,
        (None, file) => {
            let exe =
                std::env::current_exe().context("cannot find the shardvault binary's path")?;
            match file {
                Some(config) => engine::wal::restore_command(&exe, config),
                None => engine::wal::restore_command_from_environment(&exe),
            }
        }
    };
    let target = match (a.target_immediate, a.target_name, a.target_time) {
        (true, _, _) => RecoveryTarget::Immediate,
        (_, Some(n), _) => RecoveryTarget::Name(n),
        (_, _, Some(time)) => RecoveryTarget::Time {
            time,
            inclusive: !a.target_exclusive,
        },
        _ => RecoveryTarget::Latest,
    };
    let opts = RestoreOptions {
        backup,
        pgdata: a.pgdata,
        target,
        concurrency: a
            .concurrency
            .unwrap_or(source.performance.download_concurrency),
        restore_command,
        tablespace_dir: a.tablespace_dir,
        progress: Some(progress("restore")),
    };
    let manifest = if a.snapshot_clone {
        engine::restore_snapshot_clone(&source, &opts).await?
    } else {
        engine::restore(&source, &opts).await?
    };
    // Run by the daemon, the runtime says what it restored; by hand, say what comes next.
    if !shardvault_pg::node_events::is_child() {
        eprintln!(
            "restored backup {} into {}: start the server to recover {}",
            manifest.name,
            opts.pgdata.display(),
            opts.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let source = a.settings.load()?.source()?;
    let backup = backup_name(&Repo::open(&source)?, &a.backup).await?;
    let report = engine::verify(&source, &backup).await?;
    let chain = match report.chain {
        0 => String::new(),
        n => format!(" (incremental: the {n} older backups of its chain checked too)"),
    };
    outln!(
        "backup {backup} is intact: {} parts, {} files, {}, {} WAL segments{chain}",
        report.parts,
        report.files,
        human_bytes(report.bytes),
        report.wal_segments
    );
    Ok(ExitCode::SUCCESS)
}
