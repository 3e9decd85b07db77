//! OpenPGP encryption of stored objects (SGObjectStorage `encryption.method: openpgp`), as
//! WAL-G's openpgp mode: each stored object is a binary OpenPGP message (SEIPDv1, AES-256)
//! to the encryption subkey of the configured key, so `gpg --decrypt` opens it with that key.
//! The message holds the unencrypted shardvault object (header and compressed payload), whose
//! own checksum is checked after decryption.

use std::fmt;
use std::sync::Arc;

use pgp::composed::{Deserializable, Message, MessageBuilder, SignedPublicSubKey, SignedSecretKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password};

use crate::StorageError;

/// An OpenPGP secret key ready to encrypt to and decrypt with (never printed).
#[derive(Clone)]
pub struct OpenPgpKey {
    secret: Arc<SignedSecretKey>,
    recipient: Arc<SignedPublicSubKey>,
    passphrase: Arc<Password>,
    fingerprint: String,
}

impl OpenPgpKey {
    /// Reads an armored secret key (`openpgp.key`) and checks `passphrase` opens it.
    pub fn parse(armored: &str, passphrase: Option<&str>) -> Result<OpenPgpKey, StorageError> {
        let bad = |what: String| StorageError::Config(format!("encryption.openpgp.key {what}"));
        if armored.contains("BEGIN PGP PUBLIC KEY BLOCK") {
            return Err(bad(
                "is a public key: give the armored secret key (gpg --armor --export-secret-keys), \
                 which is needed to read backups back"
                    .into(),
            ));
        }
        let (secret, _) = SignedSecretKey::from_string(armored).map_err(|e| {
            bad(format!(
                "is not an armored OpenPGP secret key ({e}): export it with gpg --armor \
                 --export-secret-keys"
            ))
        })?;
        secret
            .verify_bindings()
            .map_err(|e| bad(format!("has an invalid self-signature: {e}")))?;
        let subkey = secret
            .secret_subkeys
            .iter()
            .find(|sub| {
                sub.key.algorithm().can_encrypt()
                    && sub.signatures.iter().any(|sig| {
                        let flags = sig.key_flags();
                        flags.encrypt_comms() || flags.encrypt_storage()
                    })
            })
            .ok_or_else(|| {
                bad(
                    "has no encryption subkey: add one (gpg --quick-add-key FPR default encr)"
                        .into(),
                )
            })?;
        let passphrase = Password::from(passphrase.unwrap_or(""));
        let unlocked = subkey.key.unlock(&passphrase, |_, _| Ok(()));
        if !matches!(unlocked, Ok(Ok(()))) {
            let field = if passphrase.read().is_empty() {
                "is protected by a passphrase: set encryption.openpgp.keyPassphrase"
            } else {
                "cannot be unlocked with encryption.openpgp.keyPassphrase: set the key's passphrase"
            };
            return Err(bad(field.into()));
        }
        Ok(OpenPgpKey {
            fingerprint: hex::encode(secret.fingerprint().as_bytes()),
            recipient: Arc::new(subkey.signed_public_key()),
            secret: Arc::new(secret),
            passphrase: Arc::new(passphrase),
        })
    }

    /// Encrypts `plain` into a binary OpenPGP message to this key.
    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut rng = rand_core::OsRng;
        let mut builder = MessageBuilder::from_bytes("", plain.to_vec())
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        builder
            .encrypt_to_key(&mut rng, &*self.recipient)
            .expect("a checked encryption subkey encrypts a session key");
        builder
            .to_vec(rng)
            .expect("an OpenPGP message is written in memory")
    }
}

impl PartialEq for OpenPgpKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for OpenPgpKey {}

impl fmt::Debug for OpenPgpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenPgpKey({})", self.fingerprint)
    }
}

/// Tells whether `object` is an OpenPGP message rather than a shardvault object: an OpenPGP
/// packet header has its top bit set, a shardvault header starts with ASCII `S`.
pub(crate) fn is_message(object: &[u8]) -> bool {
    object.first().is_some_and(|b| b & 0x80 != 0)
}

/// Decrypts the OpenPGP message `sealed` (object `name`) with `key`.
pub(crate) fn open(
    name: &str,
    key: Option<&OpenPgpKey>,
    sealed: &[u8],
) -> Result<Vec<u8>, StorageError> {
    let Some(key) = key else {
        return Err(StorageError::WrongKey {
            key: name.to_string(),
            reason: "the object is OpenPGP-encrypted and no OpenPGP key was given; set \
                     encryption.openpgp.key of the SGObjectStorage it was written with"
                .into(),
        });
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        key: name.to_string(),
        reason,
    };
    let message = Message::from_bytes(sealed)
        .map_err(|e| corrupt(format!("not a readable OpenPGP message: {e}")))?;
    let mut opened = message.decrypt(&key.passphrase, &key.secret).map_err(|e| {
        let text = e.to_string();
        if text.contains("Modification Detection Code") {
            return corrupt(format!(
                "the OpenPGP message fails its integrity check: {text}"
            ));
        }
        StorageError::WrongKey {
            key: name.to_string(),
            reason: format!(
                "OpenPGP key {} does not open this object ({text}); use the key it was \
                     written with",
                key.fingerprint
            ),
        }
    })?;
    if opened.is_compressed() {
        opened = opened
            .decompress()
            .map_err(|e| corrupt(format!("cannot decompress the OpenPGP message: {e}")))?;
    }
    opened.as_data_vec().map_err(|e| {
        corrupt(format!(
            "the OpenPGP message fails its integrity check: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shardvault_objects_are_not_openpgp_messages() {
        assert!(!is_message(b"SVO1...."));
        assert!(!is_message(b""));
        assert!(is_message(&[0xc1, 0x00]));
        assert!(is_message(&[0x85, 0x01]));
    }

    #[test]
    fn junk_keys_are_refused_with_the_field() {
        let err = OpenPgpKey::parse("not a key", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("encryption.openpgp.key"), "{err}");
        let public = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----";
        let err = OpenPgpKey::parse(public, None).unwrap_err().to_string();
        assert!(err.contains("is a public key"), "{err}");
    }
}
