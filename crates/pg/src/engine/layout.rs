//! Where things live in storage (format version 1, see README.md) and WAL naming: every
//! storage key and prefix shardvault uses is built by a function of this module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Version of the storage layout and manifest of a full backup.
pub const FORMAT_VERSION: u32 = 1;
/// Version of an incremental's manifest (chunks may refer to the chain's parts): readers of
/// format 1 alone must refuse it rather than restore only its changed blocks.
pub const INCREMENTAL_FORMAT_VERSION: u32 = 2;
/// Version of a volume snapshot backup's manifest (its data is in a snapshot, not in parts):
/// older readers must refuse it rather than restore an empty data directory.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
/// Uncompressed bytes of file data per base backup part (the last part of a backup is smaller).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Directory of base backups.
pub const BACKUPS_DIR: &str = "basebackups";
/// Directory of WAL segments and history files.
pub const WAL_DIR: &str = "wal";
/// Directory of sharded backup records under a cluster prefix.
pub const SHARDED_RECORDS_DIR: &str = "sharded";
/// Directory of restore point records under a cluster or coordinator prefix.
pub const RESTORE_POINTS_DIR: &str = "restorepoints";

/// The prefix of a cluster's objects when its backups[] entry gives no `path`.
pub fn default_cluster_prefix(namespace: &str, cluster: &str) -> String {
    format!("shardvault/{namespace}/{cluster}")
}

/// The prefix of the cluster-level records when a backups[] entry gives one `paths[]` per
/// member: beside the coordinator's, under the first.
pub fn records_prefix_of_paths(first: &str) -> String {
    format!("{}/cluster", first.trim_matches('/'))
}

/// The prefix of member `member` under a cluster prefix `cluster_prefix`.
pub fn member_prefix(cluster_prefix: &str, member: &str) -> String {
    format!("{}/{member}", cluster_prefix.trim_matches('/'))
}

/// `prefix/dir`, or `dir` under an empty prefix.
pub fn join(prefix: &str, dir: &str) -> String {
    match prefix.trim_matches('/') {
        "" => dir.to_string(),
        p => format!("{p}/{dir}"),
    }
}

/// The directory of backup `name`.
pub fn backup_dir(name: &str) -> String {
    format!("{BACKUPS_DIR}/{name}")
}

/// Key of part `index` of backup `name`.
pub fn part_key(name: &str, index: u32) -> String {
    format!("{BACKUPS_DIR}/{name}/parts/{index:06}")
}

/// Key of the manifest of backup `name` (written last: no manifest, no backup).
pub fn manifest_key(name: &str) -> String {
    format!("{BACKUPS_DIR}/{name}/manifest.json")
}

/// Key of a file PostgreSQL returned at backup stop (`backup_label`, `tablespace_map`).
pub fn backup_file_key(name: &str, file: &str) -> String {
    format!("{BACKUPS_DIR}/{name}/{file}")
}

/// Key of an archived WAL file (segment, `.partial`, `.history` or `.backup`).
pub fn wal_key(file: &str) -> String {
    format!("{WAL_DIR}/{file}")
}

/// The WAL file name of a key under [`WAL_DIR`] (`wal/<file>`).
pub fn wal_file_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(WAL_DIR)?
        .strip_prefix('/')
        .filter(|f| !f.is_empty() && !f.contains('/'))
}

/// Key of the record of sharded backup `name`, under a cluster prefix.
pub fn sharded_record_key(name: &str) -> String {
    format!("{SHARDED_RECORDS_DIR}/{name}.json")
}

/// The cluster prefix and backup name of a sharded record key found anywhere in a storage
/// (`a/b/sharded/x.json` is `("a/b", "x")`, `sharded/x.json` is `("", "x")`).
pub fn parse_sharded_record_key(key: &str) -> Option<(&str, &str)> {
    let (prefix, file) = match key.rsplit_once(&format!("/{SHARDED_RECORDS_DIR}/")) {
        Some(split) => split,
        None => ("", key.strip_prefix(&format!("{SHARDED_RECORDS_DIR}/"))?),
    };
    let name = file.strip_suffix(".json").filter(|n| !n.contains('/'))?;
    Some((prefix, name))
}

/// Key of the record of restore point `name`, under a cluster or coordinator prefix.
pub fn restore_point_key(name: &str) -> String {
    format!("{RESTORE_POINTS_DIR}/{name}.json")
}

/// A WAL location, shown as PostgreSQL does (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not an LSN like 0/16B3748");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Segments per 4 GiB "xlog id" for a segment size.
fn segments_per_id(wal_segment_size: u64) -> u64 {
    0x1_0000_0000 / wal_segment_size
}

/// The name of the WAL segment holding `lsn` on `timeline`.
pub fn walfile_name(timeline: u32, lsn: Lsn, wal_segment_size: u64) -> String {
    segment_name(timeline, lsn.0 / wal_segment_size, wal_segment_size)
}

