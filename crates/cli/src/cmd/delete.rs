//! `shardvault delete KIND NAME | -f FILE`: delete resources (and what they own).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use shardvault_api::Kind;

use super::apply::read_manifests;
use super::client::{ConnArgs, identify, runtime};
use super::get::parse_targets;
use super::stdout::outln;

/// Options of `shardvault delete`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// KIND NAME... or KIND/NAME...
    resources: Vec<String>,
    /// Delete the objects these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = shardvault_store::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Wait until the objects are gone (finalizers done).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (`60s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = super::wait::parse_timeout)]
    timeout: Duration,
    /// Succeed when an object does not exist.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `delete`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    for m in read_manifests(&args.files, Some(&args.namespace))? {
        targets.push(identify(&m.doc)?);
    }
    if !args.resources.is_empty() {
        for (kind, name) in parse_targets(&args.resources)? {
            let Some(name) = name else {
                bail!(
                    "give the name of the {} to delete (delete KIND NAME)",
                    kind.qualified()
                );
            };
            targets.push((kind, args.namespace.clone(), name));
        }
    }
    if targets.is_empty() {
        bail!("nothing to delete: give KIND NAME, KIND/NAME or -f FILE");
    }
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        let mut failed = false;
        for (kind, ns, name) in &targets {
            match client.delete(*kind, ns, name).await? {
                Some(_) => outln!("{} {name:?} deleted", kind.qualified()),
                None if args.ignore_not_found => {}
                None => {
                    failed = true;
                    eprintln!(
                        "Error from server (NotFound): {} {name:?} not found in namespace {ns}",
                        kind.qualified()
                    );
                }
            }
        }
        if args.wait {
            for (kind, ns, name) in &targets {
                client
                    .wait_for(*kind, ns, name, args.timeout, |o| o.is_none())
                    .await?;
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
