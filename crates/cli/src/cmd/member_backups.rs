//! `shardvault backups ls`, `backups delete` and `backups retain` of one server's backups
//! (without `--storage`): what the storage of the settings holds, without the daemon.

use std::collections::BTreeSet;

use anyhow::bail;
use shardvault_api::quantity::human_bytes;
use shardvault_pg::engine::chain::needed_by_kept;
use shardvault_pg::engine::prune::{self, plan_retain, plan_wal_prune};
use shardvault_pg::engine::{self, BackupSummary, Repo};

use super::node::backup_name;
use super::settings::SettingsArgs;
use super::stdout::{out, outln};

/// Options of `shardvault backups delete`.
#[derive(clap::Args)]
pub struct DeleteArgs {
    /// Backup to delete, or LATEST for the newest.
    name: String,
    /// Delete it; without this, only say what would be deleted (as WAL-G's delete does).
    #[arg(long)]
    confirm: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Options of `shardvault backups retain`.
#[derive(clap::Args)]
pub struct RetainArgs {
    /// Full backups to keep (at least 1): the newest ones, with every backup taken after
    /// the oldest of them and what their incrementals need.
    #[arg(value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    full: u32,
    /// Delete; without this, only say what would be deleted (as WAL-G's delete does).
    #[arg(long)]
    confirm: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// The summaries of every complete backup of `repo`, oldest first.
async fn summaries(repo: &Repo) -> anyhow::Result<Vec<BackupSummary>> {
    Ok(engine::list_backups(repo)
        .await?
        .iter()
        .map(|m| m.summary())
        .collect())
}

/// Prints the complete backups of one server.
pub async fn list(settings: &SettingsArgs, json: bool) -> anyhow::Result<()> {
    let repo = Repo::open(&settings.load()?.source()?)?;
    let summaries = summaries(&repo).await?;
    if summaries.is_empty() {
        eprintln!("no backups in {}", repo.store.describe());
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&summaries)?);
    } else {
        out!("{}", table(&summaries));
    }
    Ok(())
}

/// One line about backup `b`: its name, kind, start and size.
fn describe(b: &BackupSummary) -> String {
    let kind = match &b.parent {
        Some(p) => format!("incremental over {p}"),
        None => "full".to_string(),
    };
    format!(
        "{} ({kind}, started {}, {} stored)",
        b.name,
        b.start_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        human_bytes(b.size.compressed)
    )
}

/// Runs `shardvault backups delete`.
pub async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let repo = Repo::open(&a.settings.load()?.source()?)?;
    let name = backup_name(&repo, &a.name).await?;
    let backups = summaries(&repo).await?;
    let Some(backup) = backups.iter().find(|b| b.name == name) else {
        bail!(
            "backup {name} not found in {}: list backups with `shardvault backups ls`",
            repo.store.describe()
        );
    };
    let others: BTreeSet<String> = backups
        .iter()
        .filter(|b| b.name != name)
        .map(|b| b.name.clone())
        .collect();
    if let Some(dependents) = needed_by_kept(&backups, &others).get(&name) {
        bail!(
            "backup {name} is needed by the incremental backups {}: delete them first, or keep fewer full backups with `shardvault backups retain N`",
            dependents.join(", ")
        );
    }
    if !a.confirm {
        outln!("would delete backup {}", describe(backup));
        outln!("nothing deleted: run again with --confirm to delete it");
        return Ok(());
    }
    prune::delete_backup(&repo, &name).await?;
    outln!("deleted backup {}", describe(backup));
    Ok(())
}

/// Runs `shardvault backups retain`.
pub async fn retain(a: RetainArgs) -> anyhow::Result<()> {
    let repo = Repo::open(&a.settings.load()?.source()?)?;
    let backups = summaries(&repo).await?;
    let plan = plan_retain(&backups, a.full as usize);
    let kept: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| plan.keep.contains(&b.name))
        .collect();
    let starts: Vec<String> = kept.iter().map(|b| b.start_wal_file.clone()).collect();
    let wal = plan_wal_prune(&prune::list_wal(&repo).await?, &starts);
    let verb = if a.confirm {
        "deleting"
    } else {
        "would delete"
    };
    for b in &kept {
        outln!("keeping backup {}", describe(b));
    }
    for b in backups.iter().filter(|b| plan.delete.contains(&b.name)) {
        outln!("{verb} backup {}", describe(b));
    }
    if let (Some(from), false) = (&wal.keep_from, wal.delete.is_empty()) {
        outln!(
            "{verb} {} WAL files older than {from}, the start of the oldest backup kept",
            wal.delete.len()
        );
    }
    if plan.delete.is_empty() && wal.delete.is_empty() {
        outln!("nothing to delete");
        return Ok(());
    }
    if !a.confirm {
        outln!("nothing deleted: run again with --confirm to delete");
        return Ok(());
    }
    // Backups first: WAL goes only once no backup that needs it is left.
    for name in &plan.delete {
        prune::delete_backup(&repo, name).await?;
    }
    prune::delete_wal(&repo, &wal.delete).await?;
    outln!(
        "deleted {} backups and {} WAL files",
        plan.delete.len(),
        wal.delete.len()
    );
    Ok(())
}

/// The `backups ls` table.
fn table(rows: &[engine::BackupSummary]) -> String {
    let mut out = vec![[
        "NAME".to_string(),
        "START".to_string(),
        "END LSN".to_string(),
        "TIMELINE".to_string(),
        "SIZE".to_string(),
        "STORED".to_string(),
        "FROM".to_string(),
        "TYPE".to_string(),
    ]];
    for r in rows {
        out.push([
            r.name.clone(),
            r.start_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            r.end_lsn.to_string(),
            r.timeline.to_string(),
            human_bytes(r.size.uncompressed),
            human_bytes(r.size.compressed),
            if r.from_replica { "replica" } else { "primary" }.to_string(),
            match &r.parent {
                Some(p) => format!("incremental over {p}"),
                None => "full".to_string(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| out.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    out.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}
