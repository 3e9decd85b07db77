//! `shardvault up` and `shardvault down`: the daemon in the background.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::client::{Client, runtime};
use super::serve::{Controllers, KUBECONFIG, PID_FILE};
use super::state_dir;

/// File the background daemon logs to.
pub const LOG_FILE: &str = "shardvault.log";

/// Options of `shardvault up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Which controllers to run.
    #[arg(long, value_enum, default_value = "all")]
    controllers: Controllers,
    /// How long to wait for the daemon to answer, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Options of `shardvault down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// How long to wait for the daemon to stop, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// Options of `shardvault kubeconfig`.
#[derive(clap::Args, Debug)]
pub struct KubeconfigArgs {
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print the kubeconfig's path instead of its contents.
    #[arg(long)]
    path: bool,
}

/// Prints the kubeconfig of the running daemon (or its path), for `kubectl --kubeconfig`.
pub fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir::resolve(args.state_dir);
    let path = dir.join(KUBECONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "shardvault is not running in {} (no {}): start it with `shardvault up`",
            dir.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let out = if args.path {
        format!("{}\n", path.display())
    } else {
        text
    };
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// Starts `shardvault serve` detached, logging to `<state>/shardvault.log`, and waits until
/// it answers.
pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir::resolve(args.state_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let rt = runtime()?;
    if rt.block_on(Client::connect(&dir)).is_ok() {
        println!("shardvault is already running in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let controllers = match args.controllers {
        Controllers::All => "all",
        Controllers::None => "none",
    };
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--state-dir")
        .arg(&dir)
        .args(["--controllers", controllers])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start `shardvault serve`")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let kubeconfig = dir.join(KUBECONFIG);
    loop {
        if rt.block_on(Client::connect(&dir)).is_ok() && kubeconfig.exists() {
            println!(
                "shardvault is running in {} (pid {}, log {}, kubeconfig {})",
                dir.display(),
                child.id(),
                log_path.display(),
                kubeconfig.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "shardvault serve exited ({status}) before answering; its log {} ends with:\n{}",
                log_path.display(),
                log_tail(&log_path)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "shardvault serve (pid {}) did not answer within {}s; see {}",
                child.id(),
                args.timeout,
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok() && is_shardvault(pid)
}

/// True when `pid` runs shardvault (so a stale pid file never signals a stranger; a
/// zombie has an empty command line).
fn is_shardvault(pid: Pid) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("shardvault"))
}

/// Stops the background daemon with SIGTERM and waits until it has exited.
pub fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir::resolve(args.state_dir);
    let pid_path = dir.join(PID_FILE);
    let pid = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|p| alive(*p));
    let Some(pid) = pid else {
        println!("shardvault is not running in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    kill(pid, Signal::SIGTERM).with_context(|| format!("cannot signal shardvault (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!(
                "shardvault (pid {pid}) did not stop within {}s; see {} (kill -9 {pid} if it hangs)",
                args.timeout,
                dir.join(LOG_FILE).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("shardvault stopped ({})", dir.display());
    Ok(ExitCode::SUCCESS)
}
