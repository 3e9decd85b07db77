//! Volume snapshot backups of one member: `pg_backup_start`, a snapshot taken by whoever
//! holds the volume (the runtime), `pg_backup_stop`; then the backup label and a manifest
//! naming the snapshot go to storage (format 3, no parts), and WAL to the archive as
//! always, so the snapshot restores to any point after its end. A restore clones the
//! snapshot into the new data directory and [`prepare_clone`] makes it recover.

use std::path::Path;
use std::time::Duration;

use shardvault_storage::Destination;
use tokio_postgres::Client;

use super::backup::{Started, connect, hostname, parse_label, start};
use super::layout::{self, Lsn, SNAPSHOT_FORMAT_VERSION};
use super::manifest::{self, BackupType, Manifest, Sizes, SnapshotRef};
use super::{EngineError, Repo, datadir, wal};
use crate::config::NodeConfig;

/// A member between `pg_backup_start` and the snapshot.
pub struct SnapshotBackup {
    name: String,
    client: Client,
    started: Started,
    start_time: jiff::Timestamp,
    repo: Repo,
    compression: shardvault_storage::Compression,
    cfg: NodeConfig,
}

/// A member after `pg_backup_stop`: what goes to storage once the snapshot exists.
pub struct StoppedSnapshot {
    backup: SnapshotBackup,
    end_lsn: Lsn,
    label: String,
}

impl SnapshotBackup {
    /// Starts backup `name` on the primary of `cfg` (`fast`: an immediate checkpoint, else a
    /// spread one); its data will be a snapshot, its label and manifest go to `dest`.
    pub async fn begin(
        cfg: &NodeConfig,
        dest: &Destination,
        name: &str,
        fast: bool,
    ) -> Result<SnapshotBackup, EngineError> {
        let repo = super::backup::fresh_repo(dest, name).await?;
        let start_time = jiff::Timestamp::now();
        let client = connect(cfg).await?;
        let started = start(&client, name, fast).await?;
        if started.from_replica {
            return Err(EngineError::Config(format!(
                "{} is a standby: a snapshot backup is taken of the primary's data directory",
                cfg.pgdata.display()
            )));
        }
        tracing::info!(backup = name, start_lsn = %started.start_lsn, "snapshot backup started");
        Ok(SnapshotBackup {
            name: name.to_string(),
            client,
            started,
            start_time,
            repo,
            compression: dest.compression,
            cfg: cfg.clone(),
        })
    }

    /// Ends the backup (`pg_backup_stop`, which switches WAL); call it once the snapshot is
    /// taken. A member with tablespaces is refused: their files are outside the snapshot.
    pub async fn stop(self) -> Result<StoppedSnapshot, EngineError> {
        let (end_lsn, label, spcmap) = super::backup::stop(&self.client).await?;
        if spcmap.is_some_and(|m| !m.trim().is_empty()) {
            return Err(EngineError::Config(format!(
                "{} has tablespaces, whose files a snapshot of the data directory does not hold: take a regular backup (useVolumeSnapshot: false)",
                self.cfg.pgdata.display()
            )));
        }
        Ok(StoppedSnapshot {
            label,
            end_lsn,
            backup: self,
        })
    }
}

impl StoppedSnapshot {
    /// Where the backup is consistent (WAL replay must reach it).
    pub fn end_lsn(&self) -> Lsn {
        self.end_lsn
    }

    /// Stores the label and, once the WAL up to the backup's end is archived, the manifest
    /// naming `snapshot` (the step that makes the backup exist).
    pub async fn store(
        self,
        snapshot: SnapshotRef,
        archive_timeout: Duration,
    ) -> Result<Manifest, EngineError> {
        let StoppedSnapshot {
            backup,
            end_lsn,
            label,
        } = self;
        let name = backup.name.as_str();
        let repo = &backup.repo;
        drop(backup.client);
        let (timeline, start_wal_file) = parse_label(&label)?;
        let compressed = repo
            .put(
                &layout::backup_file_key(name, "backup_label"),
                label.into_bytes(),
            )
            .await?;
        let started = backup.started;
        let end_wal_file = layout::walfile_name_before(timeline, end_lsn, started.wal_segment_size);
        wal::wait_archived(repo, &end_wal_file, archive_timeout).await?;
        let manifest = Manifest {
            format: SNAPSHOT_FORMAT_VERSION,
            name: name.to_string(),
            start_lsn: started.start_lsn,
            end_lsn,
            timeline,
            start_wal_file,
            end_wal_file,
            wal_segment_size: started.wal_segment_size,
            system_identifier: started.system_identifier,
            postgres_version: started.version,
            postgres_version_num: started.version_num,
            from_replica: false,
            control_data: started.control_data,
            compression: backup.compression,
            size: Sizes {
                compressed,
                uncompressed: 0,
                restore: 0,
            },
            start_time: backup.start_time,
            end_time: jiff::Timestamp::now(),
            hostname: hostname(),
            pgdata: backup.cfg.pgdata.clone(),
            parts: 0,
            part_bytes: Vec::new(),
            backup_type: BackupType::Snapshot,
            parent: None,
            chain: Vec::new(),
            snapshot: Some(snapshot),
            has_tablespace_map: false,
            tablespaces: Vec::new(),
            directories: Vec::new(),
            files: Vec::new(),
        };
        manifest::store_manifest(repo, &manifest).await?;
        tracing::info!(backup = name, end_lsn = %end_lsn, "snapshot backup complete");
        Ok(manifest)
    }
}

/// Makes a clone of snapshot backup `manifest` in `pgdata` ready to recover: what belonged
/// to the running server is removed (as a base backup skips it), then the stored label is
/// written beside the recovery settings.
pub(super) fn prepare_clone(pgdata: &Path, manifest: &Manifest) -> Result<(), EngineError> {
    if !pgdata.join("PG_VERSION").is_file() || !pgdata.join(datadir::CONTROL_FILE).is_file() {
        return Err(EngineError::Config(format!(
            "{} is not a clone of snapshot {}: no PG_VERSION or {}",
            pgdata.display(),
            manifest
                .snapshot
                .as_ref()
                .map_or(String::new(), |s| s.name.clone()),
            datadir::CONTROL_FILE
        )));
    }
    datadir::clear_server_state(pgdata)
}
