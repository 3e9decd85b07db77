//! `shardvault backups ls --storage` and `backups import`: the sharded backups an
//! SGObjectStorage holds, read from storage alone, and brought back as resources so a new
//! installation can restore from them.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use shardvault_api::Kind;
use shardvault_api::objectstorage::ObjectStorageSpec;
use shardvault_api::quantity::human_bytes;
use shardvault_control::destination::resolve_storage;
use shardvault_control::import::documents;
use shardvault_control::records::{Damaged, Records, ShardedRecord};
use shardvault_control::resources::{Secrets, owner_reference};
use shardvault_pg::engine::layout;
use shardvault_storage::Destination;

use super::client::{Client, ConnArgs};
use super::settings::SettingsArgs;
use super::stdout::outln;

/// Options of `shardvault backups`.
#[derive(clap::Args)]
pub struct BackupsArgs {
    #[command(subcommand)]
    command: BackupsCommand,
}

#[derive(clap::Subcommand)]
enum BackupsCommand {
    /// Lists backups: one server's (settings from the environment or `--config`), or the
    /// sharded backups an SGObjectStorage holds, read from storage alone (`--storage`).
    #[command(
        after_help = "Example:\n  SHARDVAULT_STORAGE_PREFIX=/var/backups/pg shardvault backups ls\n  shardvault backups ls --config /etc/shardvault.yaml --json\n  shardvault backups ls --storage my-backup-storage"
    )]
    Ls(LsArgs),
    /// Deletes one server's backup (or LATEST), refusing one a kept incremental needs; a dry
    /// run without --confirm.
    #[command(
        after_help = "Example:\n  shardvault backups delete backup-20261124T010000Z            # says what it would delete\n  shardvault backups delete backup-20261124T010000Z --confirm"
    )]
    Delete(super::member_backups::DeleteArgs),
    /// Keeps one server's N newest full backups (and what they need), deletes older backups
    /// and the WAL before the oldest one kept; a dry run without --confirm.
    #[command(
        after_help = "Example:\n  shardvault backups retain 2              # says what it would delete\n  shardvault backups retain 2 --confirm"
    )]
    Retain(super::member_backups::RetainArgs),
    /// Brings a sharded backup found in storage back as SGShardedBackup and SGBackups, so a
    /// new installation can restore from it.
    #[command(
        after_help = "Example:\n  shardvault backups import --storage my-backup-storage manual-backup\n  # then apply an SGShardedCluster with initialData.restore.fromBackup.name: manual-backup"
    )]
    Import(ImportArgs),
}

/// Options of `shardvault backups ls`.
#[derive(clap::Args)]
struct LsArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// SGObjectStorage whose sharded backups to list (through the daemon).
    #[arg(long, conflicts_with = "config")]
    storage: Option<String>,
    /// Cluster prefix inside the storage (default: search the whole storage).
    #[arg(long, requires = "storage")]
    path: Option<String>,
    /// Namespace of the SGObjectStorage and its Secrets.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Options of `shardvault backups import`.
