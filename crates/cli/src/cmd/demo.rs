//! `shardvault demo`: the whole journey on the embedded default, through the same control
//! plane a user drives: a daemon in a fresh state dir, an SGObjectStorage of type
//! filesystem, a ddp SGShardedCluster (coordinator + 2 shards), data through a distributed
//! table, an SGShardedBackup, more writes, then two new clusters restored from the backup (to
//! its restore point and to a timestamp), each checked member by member against what was
//! written, and a summary table.

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::quantity::human_bytes;
use shardvault_pg::fingerprint::{self, Fingerprint, differences};
use shardvault_pg::runtime::cluster::ClusterObserved;
use shardvault_pg::runtime::{ClusterId, ClusterRuntime, LocalRuntime};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::serve;
use super::stdout::outln;

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

const NS: &str = "default";
const SOURCE: &str = "demo";
const BACKUP: &str = "demo-backup";
const WAIT: Duration = Duration::from_secs(180);

fn manifests(objects: &Path) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: demo-storage
spec:
  type: filesystem
  filesystem:
    path: {}
---
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: {SOURCE}
spec:
  type: ddp
  database: demo
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: 2
    instancesPerCluster: 1
  configurations:
    backups:
      - sgObjectStorage: demo-storage
        compression: lz4
---
apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: {BACKUP}
spec:
  sgShardedCluster: {SOURCE}
",
        objects.display()
    )
}

fn restore_manifest(name: &str, pitr: Option<&str>) -> String {
    let pitr = pitr
        .map(|t| format!("        pointInTimeRecovery:\n          restoreToTimestamp: '{t}'\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: {name}
spec:
  type: ddp
  database: demo
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: 2
    instancesPerCluster: 1
  initialData:
    restore:
      fromBackup:
        name: {BACKUP}
{pitr}"
    )
}

/// One line of the summary.
struct Row {
    name: String,
    seconds: f64,
    detail: String,
}

/// Runs the steps, showing each (a spinner on a terminal, log lines otherwise).
struct Journey {
    steps: Vec<Row>,
    checks: Vec<(String, bool, String)>,
    terminal: bool,
}

impl Journey {
    async fn step<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = anyhow::Result<(T, String)>>,
    ) -> anyhow::Result<T> {
        let bar = self.terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar.set_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            tracing::info!("{name} ...");
        }
        let started = Instant::now();
        let result = work.await;
        let seconds = started.elapsed().as_secs_f64();
        let (value, detail) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(bar) = bar {
                    bar.abandon_with_message(format!("{name}: failed"));
                }
                return Err(e.context(format!("demo step {name:?} failed")));
            }
        };
        let line = format!("{name} ({seconds:.1} s): {detail}");
        match bar {
            Some(bar) => bar.finish_with_message(format!("done: {line}")),
            None => tracing::info!("done: {line}"),
        }
        self.steps.push(Row {
            name: name.to_string(),
            seconds,
            detail,
        });
        Ok(value)
    }

    fn check(&mut self, name: String, diffs: Vec<String>, ok_detail: String) {
        let passed = diffs.is_empty();
        let detail = if passed { ok_detail } else { diffs.join("; ") };
        self.checks.push((name, passed, detail));
    }
}

async fn sql(conninfo: &str, statements: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute(statements).await?;
    Ok(())
}

/// What the daemon's runtime (under `state`) last observed of cluster `name`.
fn observed(state: &Path, name: &str) -> anyhow::Result<ClusterObserved> {
    let bin = std::env::current_exe().context("cannot find the shardvault binary")?;
    Ok(LocalRuntime::observing(state, bin).observed(&ClusterId::new(NS, name))?)
}

fn primary(o: &ClusterObserved, i: usize) -> String {
    o.primary_conninfo(i).expect("every member has a primary")
}

fn condition_ready(o: Option<&Value>) -> bool {
    o.and_then(|o| o.pointer("/status/conditions/0"))
        .is_some_and(|c| c["status"] == "True" || c["reason"] == "RestoreRefused")
}

async fn wait_ready(client: &Client, state: &Path, name: &str) -> anyhow::Result<ClusterObserved> {
    let obj = client
        .wait_for(Kind::SGShardedCluster, NS, name, WAIT, condition_ready)
        .await?
        .context("the cluster disappeared")?;
    let c = &obj["status"]["conditions"][0];
    if c["status"] != "True" {
        bail!("{name}: {}", c["message"].as_str().unwrap_or("not ready"));
    }
    observed(state, name)
}

