//! `shardvault demo`: the whole journey on the embedded default.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use shardvault_control::demo::{DemoOptions, DemoProgress, StepReport, run as run_demo};

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

/// Progress on a terminal: a spinner per step; otherwise plain log lines.
struct Steps {
    spinner: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl DemoProgress for Steps {
    fn step_started(&self, name: &str) {
        if self.terminal {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar.set_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.spinner.lock().expect("not poisoned") = Some(bar);
        } else {
            tracing::info!("{name} ...");
        }
    }

    fn step_done(&self, step: &StepReport) {
        let line = format!(
            "{} ({:.1} s): {}",
            step.name,
            step.elapsed.as_secs_f64(),
            step.detail
        );
        match self.spinner.lock().expect("not poisoned").take() {
            Some(bar) => bar.finish_with_message(format!("done: {line}")),
            None => tracing::info!("done: {line}"),
        }
    }
}

/// Runs the demo; exit status 0 only if every check passed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (state_dir, temp) = match args.state_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("--state-dir {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("shardvault-demo-")
                .tempdir()
                .context("cannot create a temporary state dir: set --state-dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    // The server user must be able to enter the state dir.
    shardvault_pg::user::chown_to_server_user(&state_dir)
        .with_context(|| format!("cannot give {} to the postgres user", state_dir.display()))?;
    let opts = DemoOptions {
        state_dir: state_dir.clone(),
        shardvault_bin: std::env::current_exe().context("cannot find the shardvault binary")?,
        keep: args.keep,
    };
    let progress = Arc::new(Steps {
        spinner: Mutex::new(None),
        terminal: std::io::stderr().is_terminal(),
    });
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run_demo(&opts, progress))?;
    let total = started.elapsed();

    println!();
    println!("{:<62} {:>9}  DETAIL", "STEP", "SECONDS");
    for s in &report.steps {
        println!(
            "{:<62} {:>9.1}  {}",
            s.name,
            s.elapsed.as_secs_f64(),
            s.detail
        );
    }
    println!();
    println!("{:<62} {:>9}  DETAIL", "CHECK", "RESULT");
    for c in &report.checks {
        println!(
            "{:<62} {:>9}  {}",
            c.name,
            if c.passed { "ok" } else { "FAILED" },
            c.detail
        );
    }
    println!();
    let passed = report.passed();
    println!(
        "{} in {:.1} s{}",
        if passed {
            "every check passed"
        } else {
            "SOME CHECKS FAILED"
        },
        total.as_secs_f64(),
        if args.keep {
            format!("; state kept in {}", state_dir.display())
        } else {
            String::new()
        }
    );
    if args.keep
        && let Some(t) = temp
    {
        let _ = t.keep();
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
