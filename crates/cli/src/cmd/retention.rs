//! `shardvault retention plan`: what the next retention pass over a cluster would delete
//! (backups, and WAL ranges per member), computed from the resources and storage; deletes
//! nothing.

use anyhow::Context;
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::shardedbackup::SGShardedBackup;
use shardvault_api::shardedcluster::{SGShardedCluster, ShardedClusterSpec};
use shardvault_control::destination::ResolvedStorage;
use shardvault_control::retention::{SecretObjects, plan, resolve_entries};

use super::client::{Client, ConnArgs};
use super::stdout::{out, outln};

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

/// A cluster as the daemon stores it, with the storage of each backups[] entry resolved.
pub struct ClusterStorages {
    /// The SGShardedCluster object.
    pub cluster: Value,
    /// Its spec.
    pub spec: ShardedClusterSpec,
    /// The resolved storage of each backups[] entry.
    pub storages: Vec<ResolvedStorage>,
}

/// Reads SGShardedCluster `name` of `ns` and resolves its entries' storages and Secrets.
pub async fn cluster_storages(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<ClusterStorages> {
    let cluster = client
        .get(Kind::SGShardedCluster, ns, name)
        .await?
        .with_context(|| {
            format!(
                "SGShardedCluster {name:?} not found in namespace {ns}: check the name (shardvault get sgscl -n {ns})"
            )
        })?;
    let spec: ShardedClusterSpec = serde_json::from_value(cluster["spec"].clone())
        .with_context(|| format!("SGShardedCluster {name}: unreadable spec"))?;
    let storages = client.list(Kind::SGObjectStorage, Some(ns), None).await?;
    // Lists leave Secret data out; each one is read in full.
    let mut secrets: Vec<Value> = Vec::new();
    for s in client.list(Kind::Secret, Some(ns), None).await? {
        let secret = s["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(full) = client.get(Kind::Secret, ns, secret).await? {
            secrets.push(full);
        }
    }
    let storages = resolve_entries(&spec, &storages, &SecretObjects(&secrets))?;
    Ok(ClusterStorages {
        cluster,
        spec,
        storages,
    })
}

/// Runs `shardvault retention ...`.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let RetentionCommand::Plan(a) = args.command;
    super::client::runtime()?.block_on(async {
        let client = a.conn.connect().await?;
        let ns = a.namespace.as_str();
        let c = cluster_storages(&client, ns, &a.cluster).await?;
        let cluster: SGShardedCluster = serde_json::from_value(c.cluster)
            .with_context(|| format!("SGShardedCluster {}: unreadable", a.cluster))?;
        let backups = client
            .list(Kind::SGShardedBackup, Some(ns), None)
            .await?
            .into_iter()
            .map(serde_json::from_value::<SGShardedBackup>)
            .collect::<Result<Vec<_>, _>>()
            .context("an SGShardedBackup of the namespace is unreadable")?;
        let plan = plan(&cluster, &backups, &c.storages).await?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            out!("{}", plan.render());
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
