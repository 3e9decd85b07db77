//! Base backup of a running server (primary or streaming replica) into a destination.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use shardvault_storage::{Destination, Throttle};
use tokio_postgres::{Client, NoTls};

use super::chain::{self, BLOCK_SIZE, Current, ParentChoice};
use super::datadir::{self, CONTROL_FILE, FileToRead};
use super::layout::{self, FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION, Lsn, PART_SIZE};
use super::manifest::{self, BackupType, Chunk, FileEntry, Manifest, Sizes};
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
    /// Full, or incremental over which parent.
    pub parent: ParentChoice,
}

impl BackupOptions {
    /// Options with a name, a 5-minute archive wait, [`PART_SIZE`] parts, no progress
    /// callback, full.
    pub fn named(name: impl Into<String>) -> BackupOptions {
        BackupOptions {
            name: name.into(),
            archive_timeout: Duration::from_secs(300),
            part_size: PART_SIZE,
            progress: None,
            parent: ParentChoice::Full,
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

/// What reading one planned chunk gave: the bytes read (fewer if the file shrank) and the
/// runs of them stored (all of them, or an incremental's changed blocks).
struct Piece {
    file: Arc<FileToRead>,
    offset: u64,
    got: u64,
    stored: Vec<Chunk>,
}

/// A stored part: its index, what it holds and its stored size.
struct StoredPart {
    index: u32,
    pieces: Vec<Piece>,
    stored: u64,
}

/// The parent of an incremental: its start LSN and its files (chunk sources in the new
/// backup's chain).
struct Base {
    start_lsn: Lsn,
    /// When the parent started, nanoseconds since the Unix epoch.
    start_ns: i64,
    files: HashMap<String, FileEntry>,
}

/// How long before the parent's start a file must have been modified last for its unchanged
/// modification time to prove it unchanged (file times advance in clock ticks, not instantly).
const MTIME_MARGIN_NS: i64 = 2_000_000_000;

impl Base {
    /// The parent's entry of `rel` if its blocks may come from the chain: main and init
    /// forks of relations (free space and visibility maps are small and stored whole).
    fn relation(&self, rel: &str) -> Option<&FileEntry> {
        is_relation_fork(rel).then(|| self.files.get(rel))?
    }

    /// Whether `file` is a relation fork not written since well before the parent started:
    /// the same size and modification time as the parent listed, that time at least
    /// [`MTIME_MARGIN_NS`] before the parent's start, and the clock past it (a clock set back
    /// proves nothing). Such a file is not read: all its blocks come from the chain.
    fn untouched(&self, file: &FileToRead, now_ns: i64) -> bool {
        let Some(entry) = self.relation(&file.rel) else {
            return false;
        };
        match (file.mtime_ns, entry.mtime_ns) {
            (Some(now), Some(then)) => {
                entry.size == file.size
                    && now == then
                    && now < self.start_ns - MTIME_MARGIN_NS
                    && now_ns > self.start_ns
            }
            _ => false,
        }
    }

    /// Whether the block at `offset` (its bytes `page`) is the one the parent stored.
    fn unchanged(&self, entry: &FileEntry, offset: u64, page: &[u8]) -> bool {
        if page.len() as u64 != BLOCK_SIZE || offset + BLOCK_SIZE > entry.size {
            return false;
        }
        let hi = u32::from_ne_bytes(page[0..4].try_into().expect("4 bytes"));
        let lo = u32::from_ne_bytes(page[4..8].try_into().expect("4 bytes"));
        let lsn = (u64::from(hi) << 32) | u64::from(lo);
        lsn != 0 && lsn < self.start_lsn.0
    }
}

/// Whether `rel` is a relation's main or init fork (`<relfilenode>[_init][.<segment>]`)
/// under `base/`, `global/` or a tablespace.
fn is_relation_fork(rel: &str) -> bool {
    let in_relation_dir = ["base/", "global/", "pg_tblspc/"]
        .iter()
        .any(|d| rel.starts_with(d));
    let name = rel.rsplit('/').next().unwrap_or_default();
    let (stem, segment) = name.split_once('.').unwrap_or((name, "0"));
    let node = stem.strip_suffix("_init").unwrap_or(stem);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    in_relation_dir && digits(node) && digits(segment)
}

/// Packs files into parts of at most `part_size` bytes, splitting large files on block
/// boundaries where the room allows.
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
            let remaining = file.size - offset;
            let mut len = remaining.min(room);
            if len < remaining {
                let aligned_end = (offset + len) / BLOCK_SIZE * BLOCK_SIZE;
                if aligned_end > offset {
                    len = aligned_end - offset;
                } else if room < part_size {
                    // Split a file only on a block boundary: start it in the next part.
                    room = 0;
                    continue;
                }
            }
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

/// Reads `buf.len()` bytes of `file` at `offset`, fewer if it ends first.
fn read_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0usize;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Appends `data` (file bytes at `offset`) to the part as a stored chunk.
fn push_chunk(builder: &mut PartBuilder, path: &str, offset: u64, data: &[u8]) -> Chunk {
    let (at, buf) = builder.chunk(path, offset, data.len());
    buf.copy_from_slice(data);
    stored_chunk(at, offset, data)
}

fn stored_chunk(at: u64, offset: u64, data: &[u8]) -> Chunk {
    Chunk {
        source: None,
        part: 0,
        at,
        offset,
        len: data.len() as u64,
        crc32c: crc32c::crc32c(data),
        skip: 0,
        take: None,
    }
}

/// Reads the planned chunks of one part into a payload; vanished files are left out, shrunk
/// ones stored as long as they are. With a `base`, only the changed blocks of relation files
/// the parent has are stored.
fn read_part(
    chunks: &[PlannedChunk],
    disk: Option<&Throttle>,
    base: Option<&Base>,
    read: &dyn Fn(u64),
) -> Result<(Vec<u8>, Vec<Piece>), EngineError> {
    let whole: u64 = chunks
        .iter()
        .filter(|c| base.and_then(|b| b.relation(&c.file.rel)).is_none())
        .map(|c| c.len + 64)
        .sum();
    let mut builder = PartBuilder::with_capacity(whole as usize);
    let mut scratch = Vec::new();
    let mut pieces = Vec::new();
    for c in chunks {
        let file = match std::fs::File::open(&c.file.abs) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io(&c.file.abs)(e)),
        };
        if let Some(t) = disk {
            tokio::runtime::Handle::current().block_on(t.acquire(c.len));
        }
        let parent = base
            .and_then(|b| Some((b, b.relation(&c.file.rel)?)))
            .filter(|_| c.offset % BLOCK_SIZE == 0);
        let mut stored = Vec::new();
        let got = match parent {
            None => {
                let (at, buf) = builder.chunk(&c.file.rel, c.offset, c.len as usize);
                let got = read_full(&file, buf, c.offset).map_err(EngineError::io(&c.file.abs))?;
                let chunk = stored_chunk(at, c.offset, &buf[..got]);
                builder.truncate_last(at, got);
                if got > 0 {
                    stored.push(chunk);
                }
                got
            }
            Some((base, entry)) => {
                scratch.resize(c.len as usize, 0);
                let got = read_full(&file, &mut scratch, c.offset)
                    .map_err(EngineError::io(&c.file.abs))?;
                let data = &scratch[..got];
                let mut run: Option<usize> = None;
                for (i, page) in data.chunks(BLOCK_SIZE as usize).enumerate() {
                    let at = i * BLOCK_SIZE as usize;
                    let same = base.unchanged(entry, c.offset + at as u64, page);
                    match (same, run) {
                        (false, None) => run = Some(at),
                        (true, Some(from)) => {
                            stored.push(push_chunk(
                                &mut builder,
                                &c.file.rel,
                                c.offset + from as u64,
                                &data[from..at],
                            ));
                            run = None;
                        }
                        _ => {}
                    }
                }
                if let Some(from) = run {
                    stored.push(push_chunk(
                        &mut builder,
                        &c.file.rel,
                        c.offset + from as u64,
                        &data[from..],
                    ));
                }
                got
            }
        };
        pieces.push(Piece {
            file: c.file.clone(),
            offset: c.offset,
            got: got as u64,
            stored,
        });
        read(c.len);
    }
    Ok((builder.finish(), pieces))
}

/// How parts are read and encoded: the disk bandwidth limit, the permits of the
/// `uploadDiskConcurrency` readers/compressors, and who is told of the bytes read.
#[derive(Clone)]
struct Readers {
    disk: Option<Arc<Throttle>>,
    permits: Arc<tokio::sync::Semaphore>,
    base: Option<Arc<Base>>,
    read: Arc<dyn Fn(u64) + Send + Sync>,
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
    let (disk, base, read) = (readers.disk, readers.base, readers.read);
    let (object, mut pieces) = blocking(move || {
        let (payload, pieces) = read_part(&chunks, disk.as_deref(), base.as_deref(), &*read)?;
        // An incremental's part whose blocks all come from the chain is not stored.
        let object = (!payload.is_empty()).then(|| codec.encode(&payload));
        Ok::<_, EngineError>((object, pieces))
    })
    .await?;
    drop(permit);
    for c in pieces.iter_mut().flat_map(|p| &mut p.stored) {
        c.part = index;
    }
    let mut stored = 0;
    if let Some(object) = object {
        stored = object.len() as u64;
        repo.store
            .put(&layout::part_key(name, index), object)
            .await?;
    }
    Ok(StoredPart {
        index,
        pieces,
        stored,
    })
}

/// What the server said at backup start.
pub(super) struct Started {
    pub(super) start_lsn: Lsn,
    pub(super) timeline: u32,
    block_size: u64,
    pub(super) from_replica: bool,
    pub(super) version: String,
    pub(super) version_num: u32,
    pub(super) wal_segment_size: u64,
    pub(super) system_identifier: String,
    pub(super) control_data: serde_json::Map<String, serde_json::Value>,
}

pub(super) async fn start(
    client: &Client,
    label: &str,
    fast: bool,
) -> Result<Started, EngineError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), \
             current_setting('server_version_num')::int, \
             (SELECT bytes_per_wal_segment::bigint FROM pg_control_init()), \
             current_setting('block_size')::int",
            &[],
        )
        .await
        .map_err(EngineError::pg("read server settings"))?;
    let from_replica: bool = row.get(0);
    let version: String = row.get(1);
    let version_num: i32 = row.get(2);
    let wal_segment_size: i64 = row.get(3);
    let block_size: i32 = row.get(4);
    let lsn: String = client
        .query_one(
            "SELECT pg_backup_start($1, fast => $2)::text",
            &[&label, &fast],
        )
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
    let timeline = control_data
        .get("timeline_id")
        .and_then(|t| t.as_u64())
        .ok_or_else(|| {
            EngineError::Protocol("pg_control_checkpoint() has no timeline_id".into())
        })?;
    Ok(Started {
        start_lsn,
        timeline: timeline as u32,
        block_size: block_size as u64,
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

pub(super) fn hostname() -> String {
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
    let repo = fresh_repo(dest, name).await?;

    let start_time = jiff::Timestamp::now();
    let client = connect(cfg).await?;
    let started = start(&client, name, true).await?;
    tracing::info!(
        backup = name,
        start_lsn = %started.start_lsn,
        replica = started.from_replica,
        "backup started"
    );
    let current = Current {
        system_identifier: started.system_identifier.clone(),
        version_num: started.version_num,
        block_size: started.block_size,
        timeline: started.timeline,
        start_lsn: started.start_lsn,
    };
    let parent = chain::choose_parent(&repo, &opts.parent, &current).await?;
    let (base, chain_links, chain_manifests) = match &parent {
        None => (None, Vec::new(), Vec::new()),
        Some((p, sha)) => {
            let mut manifests = chain::load_chain(&repo, p).await?;
            let links = chain::chain_over(p, sha);
            let own = p.chain.len() as u32;
            let files = p
                .files
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    for c in &mut f.chunks {
                        c.source = Some(c.source.unwrap_or(own));
                    }
                    (f.path.clone(), f)
                })
                .collect();
            manifests.push(p.clone());
            tracing::info!(backup = name, parent = %p.name, "incremental over the parent's start LSN {}", p.start_lsn);
            let base = Base {
                start_lsn: p.start_lsn,
                start_ns: i64::try_from(p.start_time.as_nanosecond()).unwrap_or(i64::MIN),
                files,
            };
            (Some(Arc::new(base)), links, manifests)
        }
    };

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
    let now_ns = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MIN);
    let (untouched, to_read): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|f| f.size > 0 && base.as_ref().is_some_and(|b| b.untouched(f, now_ns)));
    let planned = plan(&to_read, opts.part_size);
    let workers = dest.performance.upload_disk_concurrency.max(1);
    // Progress counts bytes as they are read (files the parent already has count at once).
    let done = Arc::new(AtomicU64::new(0));
    let report: Arc<dyn Fn(u64) + Send + Sync> = {
        let progress = opts.progress.clone();
        Arc::new(move |bytes: u64| {
            let now = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
            if let Some(p) = &progress {
                p(now, total);
            }
        })
    };
    report(untouched.iter().map(|f| f.size).sum());
    let readers = Readers {
        disk: dest
            .performance
            .max_disk_bandwidth
            .map(|r| Arc::new(Throttle::new(r))),
        permits: Arc::new(tokio::sync::Semaphore::new(workers)),
        base: base.clone(),
        read: report,
    };
    // Parts in flight: those being read and encoded, plus those being uploaded.
    let in_flight = workers + dest.performance.upload_concurrency.max(1);
    let control_index = planned.len() as u32;
    let mut stored: Vec<StoredPart> = futures::stream::iter(planned.into_iter().enumerate())
        .map(|(i, chunks)| store_part(&repo, name, i as u32, chunks, readers.clone()))
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

    let (end_lsn, label, spcmap) = stop(&client).await?;
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

    let mut part_bytes = vec![0; control_index as usize + 1];
    for p in &stored {
        part_bytes[p.index as usize] = p.stored;
    }
    let empty = files.iter().filter(|f| f.size == 0).cloned().collect();
    let untouched = untouched.into_iter().map(|file| Piece {
        offset: 0,
        got: file.size,
        stored: Vec::new(),
        file,
    });
    let pieces = stored.into_iter().flat_map(|p| p.pieces).chain(untouched);
    let files = assemble(empty, pieces, base.as_deref());
    let uncompressed = files.iter().map(|f| f.size).sum();
    let manifest = Manifest {
        format: if parent.is_some() {
            INCREMENTAL_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        },
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
            restore: 0,
        },
        start_time,
        end_time: jiff::Timestamp::now(),
        hostname: hostname(),
        pgdata: cfg.pgdata.clone(),
        parts: control_index + 1,
        part_bytes,
        backup_type: if parent.is_some() {
            BackupType::Incremental
        } else {
            BackupType::Full
        },
        parent: parent.as_ref().map(|(p, _)| p.name.clone()),
        chain: chain_links,
        snapshot: None,
        has_tablespace_map: spcmap.is_some(),
        tablespaces: listing.tablespaces,
        directories: listing.dirs,
        files,
    };
    let mut manifest = manifest;
    manifest.size.restore = chain::restore_bytes(&manifest, &chain_manifests);
    manifest::store_manifest(&repo, &manifest).await?;
    tracing::info!(
        backup = name,
        files = manifest.files.len(),
        bytes = uncompressed,
        stored = compressed,
        kind = %manifest.backup_type,
        "backup complete"
    );
    Ok(manifest)
}

