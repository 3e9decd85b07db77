//! `shardvault get restorepoints [CLUSTER...]`: the scheduled cluster-wide restore points of
//! clusters, read from the records in their backups[] entries' storage.

use std::collections::BTreeMap;
use std::process::ExitCode;

use shardvault_api::Kind;
use shardvault_control::destination::cluster_destination;
use shardvault_control::records::{Records, RestorePointRecord};
use shardvault_control::resources::name_of;

use super::client::{ConnArgs, runtime};
use super::get::format_table;
use super::retention::cluster_storages;
use super::stdout::{out, outln};

/// Names `get` accepts for restore points.
pub const NAMES: [&str; 3] = ["restorepoints", "restorepoint", "rp"];

/// How to print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table.
    Table,
    /// JSON records.
    Json,
    /// YAML records.
    Yaml,
}

/// Every restore point of cluster `name`, from all of its entries' storages, oldest first.
async fn of_cluster(
    client: &super::client::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<Vec<RestorePointRecord>> {
    let c = cluster_storages(client, ns, name).await?;
    let mut by_name = BTreeMap::new();
    for (entry, storage) in c.spec.backups().iter().zip(&c.storages) {
        let records = Records::open(&cluster_destination(entry, storage, ns, name))?;
        for r in records.restore_points().await? {
            by_name.insert(r.restore_point.name.clone(), r);
        }
    }
    let mut out: Vec<RestorePointRecord> = by_name.into_values().collect();
    out.sort_by_key(RestorePointRecord::time);
    Ok(out)
}

/// Lists the restore points of `clusters` (every cluster of `ns` when empty).
pub fn run(
    clusters: &[String],
    ns: &str,
    format: Format,
    conn: &ConnArgs,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = conn.connect().await?;
        let names: Vec<String> = if clusters.is_empty() {
            client
                .list(Kind::SGShardedCluster, Some(ns), None)
                .await?
                .iter()
                .filter(|c| c.pointer("/spec/configurations/backups").is_some())
                .map(|c| name_of(c).to_string())
                .collect()
        } else {
            clusters.to_vec()
        };
        let mut all = Vec::new();
        for name in &names {
            all.extend(of_cluster(&client, ns, name).await?);
        }
        match format {
            Format::Json => outln!("{}", serde_json::to_string_pretty(&all)?),
            Format::Yaml => out!("{}", yaml_serde::to_string(&all)?),
            Format::Table if all.is_empty() => {
                eprintln!("No restore points found in {ns} namespace.");
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|r| {
                        let rp = &r.restore_point;
                        vec![
                            r.cluster.clone(),
                            rp.name.clone(),
                            rp.time.clone(),
                            rp.members.len().to_string(),
                            format!("{:.1} ms", rp.write_pause_ms),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    format_table(
                        &["CLUSTER", "NAME", "TIME", "MEMBERS", "WRITE PAUSE"],
                        &rows
                    )
                );
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