#[derive(clap::Args)]
struct ImportArgs {
    /// Name of the sharded backup to import.
    name: String,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `shardvault backups ...`.
pub fn run(args: BackupsArgs) -> anyhow::Result<std::process::ExitCode> {
    super::client::runtime()?.block_on(async {
        match args.command {
            BackupsCommand::Ls(a) => match a.storage {
                None => super::member_backups::list(&a.settings, a.json).await?,
                Some(storage) => {
                    let client = a.conn.connect().await?;
                    let sa = StorageArgs {
                        storage,
                        path: a.path,
                        namespace: a.namespace,
                    };
                    ls(&client, &sa, a.json).await?;
                }
            },
            BackupsCommand::Delete(a) => super::member_backups::delete(a).await?,
            BackupsCommand::Retain(a) => super::member_backups::retain(a).await?,
            BackupsCommand::Import(a) => {
                let client = a.conn.connect().await?;
                import(&client, &a.storage, &a.name).await?;
            }
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Where to look for sharded backups.
#[derive(clap::Args)]
pub struct StorageArgs {
    /// SGObjectStorage to read.
    #[arg(long)]
    pub storage: String,
    /// Cluster prefix inside the storage (default: search the whole storage).
    #[arg(long)]
    pub path: Option<String>,
    /// Namespace of the SGObjectStorage and its Secrets.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Every Secret of `namespace`, decoded, read through the daemon.
pub async fn fetch_secrets(client: &Client, namespace: &str) -> anyhow::Result<Secrets> {
    let mut map = BTreeMap::new();
    for s in client.list(Kind::Secret, Some(namespace), None).await? {
        let name = s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(full) = client.get(Kind::Secret, namespace, &name).await? {
            map.insert(name, Secrets::decode_data(&full));
        }
    }
    Ok(Secrets::from_map(map))
}

/// Opens the records of an SGObjectStorage (under `--path`), with credentials from its
/// Secrets.
async fn open(client: &Client, args: &StorageArgs) -> anyhow::Result<Records> {
    let ns = &args.namespace;
    let obj = client
        .get(Kind::SGObjectStorage, ns, &args.storage)
        .await?
        .with_context(|| {
            format!(
                "--storage: SGObjectStorage {:?} not found in namespace {ns}: apply it (and its Secrets) first",
                args.storage
            )
        })?;
    let spec: ObjectStorageSpec = serde_json::from_value(obj["spec"].clone())
        .context("the SGObjectStorage spec is unreadable")?;
    let secrets = fetch_secrets(client, ns).await?;
    let resolved = resolve_storage(&spec, &secrets).map_err(|e| anyhow::anyhow!("{e}"))?;
    let records = Records::open(&Destination {
        storage: resolved.config,
        prefix: args
            .path
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string(),
        compression: Default::default(),
        performance: Default::default(),
        encryption: resolved.encryption,
    })?;
    Ok(records)
}

/// The readable records (with their full cluster prefixes) and the damaged ones.
async fn records(
    client: &Client,
    args: &StorageArgs,
) -> anyhow::Result<(Vec<(String, ShardedRecord)>, Vec<Damaged>)> {
    let found = open(client, args).await?.find_backups().await?;
    let base = args.path.as_deref().unwrap_or("");
    let records = found
        .records
        .into_iter()
        .map(|(prefix, r)| (layout::join(base, &prefix).trim_matches('/').to_string(), r))
        .collect();
    Ok((records, found.damaged))
}

/// Prints the sharded backups found in storage.
pub async fn ls(client: &Client, args: &StorageArgs, json: bool) -> anyhow::Result<()> {
    let (found, damaged) = records(client, args).await?;
    for d in &damaged {
        eprintln!(
            "warning: sharded backup {}: {}; it is not listed and cannot be imported",
            d.name, d.error
        );
    }
    if json {
        let list: Vec<Value> = found
            .iter()
            .map(|(p, r)| serde_json::json!({"path": p, "record": r}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    outln!(
        "{:<32} {:<24} {:>7} {:<32} {:<12} {:<32} {:>10} {:>12}  PATH",
        "NAME",
        "CLUSTER",
        "MEMBERS",
        "RESTORE POINT TIME",
        "TYPE",
        "PARENT",
        "COMPRESSED",
        "UNCOMPRESSED"
    );
    for (path, r) in &found {
        outln!(
            "{:<32} {:<24} {:>7} {:<32} {:<12} {:<32} {:>10} {:>12}  {}",
            r.name,
            r.cluster,
            r.members.len(),
            r.restore_point.time,
            r.backup_type.unwrap_or_default(),
            r.parent.as_deref().unwrap_or("-"),
            human_bytes(r.size.compressed),
            human_bytes(r.size.uncompressed),
            path
        );
    }
    if found.is_empty() && damaged.is_empty() {
        eprintln!(
            "no sharded backups found in SGObjectStorage {}",
            args.storage
        );
    }
    Ok(())
}

/// Creates the SGShardedBackup and SGBackups of sharded backup `name` found in storage.
pub async fn import(client: &Client, args: &StorageArgs, name: &str) -> anyhow::Result<()> {
    let (found, damaged) = records(client, args).await?;
    if let Some(d) = damaged.iter().find(|d| d.name == name) {
        bail!(
            "sharded backup {name}: {}; its record in storage is damaged, so it cannot be imported: choose another backup",
            d.error
        );
    }
    let mut matching: Vec<_> = found.into_iter().filter(|(_, r)| r.name == name).collect();
    let (prefix, record) = match matching.len() {
        0 => bail!(
            "no sharded backup {name:?} in SGObjectStorage {}: list them with `shardvault backups ls --storage {}`",
            args.storage,
            args.storage
        ),
        1 => matching.remove(0),
        n => bail!(
            "{n} sharded backups named {name:?} in SGObjectStorage {}: choose one with --path",
            args.storage
        ),
    };
    let docs = documents(&record, &prefix, &args.namespace, &args.storage);
    for doc in &docs {
        let (kind, ns, n) = super::client::identify(doc)?;
        if client.get(kind, &ns, &n).await?.is_some() {
            bail!(
                "{} {n} already exists in namespace {ns}: delete it or import into another namespace (-n)",
                kind.qualified()
            );
        }
    }
    // All or nothing: what was created is deleted again if any step fails.
    let mut created: Vec<(Kind, String, String)> = Vec::new();
    let result = match create_all(client, docs, &mut created).await {
        Ok(()) => await_status(client, &args.namespace, name).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        for (kind, ns, n) in created.iter().rev() {
            if let Err(e) = client.delete(*kind, ns, n).await {
                eprintln!(
                    "warning: cannot remove {}/{n} after the failed import: {e}",
                    kind.qualified()
                );
            }
        }
    }
    result
}

/// Creates each document, the SGBackups owned by the SGShardedBackup (the first), recording
/// in `created` what exists so far.
async fn create_all(
    client: &Client,
    docs: Vec<Value>,
    created: &mut Vec<(Kind, String, String)>,
) -> anyhow::Result<()> {
    let mut owner = None;
    for mut doc in docs {
        if let Some(owner) = &owner {
            doc["metadata"]["ownerReferences"] = serde_json::json!([owner_reference(owner)]);
        }
        let (obj, _) = client.apply(&doc).await?;
        let (kind, ns, n) = super::client::identify(&obj)?;
        created.push((kind, ns, n.clone()));
        outln!("{}/{n} imported", kind.qualified());
        owner.get_or_insert(obj);
    }
    Ok(())
}

/// How long the backup controller may take to fill an imported backup's status.
const STATUS_WAIT: Duration = Duration::from_secs(60);

/// Waits until the backup controller has read the record of imported sharded backup `name`
/// and written its status: Completed is the import done, Failed says why.
async fn await_status(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        let obj = client.get(Kind::SGShardedBackup, ns, name).await?;
        let status = obj
            .as_ref()
            .and_then(|o| o.pointer("/status/process/status"))
            .and_then(Value::as_str);
        match status {
            Some("Completed") => return Ok(()),
            Some("Failed") => bail!(
                "SGShardedBackup {name}: {}",
                obj.as_ref()
                    .and_then(|o| o.pointer("/status/process/failure"))
                    .and_then(Value::as_str)
                    .unwrap_or("the import failed")
            ),
            _ if Instant::now() >= deadline => bail!(
                "SGShardedBackup {name}: its status was not filled from its record within {} s: check that the daemon runs its controllers (`shardvault serve` without `--controllers none`)",
                STATUS_WAIT.as_secs()
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
