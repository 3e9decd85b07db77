//! Self-describing stored objects: a small header (format, compression, encryption, length,
//! checksum) followed by the compressed, optionally encrypted payload, so any object can be
//! decoded and checked alone.
//!
//! Header (20 bytes, little-endian): magic `SVO1`, compression id (0 none, 1 lz4, 2 zstd,
//! 3 lzma, 4 brotli), encryption id (0 none, 2 sodium secretstream; 1 is the older sodium
//! format, still read), 2 reserved bytes, the plaintext length (u64) and its CRC-32C (u32).
//! Encrypted objects keep length and checksum inside the sealed payload (12 bytes before the
//! compressed data) and zeros in the header, so the stored object tells nothing of the
//! plaintext; objects of the older format carry them in the clear header.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::encryption::{self, EncryptionKey};
use crate::openpgp::{self, OpenPgpKey};

const MAGIC: &[u8; 4] = b"SVO1";
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 8 + 4;
/// Header encryption id of libsodium secretstream with length and checksum in the header
/// (written by older versions; read only).
const ENCRYPTION_SODIUM_V1: u8 = 1;
/// Header encryption id of libsodium secretstream with length and checksum sealed inside.
const ENCRYPTION_SODIUM: u8 = 2;
/// Bytes of the sealed length (u64) and checksum (u32) before an encrypted payload.
const SEALED_CHECK_LEN: usize = 8 + 4;

/// Compression applied to stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// Fast, moderate ratio (the default).
    #[default]
    Lz4,
    /// Good ratio, fast.
    Zstd,
    /// High ratio, slow.
    Lzma,
    /// High ratio.
    Brotli,
}

