//! The identity of an archived WAL segment, read from its first page's long header: a
//! segment swapped for another valid one (another position, timeline or cluster) decodes
//! and passes its checksum, but its header says where it really belongs.

use super::EngineError;

/// Bytes of the long page header that starts every segment.
const LONG_HEADER_LEN: usize = 40;
/// `XLP_LONG_HEADER` in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of a PostgreSQL major version, for the versions we know.
fn page_magic(major: u32) -> Option<u16> {
    match major {
        13 => Some(0xD106),
        14 => Some(0xD10D),
        15 => Some(0xD110),
        16 => Some(0xD113),
        17 => Some(0xD116),
        _ => None,
    }
}

/// What a segment is expected to be.
#[derive(Debug, Clone, Copy)]
pub struct SegmentExpectation<'a> {
    /// `server_version_num` of the cluster (its major version picks the page magic).
    pub postgres_version_num: u32,
    /// The cluster's system identifier, when known.
    pub system_identifier: Option<&'a str>,
    /// Bytes per segment, when known (else the header's own value is used).
    pub wal_segment_size: Option<u64>,
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks that `data`, stored under `key` as segment `name`, is that segment: page magic,
/// long header, a timeline not after the name's, `xlp_pageaddr` at the name's position, and
/// the expected system identifier and segment size. Names that are not plain segments
/// (history, `.partial`, `.backup`) are not checked.
pub fn check_segment(
    key: &str,
    name: &str,
    data: &[u8],
    want: &SegmentExpectation<'_>,
) -> Result<(), EngineError> {
    let Some((tli, id, seg)) = parse_name(name) else {
        return Ok(());
    };
    let corrupt = |reason: String| EngineError::Corrupt {
        object: key.to_string(),
        reason: format!("it is not WAL segment {name}: {reason}"),
    };
    if data.len() < LONG_HEADER_LEN {
        return Err(corrupt(format!("only {} bytes", data.len())));
    }
    let magic = u16_at(data, 0);
    if let Some(m) = page_magic(want.postgres_version_num / 10000)
        && magic != m
    {
        return Err(corrupt(format!(
            "page magic {magic:04X} instead of {m:04X}"
        )));
    }
    if u16_at(data, 2) & XLP_LONG_HEADER == 0 {
        return Err(corrupt("its first page has no long header".into()));
    }
    let page_tli = u32_at(data, 4);
    if page_tli == 0 || page_tli > tli {
        return Err(corrupt(format!("its first page is of timeline {page_tli}")));
    }
    let seg_size = u64::from(u32_at(data, 32));
    if let Some(size) = want.wal_segment_size
        && size != seg_size
    {
        return Err(corrupt(format!(
            "segment size {seg_size} instead of {size}"
        )));
    }
    if seg_size == 0 || !seg_size.is_power_of_two() || seg_size > 0x1_0000_0000 {
        return Err(corrupt(format!("segment size {seg_size}")));
    }
    let segno = id * (0x1_0000_0000 / seg_size) + seg;
    let pageaddr = u64_at(data, 8);
    if pageaddr != segno * seg_size {
        return Err(corrupt(format!(
            "its first page is at {:X}/{:X}, not at {:X}/{:X}",
            pageaddr >> 32,
            pageaddr & 0xFFFF_FFFF,
            (segno * seg_size) >> 32,
            (segno * seg_size) & 0xFFFF_FFFF
        )));
    }
    let sysid = u64_at(data, 24);
    if let Some(want_id) = want.system_identifier
        && want_id != sysid.to_string()
    {
        return Err(corrupt(format!(
            "it belongs to the cluster with system identifier {sysid}, not {want_id}"
        )));
    }
    Ok(())
}

/// Timeline, xlog id and segment of a plain segment name.
fn parse_name(name: &str) -> Option<(u32, u64, u64)> {
    if !super::layout::is_segment_name(name) {
        return None;
    }
    Some((
        u32::from_str_radix(&name[..8], 16).ok()?,
        u64::from_str_radix(&name[8..16], 16).ok()?,
        u64::from_str_radix(&name[16..], 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    fn header(tli: u32, pageaddr: u64, sysid: u64) -> Vec<u8> {
        let mut d = vec![0u8; 8192];
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        d[4..8].copy_from_slice(&tli.to_le_bytes());
        d[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        d[24..32].copy_from_slice(&sysid.to_le_bytes());
        d[32..36].copy_from_slice(&(MB16 as u32).to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    fn want(sysid: &str) -> SegmentExpectation<'_> {
        SegmentExpectation {
            postgres_version_num: 150008,
            system_identifier: Some(sysid),
            wal_segment_size: Some(MB16),
        }
    }

    #[test]
    fn a_segment_is_known_by_its_first_page() {
        let name = "000000020000000100000003";
        let at = (0x100 + 3) * MB16;
        let check = |d: &[u8]| check_segment("wal/x", name, d, &want("42"));
        check(&header(2, at, 42)).unwrap();
        // The first segment of a new timeline starts with the old timeline's pages.
        check(&header(1, at, 42)).unwrap();
        for (bad, says) in [
            (header(2, at - MB16, 42), "not at 1/3000000"),
            (header(3, at, 42), "timeline 3"),
            (header(2, at, 43), "system identifier 43"),
            (header(2, at, 42)[..20].to_vec(), "only 20 bytes"),
        ] {
            let e = check(&bad).unwrap_err().to_string();
            assert!(e.contains("wal/x") && e.contains(says), "{e}");
        }
        let mut magic = header(2, at, 42);
        magic[0] = 0;
        assert!(check(&magic).unwrap_err().to_string().contains("magic"));
        check_segment("wal/h", "00000002.history", b"1\t0/3000000\n", &want("42")).unwrap();
    }
}
