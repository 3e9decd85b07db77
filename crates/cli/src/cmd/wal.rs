//! `shardvault wal-push`, `wal-fetch` and `wal-verify`: PostgreSQL's archive_command and
//! restore_command, and a check of the archive for gaps, with the settings of
//! [`super::settings`].

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::bail;
use shardvault_pg::engine::{EngineError, Repo, archive_check, layout, wal};

use super::node::runtime;
use super::settings::SettingsArgs;
use super::stdout::outln;

/// Options of `shardvault wal-push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file to archive (`%p`: relative to the data directory PostgreSQL runs in).
    path: PathBuf,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Options of `shardvault wal-verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Options of `shardvault wal-fetch`.
#[derive(clap::Args)]
pub struct FetchArgs {
    /// The WAL file to fetch (`%f`).
    name: String,
    /// Where to put it (`%p`).
    dest: PathBuf,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Segments to download ahead in the background (0: none).
    #[arg(long, default_value_t = 8)]
    prefetch: usize,
    /// Only download the segments after NAME, of this many bytes each, into the prefetch
    /// directory beside DEST (what the background prefetcher runs).
    #[arg(long, hide = true, value_name = "WAL_SEGMENT_SIZE")]
    prefetch_only: Option<u64>,
}

/// Runs `shardvault wal-push`: exit status 0 only when every destination has the file.
pub fn run_push(args: PushArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let cfg = args.settings.load()?.node;
        let pushed = wal::push(&cfg, &args.path).await?;
        tracing::debug!(path = %args.path.display(), ?pushed, "archived");
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `shardvault wal-fetch`: exit status 0 when fetched, 1 when the archive does not
/// have the file (recovery ends there), 128 on any other error: PostgreSQL aborts recovery
/// on an exit status above 125, so a storage failure or a corrupt segment stops the restore
/// loudly instead of ending recovery early at an older point.
pub fn run_fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let result = runtime().and_then(|rt| rt.block_on(fetch(&args)));
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref(), Some(EngineError::WalNotFound { .. })) => {
            tracing::info!("{}", super::error_chain::sentence(&e));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}", super::error_chain::sentence(&e));
            ExitCode::from(128)
        }
    })
}

async fn fetch(args: &FetchArgs) -> anyhow::Result<()> {
    let source = args.settings.load()?.source()?;
    let dir = wal::prefetch_dir(&args.dest);
    if let Some(segment_size) = args.prefetch_only {
        let got = wal::prefetch(&source, &args.name, args.prefetch, segment_size, &dir).await?;
        tracing::debug!(after = %args.name, got, "prefetched");
        return Ok(());
    }
    let from = wal::fetch(&source, &args.name, &args.dest).await?;
    tracing::debug!(wal = %args.name, ?from, "fetched");
    // A segment's size is the cluster's WAL segment size (a power of two, 1 MiB to 1 GiB).
    let segment_size = std::fs::metadata(&args.dest).map_or(0, |m| m.len());
    if args.prefetch > 0
        && layout::is_segment_name(&args.name)
        && segment_size.is_power_of_two()
        && (1 << 20..=1 << 30).contains(&segment_size)
    {
        spawn_prefetcher(args, segment_size);
    }
    Ok(())
}

/// Starts a detached `wal-fetch --prefetch-only` that outlives this process.
fn spawn_prefetcher(args: &FetchArgs, segment_size: u64) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("wal-fetch").arg(&args.name).arg(&args.dest);
    if let Some(config) = &args.settings.config {
        cmd.arg("--config").arg(config);
    }
    let spawned = cmd
        .arg("--prefetch")
        .arg(args.prefetch.to_string())
        .arg("--prefetch-only")
        .arg(segment_size.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::debug!("no prefetch: {e}");
    }
}

/// Runs `shardvault wal-verify`: exit status 0 only when no segment between the oldest
/// backup's start and the newest archived segment is missing.
pub fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let repo = Repo::open(&args.settings.load()?.source()?)?;
        let Some(report) = archive_check::check_archive(&repo).await? else {
            outln!(
                "no backup in {}: nothing to check (the check starts at the oldest backup)",
                repo.store.describe()
            );
            return Ok(ExitCode::SUCCESS);
        };
        for name in &report.missing_history {
            outln!("missing timeline history {name}");
        }
        for name in &report.missing {
            outln!("missing WAL segment {name}");
        }
        let range = format!(
            "from {} (the start of the oldest backup, {}) to {}, the newest archived",
            report.first, report.backup, report.last
        );
        if !report.complete() {
            bail!(
                "the WAL archive misses {} of {} segments and {} timeline history files {range}: recovery stops at the first gap; take a new backup to recover past it",
                report.missing.len(),
                report.checked,
                report.missing_history.len()
            );
        }
        outln!("the WAL archive is complete: {} segments {range}", report.checked);
        Ok(ExitCode::SUCCESS)
    })
}
