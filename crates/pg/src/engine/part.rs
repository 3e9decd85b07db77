//! The decoded payload of a base backup part: a sequence of file chunks, each a header
//! (path length u16, path, file offset u64, length u64, little-endian) followed by the bytes.

/// Builds a part payload chunk by chunk.
#[derive(Default)]
pub(crate) struct PartBuilder {
    buf: Vec<u8>,
}

impl PartBuilder {
    /// A builder with room for `capacity` bytes of data.
    pub(crate) fn with_capacity(capacity: usize) -> PartBuilder {
        PartBuilder {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends a chunk header for `path` at `offset` and reserves `len` bytes for its data;
    /// returns the offset of the data in the payload and the data slice to fill.
    pub(crate) fn chunk(&mut self, path: &str, offset: u64, len: usize) -> (u64, &mut [u8]) {
        self.buf
            .extend_from_slice(&(path.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(path.as_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&(len as u64).to_le_bytes());
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        (at as u64, &mut self.buf[at..])
    }

    /// Shrinks the last chunk (whose data starts at `at`) to `len` bytes (a file shrank).
    pub(crate) fn truncate_last(&mut self, at: u64, len: usize) {
        let at = at as usize;
        self.buf[at - 8..at].copy_from_slice(&(len as u64).to_le_bytes());
        self.buf.truncate(at + len);
    }

    /// The payload.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// One chunk header read back from a payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChunkHeader<'a> {
    pub path: &'a str,
    pub offset: u64,
    pub at: u64,
    pub len: u64,
}

/// Reads every chunk header of a payload; None if the payload is malformed.
pub(crate) fn headers(payload: &[u8]) -> Option<Vec<ChunkHeader<'_>>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = payload.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    while i < payload.len() {
        let plen = u16::from_le_bytes(take(&mut i, 2)?.try_into().ok()?) as usize;
        let path = std::str::from_utf8(take(&mut i, plen)?).ok()?;
        let offset = u64::from_le_bytes(take(&mut i, 8)?.try_into().ok()?);
        let len = u64::from_le_bytes(take(&mut i, 8)?.try_into().ok()?);
        let at = i as u64;
        take(&mut i, usize::try_from(len).ok()?)?;
        out.push(ChunkHeader {
            path,
            offset,
            at,
            len,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back() {
        let mut b = PartBuilder::with_capacity(16);
        let (at1, d) = b.chunk("base/1/123", 0, 4);
        d.copy_from_slice(b"abcd");
        let (at2, d) = b.chunk("global/x", 8192, 6);
        d[..2].copy_from_slice(b"xy");
        b.truncate_last(at2, 2);
        let payload = b.finish();
        let h = headers(&payload).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].path, h[0].at, h[0].len), ("base/1/123", at1, 4));
        assert_eq!((h[1].path, h[1].offset, h[1].len), ("global/x", 8192, 2));
        assert_eq!(&payload[at2 as usize..], b"xy");
        assert!(headers(&payload[..payload.len() - 1]).is_none());
    }
}