/// The name of the WAL segment holding the byte just before `lsn` (where a record ending at
/// `lsn` lives; PostgreSQL's choice for a backup's last segment).
pub fn walfile_name_before(timeline: u32, lsn: Lsn, wal_segment_size: u64) -> String {
    segment_name(
        timeline,
        lsn.0.saturating_sub(1) / wal_segment_size,
        wal_segment_size,
    )
}

/// The name of segment number `segno` of `timeline`.
pub(crate) fn segment_name(timeline: u32, segno: u64, wal_segment_size: u64) -> String {
    let per = segments_per_id(wal_segment_size);
    format!("{timeline:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// Tells whether `name` is a plain WAL segment name (24 hex digits).
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `(timeline, position)` of a WAL file name starting with a segment name, as hex text that
/// orders as the numbers do (`.history` files have none).
pub fn wal_position(file: &str) -> Option<(&str, &str)> {
    let seg = file.get(..24)?;
    is_segment_name(seg).then(|| (&seg[..8], &seg[8..]))
}

/// Timeline and segment number of a plain WAL segment name.
pub(crate) fn parse_segment(name: &str, wal_segment_size: u64) -> Option<(u32, u64)> {
    if !is_segment_name(name) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let id = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tli, id * segments_per_id(wal_segment_size) + seg))
}

/// The `count` segment names following `name` on its timeline (empty if `name` is not a
/// plain segment name).
pub fn next_segments(name: &str, count: usize, wal_segment_size: u64) -> Vec<String> {
    let Some((tli, segno)) = parse_segment(name, wal_segment_size) else {
        return Vec::new();
    };
    (1..=count as u64)
        .map(|i| segment_name(tli, segno + i, wal_segment_size))
        .collect()
}

/// Every segment name from `first` to `last` inclusive, both on the same timeline.
pub fn segment_range(first: &str, last: &str, wal_segment_size: u64) -> Option<Vec<String>> {
    let (t1, a) = parse_segment(first, wal_segment_size)?;
    let (t2, b) = parse_segment(last, wal_segment_size)?;
    if t1 != t2 || b < a {
        return None;
    }
    Some(
        (a..=b)
            .map(|s| segment_name(t1, s, wal_segment_size))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    #[test]
    fn names_segments_as_postgres_does() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(walfile_name(1, lsn, MB16), "0000000100000016000000B3");
        let boundary: Lsn = "0/3000000".parse().unwrap();
        assert_eq!(walfile_name(1, boundary, MB16), "000000010000000000000003");
        assert_eq!(
            walfile_name_before(1, boundary, MB16),
            "000000010000000000000002"
        );
        assert_eq!(
            walfile_name(2, Lsn(0x1_0000_0000), 64 * 1024 * 1024),
            "000000020000000100000000"
        );
    }

    #[test]
    fn steps_over_the_xlog_id() {
        assert_eq!(
            next_segments("0000000100000000000000FE", 2, MB16),
            ["0000000100000000000000FF", "000000010000000100000000"]
        );
        assert!(next_segments("00000002.history", 2, MB16).is_empty());
        let r = segment_range("0000000100000000000000FF", "000000010000000100000001", MB16);
        assert_eq!(r.unwrap().len(), 3);
        assert!(
            segment_range("000000010000000000000003", "000000020000000000000004", MB16).is_none()
        );
    }

    #[test]
    fn wal_positions_order_by_timeline_and_segment() {
        assert_eq!(
            wal_position("000000020000000100000003.partial"),
            Some(("00000002", "0000000100000003"))
        );
        assert_eq!(wal_position("00000002.history"), None);
        let (t, p) = wal_position("000000010000000000000010").unwrap();
        let (t2, p2) = wal_position("0000000100000000000000FF").unwrap();
        assert!(t <= t2 && p < p2);
        let (_, p3) = wal_position("000000010000000100000000").unwrap();
        assert!(p2 < p3, "positions step over the xlog id");
    }

    #[test]
    fn record_keys_are_found_under_any_prefix() {
        assert_eq!(sharded_record_key("b"), "sharded/b.json");
        assert_eq!(parse_sharded_record_key("sharded/b.json"), Some(("", "b")));
        assert_eq!(
            parse_sharded_record_key("x/y/sharded/b.json"),
            Some(("x/y", "b"))
        );
        assert_eq!(parse_sharded_record_key("x/sharded/b/c.json"), None);
        assert_eq!(parse_sharded_record_key("x/basebackups/b.json"), None);
        assert_eq!(restore_point_key("rp"), "restorepoints/rp.json");
        assert_eq!(
            wal_file_of_key("wal/00000002.history"),
            Some("00000002.history")
        );
        assert_eq!(wal_file_of_key("walx/1"), None);
        assert_eq!(join("", "sharded"), "sharded");
        assert_eq!(join("/a/b/", "sharded"), "a/b/sharded");
        assert_eq!(member_prefix("/archive/", "c-coord"), "archive/c-coord");
        assert_eq!(records_prefix_of_paths("/a/"), "a/cluster");
    }

    #[test]
    fn rejects_bad_lsns() {
        assert!("12".parse::<Lsn>().is_err());
        assert!("G/1".parse::<Lsn>().is_err());
    }
}
