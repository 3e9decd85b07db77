//! `shardvault node ...` and `shardvault backups ls`: node work on one PostgreSQL cluster
//! without the daemon, reading the per-member node config file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shardvault_api::quantity::human_bytes;
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::{
    self, BackupOptions, ParentChoice, Progress, RecoveryTarget, Repo, RestoreOptions,
};
use shardvault_storage::Destination;

use super::stdout::{out, outln};

/// Options of `shardvault node`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(clap::Subcommand)]
enum NodeCommand {
    /// Takes a base backup of the running server into the config's first destination.
    #[command(
        after_help = "Example:\n  shardvault node backup --config /var/lib/shardvault/shard0.json --name nightly-1 --json\n  shardvault node backup --config shard0.json --name nightly-2 --incremental --json"
    )]
    Backup(BackupArgs),
    /// Restores a backup into an empty directory, set up to recover to a target and promote.
    #[command(
        after_help = "Example:\n  shardvault node restore --config shard0.json --backup nightly-1 --pgdata /srv/pg/restored \\\n      --target-time 2026-11-24T01:30:00Z"
    )]
    Restore(RestoreArgs),
    /// Checks every object of a backup and the WAL it needs.
    #[command(
        after_help = "Example:\n  shardvault node verify --config shard0.json --backup nightly-1"
    )]
    Verify(VerifyArgs),
}

/// Options of `shardvault node backup`.
#[derive(clap::Args)]
struct BackupArgs {
    /// Node config file (JSON, written by the runtime).
    #[arg(long)]
    config: PathBuf,
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
    /// Node config file; WAL and the backup come from its restoreSource, else its first destination.
    #[arg(long)]
    config: PathBuf,
    /// Name of the backup to restore.
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
    /// The backup is a volume snapshot and --pgdata already holds its clone (made by the
    /// runtime): only set it up to recover.
    #[arg(long, conflicts_with_all = ["concurrency", "tablespace_dir"])]
    snapshot_clone: bool,
}

/// Options of `shardvault node verify`.
#[derive(clap::Args)]
struct VerifyArgs {
    /// Node config file.
    #[arg(long)]
    config: PathBuf,
    /// Name of the backup to check.
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

/// Loads a node config.
pub(crate) fn load(config: &Path) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig::load(config)?)
}

/// Where backups are read from: restoreSource, else the first destination.
pub(crate) fn source(cfg: &NodeConfig, config: &Path) -> anyhow::Result<Destination> {
    cfg.restore_source
        .clone()
        .or_else(|| cfg.destinations.first().cloned())
        .with_context(|| {
            format!(
                "{}: neither restoreSource nor destinations is set: add a destination",
                config.display()
            )
        })
}

/// A progress reporter: a bar on a terminal, else a log line every tenth of the way.
fn progress(what: &'static str) -> Progress {
    if std::io::stderr().is_terminal() {
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
    let cfg = load(&a.config)?;
    let dest = cfg.destinations.first().cloned().with_context(|| {
        format!(
            "{}: no destinations: add one to back up",
            a.config.display()
        )
    })?;
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
    let manifest = engine::backup(&cfg, &dest, &opts).await?;
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
    let cfg = load(&a.config)?;
    let source = source(&cfg, &a.config)?;
    let config = std::path::absolute(&a.config)
        .with_context(|| format!("{}: cannot make the path absolute", a.config.display()))?;
    let exe = std::env::current_exe().context("cannot find the shardvault binary's path")?;
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
        backup: a.backup,
        pgdata: a.pgdata,
        target,
        concurrency: a
            .concurrency
            .unwrap_or(source.performance.download_concurrency),
        restore_command: engine::wal::restore_command(&exe, &config),
        tablespace_dir: a.tablespace_dir,
        progress: Some(progress("restore")),
    };
    let manifest = if a.snapshot_clone {
        engine::restore_snapshot_clone(&source, &opts).await?
    } else {
        engine::restore(&source, &opts).await?
    };
    eprintln!(
        "restored backup {} into {}: start the server to recover {}",
        manifest.name,
        opts.pgdata.display(),
        opts.target
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(&a.config)?;
    let source = source(&cfg, &a.config)?;
    let report = engine::verify(&source, &a.backup).await?;
    let chain = match report.chain {
        0 => String::new(),
        n => format!(" (incremental: the {n} older backups of its chain checked too)"),
    };
    outln!(
        "backup {} is intact: {} parts, {} files, {}, {} WAL segments{chain}",
        a.backup,
        report.parts,
        report.files,
        human_bytes(report.bytes),
        report.wal_segments
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the complete backups of one member (`backups ls --config`).
pub async fn list_member_backups(config: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let source = source(&cfg, config)?;
    let backups = engine::list_backups(&Repo::open(&source)?).await?;
    let summaries: Vec<_> = backups.iter().map(|m| m.summary()).collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&summaries)?);
    } else {
        out!("{}", table(&summaries));
    }
    Ok(())
}

/// The `backups ls` table.
fn table(rows: &[engine::BackupSummary]) -> String {
    let mut out = vec![[
        "NAME".to_string(),
        "START".to_string(),
        "END LSN".to_string(),
        "TIMELINE".to_string(),
        "SIZE".to_string(),
        "STORED".to_string(),
        "FROM".to_string(),
        "TYPE".to_string(),
    ]];
    for r in rows {
        out.push([
            r.name.clone(),
            r.start_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            r.end_lsn.to_string(),
            r.timeline.to_string(),
            human_bytes(r.size.uncompressed),
            human_bytes(r.size.compressed),
            if r.from_replica { "replica" } else { "primary" }.to_string(),
            match &r.parent {
                Some(p) => format!("incremental over {p}"),
                None => "full".to_string(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| out.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    out.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}
