//! Client-side encryption of stored objects: libsodium's secretstream (XChaCha20-Poly1305),
//! as SGObjectStorage `encryption.method: sodium` asks for.
//!
//! An encrypted payload is the 24-byte stream header, one empty key-check message (so a wrong
//! key is told apart from a damaged object), then the data in messages of at most
//! [`CHUNK`] bytes, the last one tagged final so that truncation is found. Every data message
//! authenticates the object header as associated data.

use std::fmt;

use base64::Engine as _;
use crypto_secretstream::{Header, Key, PullStream, PushStream, Stream, Tag};
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// Plaintext bytes per encrypted message.
const CHUNK: usize = 64 * 1024;

/// Client-side encryption settings of a destination (SGObjectStorage `encryption`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Encryption {
    /// libsodium secretstream with a 32-byte key (`encryption.sodium`).
    #[serde(rename_all = "camelCase")]
    Sodium {
        /// The key as written in the Secret, before `key_transform`.
        key: String,
        /// How `key` is turned into 32 bytes.
        #[serde(default)]
        key_transform: KeyTransform,
    },
    /// OpenPGP to the encryption subkey of an armored secret key (`encryption.openpgp`);
    /// see [`crate::openpgp`].
    #[serde(rename_all = "camelCase")]
    Openpgp {
        /// The armored secret key (`openpgp.key`).
        key: String,
        /// Its passphrase, when the key is protected (`openpgp.keyPassphrase`).
        #[serde(default)]
        key_passphrase: Option<String>,
    },
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::Sodium { key_transform, .. } => f
                .debug_struct("Sodium")
                .field("key", &"<redacted>")
                .field("key_transform", key_transform)
                .finish(),
            Encryption::Openpgp { key_passphrase, .. } => f
                .debug_struct("Openpgp")
                .field("key", &"<redacted>")
                .field(
                    "key_passphrase",
                    &key_passphrase.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

impl Encryption {
    /// Resolves the configured sodium key into the 32 bytes used to encrypt.
    pub fn key(&self) -> Result<EncryptionKey, StorageError> {
        match self {
            Encryption::Openpgp { .. } => Err(StorageError::Config(
                "encryption.method openpgp has no sodium key".into(),
            )),
            Encryption::Sodium { key, key_transform } => {
                let bytes = key_transform.apply(key)?;
                let len = bytes.len();
                let bytes: [u8; Key::BYTES] = bytes.try_into().map_err(|_| {
                    StorageError::Config(format!(
                        "encryption.sodium.key is {len} bytes after keyTransform {}, {} are needed",
                        key_transform.name(),
                        Key::BYTES
                    ))
                })?;
                Ok(EncryptionKey(bytes))
            }
        }
    }
}

/// How the configured sodium key text becomes key bytes (`sodium.keyTransform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTransform {
    /// The text is base64 of the key.
    Base64,
    /// The text is hexadecimal of the key.
    Hex,
    /// The text's bytes are the key.
    #[default]
    None,
}

impl KeyTransform {
    fn name(self) -> &'static str {
        match self {
            KeyTransform::Base64 => "base64",
            KeyTransform::Hex => "hex",
            KeyTransform::None => "none",
        }
    }

    fn apply(self, text: &str) -> Result<Vec<u8>, StorageError> {
        let bad = |what: &str| {
            StorageError::Config(format!(
                "encryption.sodium.key is not valid {what} (keyTransform {})",
                self.name()
            ))
        };
        match self {
            KeyTransform::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| bad("base64")),
            KeyTransform::Hex => hex::decode(text.trim()).map_err(|_| bad("hexadecimal")),
            KeyTransform::None => Ok(text.as_bytes().to_vec()),
        }
    }
}

/// A 32-byte encryption key, ready to use (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; Key::BYTES]);

