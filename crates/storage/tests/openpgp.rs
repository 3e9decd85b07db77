//! `encryption.method: openpgp` against Debian's gpg: keys made by gpg encrypt objects that
//! gpg decrypts, and the refusals name the field to fix.

use shardvault_storage::codec::{decode, encode};
use shardvault_storage::testing::gpg::Gpg;
use shardvault_storage::{Codec, Compression, Encryption, OpenPgpKey, StorageError};

const PASSPHRASE: &str = "correct horse battery staple";

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 249) as u8 ^ 0x11).collect()
}

#[test]
fn gpg_decrypts_what_an_openpgp_codec_writes() {
    let gpg = Gpg::new();
    let armored = gpg.secret_key("shardvault test <backup@example.invalid>", PASSPHRASE);
    let key = OpenPgpKey::parse(&armored, Some(PASSPHRASE)).unwrap();
    let data = data();
    for compression in [Compression::None, Compression::Zstd] {
        let codec = Codec::new(compression, None).with_openpgp(key.clone());
        let object = codec.encode(&data);
        assert!(
            !object.windows(64).any(|w| w == &data[1000..1064]),
            "plaintext shows in the object"
        );
        let opened = gpg.decrypt(&object, PASSPHRASE).unwrap();
        // gpg yields the unencrypted shardvault object, byte for byte.
        assert_eq!(opened, encode(&data, compression), "{compression:?}");
        assert_eq!(decode("k", &opened).unwrap(), data);
        assert_eq!(codec.decode("k", &object).unwrap(), data);
    }
}

#[test]
fn the_codec_of_an_openpgp_destination_reads_its_objects_and_no_other_key_does() {
    let gpg = Gpg::new();
    let armored = gpg.secret_key("one <one@example.invalid>", "");
    let other = gpg.secret_key("two <two@example.invalid>", "");
    let enc = Encryption::Openpgp {
        key: armored,
        key_passphrase: None,
    };
    let codec = Codec::with_encryption(Compression::Lz4, Some(&enc)).unwrap();
    let object = codec.encode(b"wal segment");
    assert_eq!(codec.decode("wal/1", &object).unwrap(), b"wal segment");

    let wrong =
        Codec::new(Compression::Lz4, None).with_openpgp(OpenPgpKey::parse(&other, None).unwrap());
    let err = wrong.decode("wal/1", &object).unwrap_err();
    assert!(matches!(err, StorageError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("wal/1"), "{err}");

    let plain = Codec::new(Compression::Lz4, None);
    let err = plain.decode("wal/1", &object).unwrap_err();
    assert!(matches!(err, StorageError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("encryption.openpgp.key"), "{err}");

    // An OpenPGP codec still reads unencrypted objects written before encryption was set.
    assert_eq!(
        codec
            .decode("old", &encode(b"old", Compression::Lz4))
            .unwrap(),
        b"old"
    );
    let mut damaged = object.clone();
    let at = damaged.len() - 5;
    damaged[at] ^= 0x20;
    let err = codec.decode("wal/1", &damaged).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { .. }),
        "a changed byte must be corruption: {err}"
    );
}

#[test]
fn a_protected_key_needs_its_passphrase() {
    let gpg = Gpg::new();
    let armored = gpg.secret_key("locked <locked@example.invalid>", PASSPHRASE);
    let err = OpenPgpKey::parse(&armored, None).unwrap_err().to_string();
    assert!(
        err.contains("set encryption.openpgp.keyPassphrase"),
        "{err}"
    );
    let err = OpenPgpKey::parse(&armored, Some("wrong"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be unlocked"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the passphrase is never shown: {err}"
    );
    let debug = format!(
        "{:?}",
        Encryption::Openpgp {
            key: armored.clone(),
            key_passphrase: Some(PASSPHRASE.into())
        }
    );
    assert!(
        !debug.contains("PGP") && !debug.contains("horse"),
        "{debug}"
    );
}
