//! Base backup of a running server (primary or streaming replica) into a destination.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use shardvault_storage::{Destination, Throttle};
use tokio_postgres::{Client, NoTls};

use super::datadir::{self, CONTROL_FILE, FileToRead};
use super::layout::{self, FORMAT_VERSION, Lsn, PART_SIZE};
use super::manifest::{self, Chunk, FileEntry, Manifest, Sizes};
use super::part::PartBuilder;
use super::{EngineError, Progress, Repo, blocking, wal};
use crate::config::NodeConfig;

/// How to take a backup.
#[derive(Clone)]
pub struct BackupOptions {
    /// Backup name (its directory under `basebackups/`).
    pub name: String,
    /// How long to wait for the WAL the backup needs to reach the archive.
    pub archive_timeout: Duration,
    /// Uncompressed bytes of file data per part (bounds memory: about two parts per worker).
    pub part_size: u64,
    /// Called as file data is read: bytes done, bytes in total.
    pub progress: Option<Progress>,
}

impl BackupOptions {
    /// Options with a name, a 5-minute archive wait, [`PART_SIZE`] parts and no progress
    /// callback.
    pub fn named(name: impl Into<String>) -> BackupOptions {
        BackupOptions {
            name: name.into(),
            archive_timeout: Duration::from_secs(300),
            part_size: PART_SIZE,
            progress: None,
        }
    }
}

/// A default backup name for now: `backup-YYYYMMDDTHHMMSSZ`.
pub fn default_name() -> String {
    format!(
        "backup-{}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    )
}

/// Connects to the instance of `cfg` (database `postgres`).
pub async fn connect(cfg: &NodeConfig) -> Result<Client, EngineError> {
    let (client, conn) = tokio_postgres::connect(&cfg.conninfo("postgres"), NoTls)
        .await
        .map_err(EngineError::pg("connect"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("backup connection closed: {e}");
        }
    });
    Ok(client)
}

/// What a part was planned to hold: chunks of files.
struct PlannedChunk {
    file: Arc<FileToRead>,
    offset: u64,
    len: u64,
}

/// The chunks read into a part, with the file each belongs to.
type ReadChunks = Vec<(Arc<FileToRead>, Chunk)>;

/// A stored part: what it holds and its sizes.
struct StoredPart {
    chunks: ReadChunks,
    stored: u64,
}

/// Packs files into parts of at most `part_size` bytes, splitting large files.
fn plan(files: &[Arc<FileToRead>], part_size: u64) -> Vec<Vec<PlannedChunk>> {
    let part_size = part_size.max(1);
    let mut parts: Vec<Vec<PlannedChunk>> = vec![Vec::new()];
    let mut room = part_size;
    for file in files {
        let mut offset = 0;
        while offset < file.size {
            if room == 0 {
                parts.push(Vec::new());
                room = part_size;
            }
            let len = (file.size - offset).min(room);
            parts.last_mut().expect("one part").push(PlannedChunk {
                file: file.clone(),
                offset,
                len,
            });
            offset += len;
            room -= len;
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Reads the planned chunks of one part into a payload; vanished files are left out, shrunk
/// ones stored as long as they are.
fn read_part(
    chunks: &[PlannedChunk],
    disk: Option<&Throttle>,
) -> Result<(Vec<u8>, ReadChunks), EngineError> {
    let capacity: u64 = chunks.iter().map(|c| c.len + 64).sum();
    let mut builder = PartBuilder::with_capacity(capacity as usize);
    let mut stored = Vec::new();
    for c in chunks {
        let file = match std::fs::File::open(&c.file.abs) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io(&c.file.abs)(e)),
        };
        if let Some(t) = disk {
            tokio::runtime::Handle::current().block_on(t.acquire(c.len));
        }
        let (at, buf) = builder.chunk(&c.file.rel, c.offset, c.len as usize);
        let mut got = 0usize;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], c.offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EngineError::io(&c.file.abs)(e)),
            }
        }
        let crc = crc32c::crc32c(&buf[..got]);
        builder.truncate_last(at, got);
        stored.push((
            c.file.clone(),
            Chunk {
                part: 0,
                at,
                offset: c.offset,
                len: got as u64,
                crc32c: crc,
            },
        ));
    }
    Ok((builder.finish(), stored))
}