/// Turns the pieces read (and files listed empty) into file entries: pieces in file order,
/// up to the first gap (bytes after a file shrank mid-read are not the file's), the blocks an
/// incremental did not store taken from `base`; files that vanished before they were read
/// are left out.
fn assemble(
    empty: Vec<Arc<FileToRead>>,
    pieces: impl IntoIterator<Item = Piece>,
    base: Option<&Base>,
) -> Vec<FileEntry> {
    let mut by_file: BTreeMap<String, (Arc<FileToRead>, Vec<Piece>)> = empty
        .into_iter()
        .map(|f| (f.rel.clone(), (f, Vec::new())))
        .collect();
    for piece in pieces {
        by_file
            .entry(piece.file.rel.clone())
            .or_insert_with(|| (piece.file.clone(), Vec::new()))
            .1
            .push(piece);
    }
    by_file
        .into_values()
        .map(|(file, mut pieces)| {
            pieces.sort_by_key(|p| p.offset);
            let parent = base.and_then(|b| b.files.get(&file.rel));
            let mut size = 0;
            let mut chunks = Vec::new();
            for p in pieces {
                if p.offset != size || p.got == 0 {
                    break;
                }
                let end = p.offset + p.got;
                let mut at = p.offset;
                for c in p.stored {
                    chunks.extend(from_parent(parent, at, c.offset));
                    at = c.offset + c.len;
                    chunks.push(c);
                }
                chunks.extend(from_parent(parent, at, end));
                size = end;
            }
            FileEntry {
                path: file.rel.clone(),
                size,
                mode: file.mode,
                crc32c: manifest::combined_crc(&chunks),
                mtime_ns: file.mtime_ns,
                chunks,
            }
        })
        .collect()
}

