//! Verification of a stored backup: every part, every file checksum, and the WAL from the
//! backup's start to its end.

use futures::{StreamExt, TryStreamExt};
use shardvault_storage::{Destination, StorageError};

use super::chain::{PartToRead, load_chain, parts_to_read};
use super::manifest::{Chunk, Manifest, load_manifest};
use super::segment_identity::{SegmentExpectation, check_segment};
use super::{EngineError, Repo, layout, part};

/// What a successful verification checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Parts read and checked (this backup's and those of its chain it refers to).
    pub parts: u32,
    /// Files whose checksums matched.
    pub files: usize,
    /// Bytes of file data checked.
    pub bytes: u64,
    /// WAL segments read and checked.
    pub wal_segments: usize,
    /// Older backups of its chain whose manifests and referred parts were checked.
    pub chain: usize,
}

/// Reads the stored `backup_label` of backup `name` (its checksum checked).
pub async fn read_backup_label(repo: &Repo, name: &str) -> Result<Vec<u8>, EngineError> {
    repo.get(&layout::backup_file_key(name, "backup_label"))
        .await
}

/// Checks backup `name` in `source`: each part decodes (its checksum), each file chunk
/// matches its checksum and header, `backup_label` decodes, and every WAL segment from the
/// start to the end WAL file is archived, decodes and is that segment of this cluster. Paths
/// that would escape the data directory are refused as on restore. An incremental's chain is
/// checked too: every backup of it is there with the manifest it had, and every part of it
/// that this backup refers to is read and checked. The first bad object is named.
pub async fn verify(source: &Destination, name: &str) -> Result<VerifyReport, EngineError> {
    let repo = Repo::open(source)?;
    let manifest = load_manifest(&repo, name).await?;
    super::restore::check_manifest(&manifest)?;
    let label_key = layout::backup_file_key(name, "backup_label");
    check_label(&label_key, &repo.get(&label_key).await?, &manifest)?;
    if manifest.has_tablespace_map {
        repo.get(&layout::backup_file_key(name, "tablespace_map"))
            .await?;
    }
    let chain = load_chain(&repo, &manifest).await?;
    for m in &chain {
        super::restore::check_manifest(m)?;
    }
    let mut parts = parts_to_read(&manifest, &chain)?;
    // A part whose files all vanished during the backup is referred to by none; it is still
    // this backup's object and must decode.
    let referred: std::collections::HashSet<String> = parts.iter().map(|p| p.key.clone()).collect();
    parts.extend(
        (0..manifest.parts)
            .map(|i| layout::part_key(name, i))
            .filter(|k| !referred.contains(k))
            .map(|key| PartToRead {
                key,
                chunks: Vec::new(),
            }),
    );
    let part_count = parts.len() as u32;
    let concurrency = source.performance.download_concurrency.max(1);
    let manifest = &manifest;
    futures::stream::iter(parts)
        .map(|PartToRead { key, chunks }| {
            let repo = &repo;
            async move {
                let payload = repo.get(&key).await?;
                let chunks: Vec<(&str, Chunk)> = chunks
                    .iter()
                    .map(|(i, c)| (manifest.files[*i].path.as_str(), *c))
                    .collect();
                check_part(&key, &payload, &chunks)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;

    let segments = layout::segment_range(
        &manifest.start_wal_file,
        &manifest.end_wal_file,
        manifest.wal_segment_size,
    )
    .ok_or_else(|| EngineError::BadManifest {
        key: layout::manifest_key(name),
        reason: format!(
            "WAL range {}..{} is not a range of segments",
            manifest.start_wal_file, manifest.end_wal_file
        ),
    })?;
    for seg in &segments {
        verify_segment(&repo, manifest, seg).await?;
    }
    Ok(VerifyReport {
        parts: part_count,
        files: manifest.files.len(),
        bytes: manifest.data_bytes(),
        wal_segments: segments.len(),
        chain: chain.len(),
    })
}

/// Reads WAL segment `segment`, needed by the backup of `manifest`, and checks that it is
/// there, decodes, and is that segment of the backup's cluster.
pub async fn verify_segment(
    repo: &Repo,
    manifest: &Manifest,
    segment: &str,
) -> Result<(), EngineError> {
    let key = layout::wal_key(segment);
    let data = match repo.get(&key).await {
        Ok(d) => d,
        Err(EngineError::Storage(StorageError::NotFound { .. })) => {
            return Err(EngineError::WalMissing {
                segment: segment.to_string(),
                backup: manifest.name.clone(),
                location: repo.store.describe(),
            });
        }
        Err(e) => return Err(e),
    };
    let want = SegmentExpectation {
        postgres_version_num: manifest.postgres_version_num,
        system_identifier: Some(&manifest.system_identifier),
        wal_segment_size: Some(manifest.wal_segment_size),
    };
    check_segment(&key, segment, &data, &want)
}

/// Checks that `backup_label` is the label of this backup: its timeline and first WAL file
/// are the manifest's (a label copied from another backup decodes fine).
fn check_label(key: &str, label: &[u8], manifest: &Manifest) -> Result<(), EngineError> {
    let found = super::backup::parse_label(&String::from_utf8_lossy(label)).ok();
    if found != Some((manifest.timeline, manifest.start_wal_file.clone())) {
        return Err(EngineError::Corrupt {
            object: key.to_string(),
            reason: format!(
                "it is not the label of backup {} (timeline {}, first WAL file {})",
                manifest.name, manifest.timeline, manifest.start_wal_file
            ),
        });
    }
    Ok(())
}

/// Checks each stored chunk of a decoded part (once, however many windows use it) against
/// its header and checksum.
fn check_part(key: &str, payload: &[u8], chunks: &[(&str, Chunk)]) -> Result<(), EngineError> {
    let mut seen = std::collections::HashSet::new();
    let corrupt = |reason: String| EngineError::Corrupt {
        object: key.to_string(),
        reason,
    };
    let headers =
        part::headers(payload).ok_or_else(|| corrupt("malformed chunk headers".into()))?;
    for (path, c) in chunks.iter().filter(|(_, c)| seen.insert(c.at)) {
        let header = headers
            .iter()
            .find(|h| h.at == c.at)
            .filter(|h| h.path == *path && h.offset == c.offset && h.len == c.len)
            .ok_or_else(|| corrupt(format!("no chunk of {path} at offset {}", c.offset)))?;
        let data = &payload[header.at as usize..(header.at + header.len) as usize];
        let crc = crc32c::crc32c(data);
        if crc != c.crc32c {
            return Err(corrupt(format!(
                "file {path} bytes {}..{}: checksum {crc:08x} instead of {:08x}",
                c.offset,
                c.offset + c.len,
                c.crc32c
            )));
        }
    }
    Ok(())
}