impl Compression {
    fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
            Compression::Lzma => 3,
            Compression::Brotli => 4,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Lz4,
            2 => Compression::Zstd,
            3 => Compression::Lzma,
            4 => Compression::Brotli,
            _ => return None,
        })
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Lz4 => lz4_flex::block::compress(data),
            Compression::Zstd => zstd::bulk::compress(data, 3).expect("zstd compresses in memory"),
            Compression::Lzma => {
                let mut out = Vec::new();
                let mut enc = liblzma::write::XzEncoder::new(&mut out, 6);
                enc.write_all(data).expect("xz compresses in memory");
                enc.finish().expect("xz finishes in memory");
                out
            }
            Compression::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 5, 22);
                    w.write_all(data).expect("brotli compresses in memory");
                }
                out
            }
        }
    }

    fn decompress(self, data: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Lz4 => lz4_flex::block::decompress(data, len)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Compression::Zstd => zstd::bulk::decompress(data, len),
            Compression::Lzma => {
                let mut out = Vec::with_capacity(len);
                liblzma::read::XzDecoder::new(data).read_to_end(&mut out)?;
                Ok(out)
            }
            Compression::Brotli => {
                let mut out = Vec::with_capacity(len);
                brotli::Decompressor::new(data, 64 * 1024).read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// CRC-32C of a byte slice, the checksum used for files and objects.
pub fn checksum(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Encodes `data` into a stored object with the given compression, unencrypted.
pub fn encode(data: &[u8], compression: Compression) -> Vec<u8> {
    encode_with(data, compression, None)
}

/// Encodes `data` into a stored object, encrypted when `key` is given.
pub fn encode_with(data: &[u8], compression: Compression, key: Option<&EncryptionKey>) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = compression.id();
    let mut check = [0u8; SEALED_CHECK_LEN];
    check[..8].copy_from_slice(&(data.len() as u64).to_le_bytes());
    check[8..].copy_from_slice(&checksum(data).to_le_bytes());
    let payload = compression.compress(data);
    let payload = match key {
        Some(key) => {
            header[5] = ENCRYPTION_SODIUM;
            let sealed = [&check[..], &payload].concat();
            encryption::seal(key, &header, &sealed)
        }
        None => {
            header[8..].copy_from_slice(&check);
            payload
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    out
}

/// Decodes an unencrypted stored object named `key`, checking its checksum.
pub fn decode(key: &str, object: &[u8]) -> Result<Vec<u8>, StorageError> {
    decode_with(key, object, None)
}

/// Decodes a stored object named `name`, decrypting it with `key` when it is encrypted.
pub fn decode_with(
    name: &str,
    object: &[u8],
    key: Option<&EncryptionKey>,
) -> Result<Vec<u8>, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: name.to_string(),
        reason,
    };
    if object.len() < HEADER_LEN || &object[..4] != MAGIC {
        return Err(corrupt("missing shardvault object header".into()));
    }
    let compression = Compression::from_id(object[4])
        .ok_or_else(|| corrupt(format!("unknown compression id {}", object[4])))?;
    let (header, payload) = object.split_at(HEADER_LEN);
    let opened;
    let (check, payload) = match header[5] {
        0 => (&header[8..], payload),
        ENCRYPTION_SODIUM_V1 => {
            opened = encryption::open(name, key, header, payload)?;
            (&header[8..], &opened[..])
        }
        ENCRYPTION_SODIUM => {
            opened = encryption::open(name, key, header, payload)?;
            if opened.len() < SEALED_CHECK_LEN {
                return Err(corrupt("sealed payload shorter than its checksum".into()));
            }
            opened.split_at(SEALED_CHECK_LEN)
        }
        other => return Err(corrupt(format!("unknown encryption id {other}"))),
    };
    let len = u64::from_le_bytes(check[..8].try_into().expect("8 bytes")) as usize;
    let want = u32::from_le_bytes(check[8..12].try_into().expect("4 bytes"));
    let data = compression
        .decompress(payload, len)
        .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
    if data.len() != len {
        return Err(corrupt(format!("length {} instead of {len}", data.len())));
    }
    let got = checksum(&data);
    if got != want {
        return Err(corrupt(format!("checksum {got:08x} instead of {want:08x}")));
    }
    Ok(data)
}

/// How a destination's objects are encoded: compression and optional encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Codec {
    /// Compression of new objects (decoding reads it from each object).
    pub compression: Compression,
    /// Key that encrypts new objects and opens encrypted ones.
    pub key: Option<EncryptionKey>,
    /// OpenPGP key: new objects are OpenPGP messages holding the unencrypted object.
    pub openpgp: Option<OpenPgpKey>,
}

impl Codec {
    /// A codec with the given compression and key.
    pub fn new(compression: Compression, key: Option<EncryptionKey>) -> Codec {
        Codec {
            compression,
            key,
            openpgp: None,
        }
    }

    /// This codec writing OpenPGP messages to `key` (and reading them with it).
    pub fn with_openpgp(self, key: OpenPgpKey) -> Codec {
        Codec {
            openpgp: Some(key),
            ..self
        }
    }

    /// Encodes `data` into a stored object.
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        match &self.openpgp {
            Some(pgp) => pgp.seal(&encode_with(data, self.compression, None)),
            None => encode_with(data, self.compression, self.key.as_ref()),
        }
    }

    /// Decodes the stored object named `name`.
    pub fn decode(&self, name: &str, object: &[u8]) -> Result<Vec<u8>, StorageError> {
        if openpgp::is_message(object) {
            let inner = openpgp::open(name, self.openpgp.as_ref(), object)?;
            return decode_with(name, &inner, None);
        }
        decode_with(name, object, self.key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_objects_show_neither_length_nor_checksum_and_old_ones_still_open() {
        let key = EncryptionKey::from_bytes([7u8; 32]);
        let data: Vec<u8> = b"shardvault v1 sealed object: "
            .iter()
            .copied()
            .cycle()
            .take(100_000)
            .collect();
        let obj = encode_with(&data, Compression::Zstd, Some(&key));
        assert_eq!(obj[5], ENCRYPTION_SODIUM);
        assert_eq!(&obj[8..HEADER_LEN], &[0u8; 12]);
        let crc = checksum(&data).to_le_bytes();
        let len = (data.len() as u64).to_le_bytes();
        assert!(!obj.windows(4).any(|w| w == crc), "the CRC is visible");
        assert!(!obj.windows(8).any(|w| w == len), "the length is visible");
        assert_eq!(decode_with("new", &obj, Some(&key)).unwrap(), data);

        // Written by the previous format (length and CRC in the clear header).
        let old = include_bytes!("../tests/fixtures/sodium-v1-zstd.svo");
        assert_eq!(old[5], ENCRYPTION_SODIUM_V1);
        assert_eq!(decode_with("old", old, Some(&key)).unwrap(), data);
        let mut damaged = old.to_vec();
        damaged[16] ^= 1;
        assert!(decode_with("old", &damaged, Some(&key)).is_err());
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Lzma,
        Compression::Brotli,
    ];

    #[test]
    fn round_trips_every_compression() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let obj = encode(&data, c);
            assert_eq!(decode("k", &obj).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn encrypted_objects_round_trip_and_need_their_key() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let key = EncryptionKey::from_bytes([3; 32]);
        for c in ALL {
            let codec = Codec::new(c, Some(key.clone()));
            let obj = codec.encode(&data);
            assert_eq!(obj[5], ENCRYPTION_SODIUM);
            assert_eq!(codec.decode("k", &obj).unwrap(), data, "{c:?}");
            let err = decode("wal/0001", &obj).unwrap_err().to_string();
            assert!(
                err.contains("wal/0001") && err.contains("wrong encryption key"),
                "{err}"
            );
            let other = Codec::new(c, Some(EncryptionKey::from_bytes([4; 32])));
            let err = other.decode("wal/0001", &obj).unwrap_err().to_string();
            assert!(
                err.contains("wal/0001") && err.contains("wrong encryption key"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_key_still_reads_unencrypted_objects() {
        let codec = Codec::new(Compression::Zstd, Some(EncryptionKey::from_bytes([3; 32])));
        let obj = encode(b"plain", Compression::Lz4);
        assert_eq!(codec.decode("k", &obj).unwrap(), b"plain");
    }

    #[test]
    fn a_changed_header_byte_of_an_encrypted_object_is_corruption() {
        let codec = Codec::new(Compression::Lz4, Some(EncryptionKey::from_bytes([3; 32])));
        let mut obj = codec.encode(&[1u8; 1000]);
        obj[17] ^= 1;
        let err = codec.decode("parts/p9", &obj).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("parts/p9"), "{err}");
    }

    #[test]
    fn a_changed_byte_is_found() {
        let data = vec![7u8; 10_000];
        for c in ALL {
            let mut obj = encode(&data, c);
            let last = obj.len() - 1;
            obj[last] ^= 0x55;
            let err = decode("parts/p1", &obj).unwrap_err();
            assert!(err.to_string().contains("parts/p1"), "{c:?}: {err}");
        }
    }
}