/// The parent's chunks narrowed to the file range `start..end` (empty when it is empty).
fn from_parent(parent: Option<&FileEntry>, start: u64, end: u64) -> Vec<Chunk> {
    let Some(parent) = parent.filter(|_| start < end) else {
        return Vec::new();
    };
    parent
        .chunks
        .iter()
        .filter_map(|c| {
            let (from, len) = c.window();
            let (a, b) = (from.max(start), (from + len).min(end));
            (a < b).then(|| c.narrowed(a, b))
        })
        .collect()
}

/// Ends a backup begun on `client` (`pg_backup_stop`): its end LSN, backup label and
/// tablespace map.
pub(crate) async fn stop(client: &Client) -> Result<(Lsn, String, Option<String>), EngineError> {
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
    Ok((end_lsn, row.get(1), row.get(2)))
}

/// The repository at `dest`, ready for a new backup `name`: the name is usable, no backup of
/// that name exists, and parts an interrupted attempt left under it are removed.
pub(crate) async fn fresh_repo(dest: &Destination, name: &str) -> Result<Repo, EngineError> {
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
    Ok(repo)
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
            mtime_ns: None,
        })
    }

    fn shape(parts: &[Vec<PlannedChunk>]) -> Vec<Vec<(&str, u64, u64)>> {
        parts
            .iter()
            .map(|p| {
                p.iter()
                    .map(|c| (c.file.rel.as_str(), c.offset, c.len))
                    .collect()
            })
            .collect()
    }

    fn chunk(data: &[u8], part: u32, offset: u64, len: u64) -> Chunk {
        stored_chunk(0, offset, &data[offset as usize..(offset + len) as usize]).with_part(part)
    }

    impl Chunk {
        fn with_part(self, part: u32) -> Chunk {
            Chunk { part, ..self }
        }
    }

    fn piece(f: &Arc<FileToRead>, offset: u64, got: u64, stored: Vec<Chunk>) -> Piece {
        Piece {
            file: f.clone(),
            offset,
            got,
            stored,
        }
    }

    #[test]
    fn large_files_split_over_parts_on_block_boundaries() {
        let files = [file("a", 10), file("b", 25), file("c", 0), file("d", 3)];
        assert_eq!(
            shape(&plan(&files, 16)),
            [
                vec![("a", 0, 10)],
                vec![("b", 0, 16)],
                vec![("b", 16, 9), ("d", 0, 3)],
            ]
        );
        let block = BLOCK_SIZE;
        let files = [file("a", 100), file("b", 5 * block)];
        assert_eq!(
            shape(&plan(&files, 3 * block)),
            [
                vec![("a", 0, 100), ("b", 0, 2 * block)],
                vec![("b", 2 * block, 3 * block)],
            ]
        );
    }

    #[test]
    fn checksums_combine_and_a_file_that_shrank_keeps_its_bytes_up_to_the_gap() {
        let data: Vec<u8> = (0..25u8).collect();
        let b = file("b", 25);
        let stored = vec![
            StoredPart {
                index: 1,
                pieces: vec![piece(&b, 6, 16, vec![chunk(&data, 1, 6, 16)])],
                stored: 0,
            },
            StoredPart {
                index: 0,
                pieces: vec![
                    piece(&b, 0, 6, vec![chunk(&data, 0, 0, 6)]),
                    piece(&b, 22, 3, vec![chunk(&data, 2, 22, 3)]),
                ],
                stored: 0,
            },
        ];
        let pieces = stored.into_iter().flat_map(|p| p.pieces);
        let entries = assemble(vec![file("c", 0)], pieces, None);
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

        let x = file("x", 30);
        let stored = vec![StoredPart {
            index: 0,
            pieces: vec![
                piece(&x, 0, 4, vec![chunk(b"abcd", 0, 0, 4)]),
                piece(&x, 16, 14, vec![chunk(&[0; 30], 1, 16, 14)]),
            ],
            stored: 0,
        }];
        let entries = assemble(Vec::new(), stored.into_iter().flat_map(|p| p.pieces), None);
        assert_eq!((entries[0].size, entries[0].chunks.len()), (4, 1));
    }

    #[test]
    fn relation_forks_are_told_from_other_files() {
        for rel in [
            "base/1/16384",
            "base/1/16384.2",
            "global/1262",
            "base/5/16390_init",
        ] {
            assert!(is_relation_fork(rel), "{rel}");
        }
        let tablespace = "pg_tblspc/16400/PG_15_202209061/5/16401";
        assert!(is_relation_fork(tablespace));
        for rel in [
            "base/1/16384_fsm",
            "base/1/16384_vm",
            "base/1/PG_VERSION",
            "global/pg_control",
            "global/pg_filenode.map",
            "pg_xact/0000",
            "base/1/16384.x",
        ] {
            assert!(!is_relation_fork(rel), "{rel}");
        }
    }

    /// A page whose LSN is `lsn`, filled with `fill`.
    fn page(lsn: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; BLOCK_SIZE as usize];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        p
    }

    #[test]
    fn an_incremental_stores_changed_new_and_zeroed_blocks_and_refers_to_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let rel = "base/5/16384";
        let abs = dir.path().join("16384");
        // Block 0 older than the parent's start, 1 newer, 2 zeroed, 3 older, 4 older but
        // past the parent's size.
        let blocks = [
            page(50, 1),
            page(150, 2),
            vec![0; 8192],
            page(60, 4),
            page(70, 5),
        ];
        std::fs::write(&abs, blocks.concat()).unwrap();
        let f = Arc::new(FileToRead {
            rel: rel.into(),
            abs,
            size: 5 * BLOCK_SIZE,
            mode: 0o600,
            mtime_ns: None,
        });
        let parent_chunk = Chunk {
            source: Some(0),
            part: 7,
            at: 100,
            offset: 0,
            len: 4 * BLOCK_SIZE,
            crc32c: 9,
            skip: 0,
            take: None,
        };
        let parent = FileEntry {
            path: rel.into(),
            size: 4 * BLOCK_SIZE,
            mode: 0o600,
            crc32c: 9,
            mtime_ns: Some(1_000),
            chunks: vec![parent_chunk],
        };
        let base = Base {
            start_lsn: Lsn(100),
            start_ns: 10_000_000_000,
            files: HashMap::from([(rel.to_string(), parent)]),
        };
        // Not untouched: its size differs from the parent's.
        assert!(!base.untouched(&f, 20_000_000_000));
        let planned = [PlannedChunk {
            file: f.clone(),
            offset: 0,
            len: 5 * BLOCK_SIZE,
        }];
        let (payload, pieces) = read_part(&planned, None, Some(&base), &|_| {}).unwrap();
        let stored: Vec<(u64, u64)> = pieces[0].stored.iter().map(|c| (c.offset, c.len)).collect();
        assert_eq!(
            stored,
            [(BLOCK_SIZE, 2 * BLOCK_SIZE), (4 * BLOCK_SIZE, BLOCK_SIZE)]
        );
        let at = pieces[0].stored[0].at as usize;
        assert_eq!(&payload[at..at + 2 * 8192], blocks[1..3].concat());
        let at = pieces[0].stored[1].at as usize;
        assert_eq!(&payload[at..], blocks[4]);

        let entry = assemble(Vec::new(), pieces, Some(&base)).remove(0);
        assert_eq!(entry.size, 5 * BLOCK_SIZE);
        let windows: Vec<(Option<u32>, u64, u64)> = entry
            .chunks
            .iter()
            .map(|c| {
                let (from, len) = c.window();
                (c.source, from, len)
            })
            .collect();
        assert_eq!(
            windows,
            [
                (Some(0), 0, BLOCK_SIZE),
                (None, BLOCK_SIZE, 2 * BLOCK_SIZE),
                (Some(0), 3 * BLOCK_SIZE, BLOCK_SIZE),
                (None, 4 * BLOCK_SIZE, BLOCK_SIZE),
            ]
        );
        assert_eq!(
            (entry.chunks[2].part, entry.chunks[2].skip),
            (7, 3 * BLOCK_SIZE)
        );
        assert_eq!(entry.crc32c, manifest::combined_crc(&entry.chunks));
    }

    #[test]
    fn a_file_is_untouched_only_with_the_parents_size_and_an_old_modification_time() {
        let rel = "base/5/16384";
        let entry = FileEntry {
            path: rel.into(),
            size: 8192,
            mode: 0o600,
            crc32c: 0,
            mtime_ns: Some(5_000_000_000),
            chunks: Vec::new(),
        };
        let base = Base {
            start_lsn: Lsn(100),
            start_ns: 10_000_000_000,
            files: HashMap::from([(rel.to_string(), entry)]),
        };
        let listed = |rel: &str, size, mtime_ns| FileToRead {
            rel: rel.into(),
            abs: rel.into(),
            size,
            mode: 0o600,
            mtime_ns,
        };
        let now = 20_000_000_000;
        assert!(base.untouched(&listed(rel, 8192, Some(5_000_000_000)), now));
        // Written since, or resized, or the time unknown, or the clock set back.
        assert!(!base.untouched(&listed(rel, 8192, Some(5_000_000_001)), now));
        assert!(!base.untouched(&listed(rel, 16384, Some(5_000_000_000)), now));
        assert!(!base.untouched(&listed(rel, 8192, None), now));
        assert!(!base.untouched(&listed(rel, 8192, Some(5_000_000_000)), 9_000_000_000));
        // Modified too close to the parent's start: its time proves nothing.
        let close = Base {
            start_ns: 6_000_000_000,
            ..base
        };
        assert!(!close.untouched(&listed(rel, 8192, Some(5_000_000_000)), now));
        // Only relation forks.
        let mut other = close;
        other.start_ns = 10_000_000_000;
        let map = "base/5/16384_fsm";
        let entry = other.files[rel].clone();
        other.files.insert(
            map.into(),
            FileEntry {
                path: map.into(),
                ..entry
            },
        );
        assert!(!other.untouched(&listed(map, 8192, Some(5_000_000_000)), now));
    }
}
