//! `shardvault retention plan`: what the next retention pass over a cluster would delete
//! (backups, and WAL ranges per member), computed from the resources and storage; deletes
//! nothing.

use anyhow::Context;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::shardedcluster::ShardedClusterSpec;
use shardvault_control::retention::{SecretObjects, plan, resolve_entries};

use super::client::ConnArgs;

/// Options of `shardvault retention`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(clap::Subcommand)]
enum RetentionCommand {
    /// Prints what the next retention pass would delete, per backups[] entry; deletes nothing.
    #[command(
        after_help = "Example:\n  shardvault retention plan my-sharded-cluster\n  shardvault retention plan my-sharded-cluster -n prod --json"
    )]
    Plan(PlanArgs),
}

/// Options of `shardvault retention plan`.
#[derive(clap::Args)]
struct PlanArgs {
    /// SGShardedCluster name.
    cluster: String,
    /// Namespace of the cluster.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shardvault retention ...`.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let RetentionCommand::Plan(a) = args.command;
    super::client::runtime()?.block_on(async {
        let client = a.conn.connect().await?;
        let ns = a.namespace.as_str();
        let cluster = client
            .get(Kind::SGShardedCluster, ns, &a.cluster)
            .await?
            .with_context(|| {
                format!(
                    "SGShardedCluster {:?} not found in namespace {ns}: check the name (shardvault get sgscl -n {ns})",
                    a.cluster
                )
            })?;
        let spec: ShardedClusterSpec = serde_json::from_value(cluster["spec"].clone())
            .with_context(|| format!("SGShardedCluster {}: unreadable spec", a.cluster))?;
        let storages = client.list(Kind::SGObjectStorage, Some(ns), None).await?;
        // Lists leave Secret data out; each one referenced is read in full.
        let mut secrets: Vec<Value> = Vec::new();
        for s in client.list(Kind::Secret, Some(ns), None).await? {
            let name = s["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(full) = client.get(Kind::Secret, ns, name).await? {
                secrets.push(full);
            }
        }
        let resolved = resolve_entries(&spec, &storages, &SecretObjects(&secrets))?;
        let backups = client.list(Kind::SGShardedBackup, Some(ns), None).await?;
        let plan = plan(&cluster, &backups, &resolved).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.render());
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
