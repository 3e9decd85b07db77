//! `shardvault verify sgshardedbackup NAME`: reads a whole sharded backup back from storage
//! and checks every member's parts, files and WAL up to the cluster-wide restore point.

use std::process::ExitCode;

use anyhow::{Context, bail};
use shardvault_api::Kind;
use shardvault_api::quantity::human_bytes;
use shardvault_api::shardedbackup::ShardedBackupStatus;
use shardvault_control::resources::backup_destination;
use shardvault_control::verify::{
    MemberToVerify, verify_member, verify_record, verify_restore_points,
};

use super::catalog::fetch_secrets;
use super::client::{ConnArgs, runtime};
use super::stdout::outln;

/// Options of `shardvault verify`.
#[derive(clap::Args)]
pub struct Args {
    /// `sgshardedbackup NAME`, or `sgshardedbackup/NAME`.
    #[arg(num_args = 1..=2, required = true)]
    target: Vec<String>,
    /// Namespace of the backup.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs the verification; exit 1 names the first bad or missing object.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (kind, name) = match args.target.as_slice() {
        [one] => one.split_once('/').context("give sgshardedbackup NAME")?,
        [k, n] => (k.as_str(), n.as_str()),
        _ => bail!("give sgshardedbackup NAME"),
    };
    if Kind::from_cli_name(kind) != Some(Kind::SGShardedBackup) {
        bail!(
            "{kind:?}: verify takes an sgshardedbackup (a single member is verified with `shardvault node verify`)"
        );
    }
    let ns = args.namespace.as_str();
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        let backup = client
            .get(Kind::SGShardedBackup, ns, name)
            .await?
            .with_context(|| format!("SGShardedBackup {name:?} not found in namespace {ns}"))?;
        let status: ShardedBackupStatus =
            serde_json::from_value(backup["status"].clone()).unwrap_or_default();
        let rp = status.restore_point.clone().with_context(|| {
            format!(
                "SGShardedBackup {name} has no restore point: it is {}",
                status.process.status
            )
        })?;
        let secrets = fetch_secrets(&client, ns).await?;
        let mut failed = false;
        let mut members = Vec::new();
        for (sg_backup, point) in status.sg_backups.iter().zip(&rp.members) {
            let child = client
                .get(Kind::SGBackup, ns, sg_backup)
                .await?
                .with_context(|| format!("SGBackup {sg_backup} of {name} is missing"))?;
            let config = child
                .pointer("/status/sgBackupConfig")
                .with_context(|| format!("SGBackup {sg_backup} has no status.sgBackupConfig"))?;
            members.push(MemberToVerify {
                name: point.name.clone(),
                backup: sg_backup.clone(),
                destination: backup_destination(config, &secrets, sg_backup)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                restore_point_wal: point.wal_file.clone(),
                manifest_sha256: child
                    .pointer("/status/backupInformation/manifestSha256")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            });
        }
        match &status.sharded_record_config {
            Some(config) => {
                let dest = backup_destination(config, &secrets, name)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let anchors: Vec<_> = members.iter().map(|m| m.manifest_sha256.clone()).collect();
                match verify_record(&dest, name, &status, &anchors).await {
                    Ok(_) => outln!("record {}: ok", shardvault_pg::engine::layout::sharded_record_key(name)),
                    Err(e) => {
                        failed = true;
                        outln!("record: FAILED: {e}");
                    }
                }
                if let Some(coordinator) = members.first() {
                    match verify_restore_points(&dest, &coordinator.destination, &rp.time).await
                    {
                        Ok(n) => outln!("restore point records: ok ({n} after the backup)"),
                        Err(e) => {
                            failed = true;
                            outln!("restore point records: FAILED: {e}");
                        }
                    }
                }
            }
            None => outln!(
                "record: not checked (status.shardedRecordConfig is missing: a backup of an older version)"
            ),
        }
        for member in &members {
            match verify_member(member).await {
                Ok(v) => outln!(
                    "{}: ok ({} files, {}, {} WAL segments up to the restore point)",
                    v.name,
                    v.files,
                    human_bytes(v.bytes),
                    v.wal_segments
                ),
                Err(e) => {
                    failed = true;
                    outln!("{}: FAILED: {e}", member.name);
                }
            }
        }
        if failed {
            outln!("sharded backup {name} cannot be trusted: take a new backup");
            Ok(ExitCode::FAILURE)
        } else {
            outln!(
                "sharded backup {name} verified: every member restores to restore point {}",
                rp.name
            );
            Ok(ExitCode::SUCCESS)
        }
    })
}