/// How parts are read and encoded: the disk bandwidth limit and the permits of the
/// `uploadDiskConcurrency` readers/compressors.
#[derive(Clone)]
struct Readers {
    disk: Option<Arc<Throttle>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Reads and encodes part `index` (holding a reader permit), then stores it (the store
/// bounds uploads in flight to `uploadConcurrency`).
async fn store_part(
    repo: &Repo,
    name: &str,
    index: u32,
    chunks: Vec<PlannedChunk>,
    readers: Readers,
) -> Result<StoredPart, EngineError> {
    let codec = repo.codec.clone();
    let permit = readers.permits.acquire_owned().await.expect("never closed");
    let disk = readers.disk;
    let (object, mut stored) = blocking(move || {
        let (payload, stored) = read_part(&chunks, disk.as_deref())?;
        Ok::<_, EngineError>((codec.encode(&payload), stored))
    })
    .await?;
    drop(permit);
    for (_, c) in &mut stored {
        c.part = index;
    }
    let len = object.len() as u64;
    repo.store
        .put(&layout::part_key(name, index), object)
        .await?;
    Ok(StoredPart {
        chunks: stored,
        stored: len,
    })
}

/// What the server said at backup start.
struct Started {
    start_lsn: Lsn,
    from_replica: bool,
    version: String,
    version_num: u32,
    wal_segment_size: u64,
    system_identifier: String,
    control_data: serde_json::Map<String, serde_json::Value>,
}

async fn start(client: &Client, label: &str) -> Result<Started, EngineError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), \
             current_setting('server_version_num')::int, \
             (SELECT bytes_per_wal_segment::bigint FROM pg_control_init())",
            &[],
        )
        .await
        .map_err(EngineError::pg("read server settings"))?;
    let from_replica: bool = row.get(0);
    let version: String = row.get(1);
    let version_num: i32 = row.get(2);
    let wal_segment_size: i64 = row.get(3);
    let lsn: String = client
        .query_one("SELECT pg_backup_start($1, fast => true)::text", &[&label])
        .await
        .map_err(EngineError::pg("pg_backup_start"))?
        .get(0);
    let start_lsn: Lsn = lsn.parse().map_err(EngineError::Protocol)?;
    let control: String = client
        .query_one(
            "SELECT (to_jsonb(s) || to_jsonb(c))::text \
             FROM pg_control_system() s, pg_control_checkpoint() c",
            &[],
        )
        .await
        .map_err(EngineError::pg("read pg_control data"))?
        .get(0);
    let control_data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&control).map_err(|e| EngineError::Protocol(e.to_string()))?;
    let system_identifier = control_data
        .get("system_identifier")
        .map(|v| v.to_string())
        .ok_or_else(|| {
            EngineError::Protocol("pg_control_system() has no system_identifier".into())
        })?;
    Ok(Started {
        start_lsn,
        from_replica,
        version,
        version_num: version_num as u32,
        wal_segment_size: wal_segment_size as u64,
        system_identifier,
        control_data,
    })
}

/// Asks the primary a standby streams from (its `primary_conninfo`) to switch WAL.
async fn switch_on_primary(standby: &Client) -> Result<(), EngineError> {
    let conninfo: String = standby
        .query_one("SELECT current_setting('primary_conninfo')", &[])
        .await
        .map_err(EngineError::pg("read primary_conninfo"))?
        .get(0);
    // Keep the connection keywords tokio-postgres knows; libpq writes many more.
    let kept: Vec<&str> = conninfo
        .split_whitespace()
        .filter(|kv| {
            ["host=", "port=", "user=", "dbname="]
                .iter()
                .any(|k| kv.starts_with(k))
        })
        .collect();
    let mut conninfo = kept.join(" ");
    if !conninfo.contains("dbname=") {
        conninfo.push_str(" dbname=postgres");
    }
    let (primary, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .map_err(EngineError::pg("connect to the primary to switch WAL"))?;
    tokio::spawn(conn);
    primary
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .map_err(EngineError::pg("pg_switch_wal on the primary"))
}

/// The value of `KEY: value` in a backup label.
fn label_field<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}