fn rows(prints: &[Fingerprint]) -> i64 {
    prints.iter().flat_map(|f| f.values()).map(|t| t.rows).sum()
}

/// The journey itself, against a running daemon.
async fn journey(j: &mut Journey, client: &Client, state: &Path) -> anyhow::Result<()> {
    let objects = state.join("objects");
    let docs: Vec<Value> = manifests(&objects)
        .split("\n---\n")
        .map(|d| yaml_serde::from_str(d).expect("the demo manifests are valid"))
        .collect();
    client.apply(&docs[0]).await?;
    client.apply(&docs[1]).await?;
    let source = j
        .step(
            "start SGShardedCluster demo (ddp: coordinator + 2 shards)",
            async {
                let o = wait_ready(client, state, SOURCE).await?;
                Ok((
                    o,
                    "3 PostgreSQL 15 servers, WAL archived to demo-storage".to_string(),
                ))
            },
        )
        .await?;
    let coord = primary(&source, 0);
    j.step("load 2000 accounts through a distributed table", async {
        sql(
            &coord,
            "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, owner text not null, balance bigint not null', 'id');
             INSERT INTO accounts SELECT i, 'owner-' || i, 1000 FROM generate_series(1, 2000) i;",
        )
        .await?;
        Ok(((), "rows land on the shards by hash of id".to_string()))
    })
    .await?;
    let at_restore_point = j
        .step(
            "SGShardedBackup demo-backup with a cluster-wide restore point",
            async {
                client.apply(&docs[2]).await?;
                let done = |o: Option<&Value>| {
                    o.and_then(|o| o.pointer("/status/process/status"))
                        .is_some_and(|s| s == "Completed" || s == "Failed")
                };
                let b = client
                    .wait_for(Kind::SGShardedBackup, NS, BACKUP, WAIT, done)
                    .await?
                    .context("the backup disappeared")?;
                let st = &b["status"];
                if st["process"]["status"] != "Completed" {
                    bail!("{}", st["process"]["failure"].as_str().unwrap_or("failed"));
                }
                let prints = fingerprint::members(&source).await?;
                let size = &st["backupInformation"]["size"];
                Ok((
                    prints,
                    format!(
                        "{} members, {} stored of {} data, write pause {} ms",
                        st["sgBackups"].as_array().map_or(0, Vec::len),
                        human_bytes(size["compressed"].as_u64().unwrap_or(0)),
                        human_bytes(size["uncompressed"].as_u64().unwrap_or(0)),
                        st["restorePoint"]["writePauseMs"]
                    ),
                ))
            },
        )
        .await?;
    let (at_time, target) = j
        .step("more writes, with a target time between them", async {
            sql(
                &coord,
                "INSERT INTO accounts SELECT i, 'owner-' || i, 500 FROM generate_series(2001, 2500) i;
                 UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;",
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let target = jiff::Timestamp::now();
            let prints = fingerprint::members(&source).await?;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            sql(
                &coord,
                "INSERT INTO accounts SELECT i, 'late-' || i, 1 FROM generate_series(2501, 2800) i;
                 DELETE FROM accounts WHERE id % 11 = 0;",
            )
            .await?;
            Ok(((prints, target), format!("target {target}")))
        })
        .await?;
    let target_text = target.to_string();
    let restores = [
        (
            "demo-at-restore-point",
            None,
            at_restore_point,
            "the restore point".to_string(),
        ),
        (
            "demo-at-time",
            Some(target_text.as_str()),
            at_time,
            format!("time {target_text}"),
        ),
    ];
    for (name, pitr, _, _) in &restores {
        let doc: Value =
            yaml_serde::from_str(&restore_manifest(name, *pitr)).expect("valid manifest");
        client.apply(&doc).await?;
    }
    let restored = j
        .step(
            "restore two new clusters in parallel: to the restore point and to the time",
            async {
                let mut out = Vec::new();
                for (name, _, _, _) in &restores {
                    out.push(wait_ready(client, state, name).await?);
                }
                Ok((
                    out,
                    "6 members recovered and promoted, foreign servers repointed".to_string(),
                ))
            },
        )
        .await?;
    for ((name, _, want, label), restored) in restores.iter().zip(&restored) {
        let got = fingerprint::members(restored).await?;
        let mut diffs = Vec::new();
        for (m, (w, g)) in restored.members.iter().zip(want.iter().zip(&got)) {
            diffs.extend(
                differences(w, g)
                    .into_iter()
                    .map(|d| format!("{}: {d}", m.name)),
            );
        }
        j.check(
            format!("{name}: every member matches the source at {label}"),
            diffs,
            format!("{} rows on {} members identical", rows(&got), got.len()),
        );
        let (c, conn) = tokio_postgres::connect(&primary(restored, 0), NoTls).await?;
        tokio::spawn(conn);
        let through: i64 = c
            .query_one("SELECT count(*) FROM accounts", &[])
            .await?
            .get(0);
        let want_rows = rows(want);
        let diffs = if through == want_rows {
            Vec::new()
        } else {
            vec![format!(
                "{through} rows through the coordinator, {want_rows} on the source"
            )]
        };
        j.check(
            format!("{name}: its coordinator reads its own shards"),
            diffs,
            format!("{through} rows through the coordinator"),
        );
    }
    Ok(())
}

fn print_summary(j: &Journey, total: Duration) {
    let w = j
        .steps
        .iter()
        .map(|s| s.name.len())
        .chain(j.checks.iter().map(|c| c.0.len()))
        .max()
        .unwrap_or(10);
    outln!();
    outln!("{:<w$}  {:>7}  DETAIL", "STEP", "SECONDS");
    for s in &j.steps {
        outln!("{:<w$}  {:>7.1}  {}", s.name, s.seconds, s.detail);
    }
    outln!();
    outln!("{:<w$}  {:>7}  DETAIL", "CHECK", "RESULT");
    for (name, passed, detail) in &j.checks {
        outln!(
            "{:<w$}  {:>7}  {detail}",
            name,
            if *passed { "ok" } else { "FAILED" }
        );
    }
    outln!();
    let passed = !j.checks.is_empty() && j.checks.iter().all(|c| c.1);
    outln!(
        "{} in {:.1} s",
        if passed {
            "every check passed"
        } else {
            "SOME CHECKS FAILED"
        },
        total.as_secs_f64()
    );
}

/// Runs the demo; exit status 0 only if every check passed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (state, temp) = match args.state_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("--state-dir {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("shardvault-demo-")
                .tempdir()
                .context("cannot create a temporary state dir: give one with --state-dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    // The server user must be able to reach the clusters and storage under the state dir.
    shardvault_pg::user::chown_to_server_user(&state)
        .with_context(|| format!("cannot give {} to the postgres user", state.display()))?;
    let mut j = Journey {
        steps: Vec::new(),
        checks: Vec::new(),
        terminal: std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let daemon = tokio::spawn(serve::serve(
            serve::Args {
                state_dir: Some(state.clone()),
                listen: None,
                token_file: None,
                https_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                metrics_listen: None,
                console_listen: None,
                controllers: serve::Controllers::All,
            },
            shutdown.clone(),
        ));
        let client = loop {
            match Client::connect(&state).await {
                Ok(c) => break c,
                Err(_) if !daemon.is_finished() && started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e.context("the demo's control plane did not start")),
            }
        };
        let result = journey(&mut j, &client, &state).await;
        if !args.keep {
            for name in ["demo-at-restore-point", "demo-at-time", SOURCE] {
                let _ = client.delete(Kind::SGShardedCluster, NS, name).await;
            }
            for name in ["demo-at-restore-point", "demo-at-time", SOURCE] {
                let _ = client
                    .wait_for(Kind::SGShardedCluster, NS, name, WAIT, |o| o.is_none())
                    .await;
            }
        }
        shutdown.cancel();
        let _ = daemon.await;
        result
    });
    print_summary(&j, started.elapsed());
    result?;
    if args.keep {
        if let Some(t) = temp {
            let _ = t.keep();
        }
        outln!(
            "state kept in {0}; the clusters keep running: `shardvault up --state-dir {0}` then `shardvault get sgshardedbackup --state-dir {0}`",
            state.display()
        );
    }
    let passed = !j.checks.is_empty() && j.checks.iter().all(|c| c.1);
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