impl EncryptionKey {
    /// A key from its raw 32 bytes.
    pub fn from_bytes(bytes: [u8; Key::BYTES]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    fn stream_key(&self) -> Key {
        Key::from(self.0)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// Encrypts `payload`, authenticating `aad` (the object header) with every message.
pub(crate) fn seal(key: &EncryptionKey, aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let messages = payload.len().div_ceil(CHUNK).max(1) + 1;
    let mut out = Vec::with_capacity(Header::BYTES + payload.len() + messages * Stream::ABYTES);
    let (header, mut push) = PushStream::init(rand_core::OsRng, &key.stream_key());
    out.extend_from_slice(header.as_ref());
    let mut buf = Vec::with_capacity(CHUNK + Stream::ABYTES);
    push.push(&mut buf, &[], Tag::Message)
        .expect("a Vec grows to hold the key check");
    out.extend_from_slice(&buf);
    let mut chunks = payload.chunks(CHUNK).peekable();
    if chunks.peek().is_none() {
        buf.clear();
        push.push(&mut buf, aad, Tag::Final)
            .expect("a Vec grows to hold the final message");
        out.extend_from_slice(&buf);
    }
    while let Some(chunk) = chunks.next() {
        let tag = if chunks.peek().is_none() {
            Tag::Final
        } else {
            Tag::Message
        };
        buf.clear();
        buf.extend_from_slice(chunk);
        push.push(&mut buf, aad, tag)
            .expect("a Vec grows to hold a message");
        out.extend_from_slice(&buf);
    }
    out
}

/// Decrypts what [`seal`] wrote for object `name`.
pub(crate) fn open(
    name: &str,
    key: Option<&EncryptionKey>,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, StorageError> {
    let Some(key) = key else {
        return Err(StorageError::WrongKey {
            key: name.to_string(),
            reason: "the object is encrypted and no key was given; set encryption.sodium.key of \
                     the SGObjectStorage it was written with"
                .into(),
        });
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        key: name.to_string(),
        reason,
    };
    if sealed.len() < Header::BYTES + Stream::ABYTES {
        return Err(corrupt("encrypted payload is truncated".into()));
    }
    let header = Header::try_from(&sealed[..Header::BYTES]).expect("24 bytes");
    let mut pull = PullStream::init(header, &key.stream_key());
    let mut rest = &sealed[Header::BYTES..];
    let mut buf = Vec::with_capacity(CHUNK + Stream::ABYTES);
    buf.extend_from_slice(&rest[..Stream::ABYTES]);
    rest = &rest[Stream::ABYTES..];
    if pull.pull(&mut buf, &[]).is_err() {
        return Err(StorageError::WrongKey {
            key: name.to_string(),
            reason: "the key does not open this object; use the sodium key it was written with \
                     (or, if that is the key, the object's encryption header is damaged)"
                .into(),
        });
    }
    let mut out = Vec::with_capacity(rest.len());
    let mut index = 0usize;
    loop {
        if rest.is_empty() {
            return Err(corrupt("encrypted payload is truncated".into()));
        }
        let take = rest.len().min(CHUNK + Stream::ABYTES);
        buf.clear();
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        let tag = pull
            .pull(&mut buf, aad)
            .map_err(|_| corrupt(format!("encrypted message {index} fails authentication")))?;
        out.extend_from_slice(&buf);
        index += 1;
        match (tag, rest.is_empty()) {
            (Tag::Final, true) => return Ok(out),
            (Tag::Final, false) => {
                return Err(corrupt("bytes follow the final encrypted message".into()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([b; 32])
    }

    #[test]
    fn seals_and_opens_every_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sealed = seal(&key(1), b"aad", &data);
            assert_eq!(open("o", Some(&key(1)), b"aad", &sealed).unwrap(), data);
        }
    }

    #[test]
    fn wrong_or_missing_key_is_named() {
        let sealed = seal(&key(1), b"aad", b"secret");
        let err = open("parts/p1", Some(&key(2)), b"aad", &sealed).unwrap_err();
        assert!(matches!(err, StorageError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("parts/p1"), "{err}");
        assert!(err.to_string().contains("wrong encryption key"), "{err}");
        let err = open("parts/p1", None, b"aad", &sealed).unwrap_err();
        assert!(matches!(err, StorageError::WrongKey { .. }), "{err}");
    }

    #[test]
    fn truncation_and_changed_bytes_are_corruption() {
        let data = vec![9u8; 2 * CHUNK + 5];
        let sealed = seal(&key(1), b"aad", &data);
        let cut = &sealed[..sealed.len() - (5 + Stream::ABYTES)];
        let err = open("o", Some(&key(1)), b"aad", cut).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let mut changed = sealed.clone();
        let at = changed.len() - 3;
        changed[at] ^= 1;
        let err = open("o", Some(&key(1)), b"aad", &changed).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let err = open("o", Some(&key(1)), b"other header", &sealed).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn key_transforms_decode_to_32_bytes() {
        let raw = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let cases = [
            (b64.as_str(), KeyTransform::Base64),
            (&*hex::encode(raw), KeyTransform::Hex),
        ];
        for (text, t) in cases {
            let enc = Encryption::Sodium {
                key: text.to_string(),
                key_transform: t,
            };
            assert_eq!(enc.key().unwrap(), EncryptionKey::from_bytes(raw));
        }
        let plain = Encryption::Sodium {
            key: "0123456789abcdef0123456789abcdef".into(),
            key_transform: KeyTransform::None,
        };
        assert!(plain.key().is_ok());
        let short = Encryption::Sodium {
            key: "too-short-secret".into(),
            key_transform: KeyTransform::None,
        };
        let err = short.key().unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(!err.contains("too-short-secret"), "{err}");
        assert!(!format!("{short:?}").contains("too-short-secret"));
    }

    #[test]
    fn parses_stackgres_shape() {
        let e: Encryption =
            serde_json::from_str(r#"{"method":"sodium","key":"abc","keyTransform":"hex"}"#)
                .unwrap();
        assert_eq!(
            e,
            Encryption::Sodium {
                key: "abc".into(),
                key_transform: KeyTransform::Hex
            }
        );
    }
}