/// Timeline and first WAL file from a backup label.
pub(super) fn parse_label(label: &str) -> Result<(u32, String), EngineError> {
    let bad = || {
        EngineError::Protocol(format!(
            "backup label without timeline or WAL file:\n{label}"
        ))
    };
    let timeline = label_field(label, "START TIMELINE")
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    let file = label_field(label, "START WAL LOCATION")
        .and_then(|l| l.split_once("(file ")?.1.strip_suffix(')'))
        .ok_or_else(bad)?;
    Ok((timeline, file.to_string()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Takes a base backup of the instance of `cfg` into `dest`; complete (manifest written)
/// only once the WAL it needs is archived.
pub async fn backup(
    cfg: &NodeConfig,
    dest: &Destination,
    opts: &BackupOptions,
) -> Result<Manifest, EngineError> {
    let name = opts.name.as_str();
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(EngineError::Config(format!(
            "backup name {name:?} is not usable as a directory name: use letters, digits, '-' and '_'"
        )));
    }
    let repo = Repo::open(dest)?;
    if repo.store.exists(&layout::manifest_key(name)).await? {
        return Err(EngineError::BackupExists {
            name: name.to_string(),
            location: repo.store.describe(),
        });
    }
    // Parts left by an interrupted attempt with the same name are not a backup.
    repo.store.delete_all(&layout::backup_dir(name)).await?;

    let start_time = jiff::Timestamp::now();
    let client = connect(cfg).await?;
    let started = start(&client, name).await?;
    tracing::info!(
        backup = name,
        start_lsn = %started.start_lsn,
        replica = started.from_replica,
        "backup started"
    );

    let pgdata = cfg.pgdata.clone();
    let listing = blocking(move || datadir::list(&pgdata)).await?;
    let (control, files): (Vec<_>, Vec<_>) = listing
        .files
        .into_iter()
        .map(Arc::new)
        .partition(|f| f.rel == CONTROL_FILE);
    let control = control.into_iter().next().ok_or_else(|| {
        EngineError::Config(format!(
            "{} has no {CONTROL_FILE}: the node config's pgdata is not a PostgreSQL data directory",
            cfg.pgdata.display()
        ))
    })?;
    let total: u64 = files.iter().chain([&control]).map(|f| f.size).sum();
    let planned = plan(&files, opts.part_size);
    let workers = dest.performance.upload_disk_concurrency.max(1);
    let readers = Readers {
        disk: dest
            .performance
            .max_disk_bandwidth
            .map(|r| Arc::new(Throttle::new(r))),
        permits: Arc::new(tokio::sync::Semaphore::new(workers)),
    };
    // Parts in flight: those being read and encoded, plus those being uploaded.
    let in_flight = workers + dest.performance.upload_concurrency.max(1);
    let done = Arc::new(AtomicU64::new(0));
    let report = |bytes: u64| {
        let now = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(p) = &opts.progress {
            p(now, total);
        }
    };
    report(0);
    let control_index = planned.len() as u32;
    let mut stored: Vec<StoredPart> = futures::stream::iter(planned.into_iter().enumerate())
        .map(|(i, chunks)| {
            let bytes: u64 = chunks.iter().map(|c| c.len).sum();
            let part = store_part(&repo, name, i as u32, chunks, readers.clone());
            let report = &report;
            async move {
                let part = part.await?;
                report(bytes);
                Ok::<_, EngineError>(part)
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await?;
    // The control file last: a standby's backup is consistent at its minRecoveryPoint.
    let control_chunk = vec![PlannedChunk {
        len: control.size,
        file: control,
        offset: 0,
    }];
    stored.push(store_part(&repo, name, control_index, control_chunk, readers).await?);
    report(
        stored
            .last()
            .map_or(0, |p| p.chunks.iter().map(|c| c.1.len).sum()),
    );

    let row = client
        .query_one(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)",
            &[],
        )
        .await
        .map_err(EngineError::pg("pg_backup_stop"))?;
    let end_lsn: Lsn = row
        .get::<_, String>(0)
        .parse()
        .map_err(EngineError::Protocol)?;
    let label: String = row.get(1);
    let spcmap: Option<String> = row.get(2);
    if started.from_replica {
        // A standby cannot switch WAL; its primary must close the segment holding the
        // backup's end, or archiving waits for the next natural switch.
        switch_on_primary(&client).await?;
    }
    drop(client);
    let (timeline, start_wal_file) = parse_label(&label)?;
    let mut compressed: u64 = stored.iter().map(|p| p.stored).sum();
    compressed += repo
        .put(
            &layout::backup_file_key(name, "backup_label"),
            label.into_bytes(),
        )
        .await?;
    let spcmap = spcmap.filter(|s| !s.trim().is_empty());
    if let Some(map) = &spcmap {
        compressed += repo
            .put(
                &layout::backup_file_key(name, "tablespace_map"),
                map.clone().into_bytes(),
            )
            .await?;
    }
    let end_wal_file = layout::walfile_name_before(timeline, end_lsn, started.wal_segment_size);
    tracing::info!(backup = name, end_lsn = %end_lsn, wal = %end_wal_file, "data copied; waiting for WAL to be archived");
    wal::wait_archived(&repo, &end_wal_file, opts.archive_timeout)
        .await
        .map_err(|e| match e {
            EngineError::NotArchived { segment, secs, .. } => EngineError::NotArchived {
                segment,
                secs,
                standby: started.from_replica,
            },
            other => other,
        })?;

    let empty = files.iter().filter(|f| f.size == 0).cloned().collect();
    let files = assemble(empty, stored);
    let uncompressed = files.iter().map(|f| f.size).sum();
    let manifest = Manifest {
        format: FORMAT_VERSION,
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
        from_replica: started.from_replica,
        control_data: started.control_data,
        compression: dest.compression,
        size: Sizes {
            compressed,
            uncompressed,
        },
        start_time,
        end_time: jiff::Timestamp::now(),
        hostname: hostname(),
        pgdata: cfg.pgdata.clone(),
        parts: control_index + 1,
        has_tablespace_map: spcmap.is_some(),
        tablespaces: listing.tablespaces,
        directories: listing.dirs,
        files,
    };
    manifest::store_manifest(&repo, &manifest).await?;
    tracing::info!(
        backup = name,
        files = manifest.files.len(),
        bytes = uncompressed,
        stored = compressed,
        "backup complete"
    );
    Ok(manifest)
}

/// Turns stored chunks (and files listed empty) into file entries: chunks in file order, up
/// to the first gap (bytes after a file shrank mid-read are not the file's); files that
/// vanished before they were read are left out.
fn assemble(empty: Vec<Arc<FileToRead>>, parts: Vec<StoredPart>) -> Vec<FileEntry> {
    let mut by_file: BTreeMap<String, (Arc<FileToRead>, Vec<Chunk>)> = empty
        .into_iter()
        .map(|f| (f.rel.clone(), (f, Vec::new())))
        .collect();
    for part in parts {
        for (file, chunk) in part.chunks {
            by_file
                .entry(file.rel.clone())
                .or_insert_with(|| (file.clone(), Vec::new()))
                .1
                .push(chunk);
        }
    }
    by_file
        .into_values()
        .map(|(file, mut chunks)| {
            chunks.sort_by_key(|c| c.offset);
            let mut size = 0;
            let mut crc = 0u32;
            let mut kept = Vec::new();
            for c in chunks {
                if c.offset != size || c.len == 0 {
                    break;
                }
                crc = if size == 0 {
                    c.crc32c
                } else {
                    crc32c::crc32c_combine(crc, c.crc32c, c.len as usize)
                };
                size += c.len;
                kept.push(c);
            }
            FileEntry {
                path: file.rel.clone(),
                size,
                mode: file.mode,
                crc32c: crc,
                chunks: kept,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, size: u64) -> Arc<FileToRead> {
        Arc::new(FileToRead {
            rel: rel.into(),
            abs: rel.into(),
            size,
            mode: 0o600,
        })
    }

    #[test]
    fn large_files_split_over_parts_and_checksums_combine() {
        let files = [file("a", 10), file("b", 25), file("c", 0), file("d", 3)];
        let parts = plan(&files, 16);
        let shape: Vec<Vec<(&str, u64, u64)>> = parts
            .iter()
            .map(|p| {
                p.iter()
                    .map(|c| (c.file.rel.as_str(), c.offset, c.len))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            [
                vec![("a", 0, 10), ("b", 0, 6)],
                vec![("b", 6, 16)],
                vec![("b", 22, 3), ("d", 0, 3)],
            ]
        );

        let data: Vec<u8> = (0..25u8).collect();
        let chunk = |part, offset: u64, len: u64| Chunk {
            part,
            at: 0,
            offset,
            len,
            crc32c: crc32c::crc32c(&data[offset as usize..(offset + len) as usize]),
        };
        let b = files[1].clone();
        let stored = vec![
            StoredPart {
                chunks: vec![(b.clone(), chunk(1, 6, 16))],
                stored: 0,
            },
            StoredPart {
                chunks: vec![(b.clone(), chunk(0, 0, 6)), (b.clone(), chunk(2, 22, 3))],
                stored: 0,
            },
        ];
        let entries = assemble(vec![files[2].clone()], stored);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].path.as_str(), entries[0].size), ("b", 25));
        assert_eq!(entries[0].crc32c, crc32c::crc32c(&data));
        assert_eq!(
            entries[0].chunks.iter().map(|c| c.part).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            (entries[1].path.as_str(), entries[1].size, entries[1].crc32c),
            ("c", 0, 0)
        );
    }

    #[test]
    fn a_file_that_shrank_keeps_its_bytes_up_to_the_gap() {
        let f = file("x", 30);
        let short = Chunk {
            part: 0,
            at: 0,
            offset: 0,
            len: 4,
            crc32c: crc32c::crc32c(b"abcd"),
        };
        let later = Chunk {
            part: 1,
            at: 0,
            offset: 16,
            len: 14,
            crc32c: 1,
        };
        let stored = vec![StoredPart {
            chunks: vec![(f.clone(), short), (f.clone(), later)],
            stored: 0,
        }];
        let entries = assemble(Vec::new(), stored);
        assert_eq!((entries[0].size, entries[0].chunks.len()), (4, 1));
    }
}
