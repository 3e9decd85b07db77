//! One set of checks that every storage backend passes: a temporary directory, a real
//! S3-protocol server in process (s3s-fs), and third-party servers as child processes: moto
//! (S3), fake-gcs-server (GCS) and azurite (Azure Blob).

use std::any::Any;
use std::path::PathBuf;
use std::time::Instant;

use shardvault_storage::testing::emulators::{self, Emulator};
use shardvault_storage::testing::start_s3_server;
use shardvault_storage::{
    Codec, Compression, EncryptionKey, Performance, StorageConfig, StorageError, Store,
};

/// A store under test and, when known, where its objects sit on disk (to damage them).
struct Backend {
    name: &'static str,
    store: Store,
    files: Option<PathBuf>,
    _keep: Box<dyn Any>,
}

const PREFIX: &str = "conf/member-0";

async fn filesystem() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::Filesystem {
        path: dir.path().to_path_buf(),
    };
    Backend {
        name: "filesystem",
        store: Store::open(&config, PREFIX).unwrap(),
        files: Some(dir.path().join(PREFIX)),
        _keep: Box::new(dir),
    }
}

async fn s3() -> Backend {
    let server = start_s3_server().await;
    let store = Store::open(&server.config, PREFIX).unwrap();
    store.check().await.unwrap();
    Backend {
        name: "s3",
        store,
        files: Some(server.object_path(&server.bucket, PREFIX)),
        _keep: Box::new(server),
    }
}

/// A third-party server's store, checked reachable; objects are damaged through the store.
async fn emulator(name: &'static str, server: Emulator) -> Backend {
    let store = Store::open(&server.config, PREFIX).unwrap();
    if let Err(e) = store.check().await {
        panic!("{name}: {e}\n{}", server.log());
    }
    Backend {
        name,
        store,
        files: None,
        _keep: Box::new(server),
    }
}

async fn moto() -> Backend {
    emulator("moto", emulators::start_moto().await).await
}

async fn gcs() -> Backend {
    emulator("gcs", emulators::start_fake_gcs().await).await
}

async fn azurite() -> Backend {
    emulator("azurite", emulators::start_azurite().await).await
}

/// Deterministic bytes that compress a little, like table data.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 4 == 0 { 0 } else { x as u8 }
        })
        .collect()
}

async fn put_get_round_trips(b: Backend) {
    let s = &b.store;
    s.put("base/part-0001", b"hello".to_vec()).await.unwrap();
    s.put("empty", Vec::new()).await.unwrap();
    assert_eq!(s.get("base/part-0001").await.unwrap(), b"hello");
    assert!(s.get("empty").await.unwrap().is_empty());
}

async fn overwrite_replaces(b: Backend) {
    let s = &b.store;
    s.put("manifest", data(5000, 1)).await.unwrap();
    s.put("manifest", b"short".to_vec()).await.unwrap();
    assert_eq!(s.get("manifest").await.unwrap(), b"short");
    assert_eq!(s.list("").await.unwrap(), vec!["manifest"]);
}

async fn exists_tells_presence(b: Backend) {
    let s = &b.store;
    assert!(!s.exists("wal/000000010000000000000001").await.unwrap());
    s.put("wal/000000010000000000000001", vec![1])
        .await
        .unwrap();
    assert!(s.exists("wal/000000010000000000000001").await.unwrap());
    assert!(!s.exists("wal/000000010000000000000002").await.unwrap());
}

async fn list_nested(b: Backend) {
    let s = &b.store;
    for k in ["a/1", "a/b/2", "a/b/c/3", "ab/4", "z"] {
        s.put(k, k.as_bytes().to_vec()).await.unwrap();
    }
    assert_eq!(
        s.list("").await.unwrap(),
        vec!["a/1", "a/b/2", "a/b/c/3", "ab/4", "z"]
    );
    assert_eq!(s.list("a").await.unwrap(), vec!["a/1", "a/b/2", "a/b/c/3"]);
    assert_eq!(s.list("/a/b/").await.unwrap(), vec!["a/b/2", "a/b/c/3"]);
}

async fn list_empty(b: Backend) {
    let s = &b.store;
    assert!(s.list("").await.unwrap().is_empty());
    assert!(s.list("nothing/here").await.unwrap().is_empty());
    s.put("x/1", vec![1]).await.unwrap();
    assert!(s.list("y").await.unwrap().is_empty());
}

async fn delete_missing_is_ok(b: Backend) {
    let s = &b.store;
    s.delete("never/was").await.unwrap();
    s.put("k", vec![1]).await.unwrap();
    s.delete("k").await.unwrap();
    s.delete("k").await.unwrap();
    assert!(!s.exists("k").await.unwrap());
}

async fn delete_all_stays_under_its_dir(b: Backend) {
    let s = &b.store;
    for k in ["old/1", "old/2/3", "older/4", "keep"] {
        s.put(k, vec![0]).await.unwrap();
    }
    s.delete_all("old").await.unwrap();
    assert_eq!(s.list("").await.unwrap(), vec!["keep", "older/4"]);
    s.delete_all("gone").await.unwrap();
    s.delete_all("").await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
}

async fn child_prefixes(b: Backend) {
    let s = &b.store;
    let backup = s.child("backups").child("/b1/");
    backup.put("parts/1", b"p".to_vec()).await.unwrap();
    assert_eq!(backup.list("").await.unwrap(), vec!["parts/1"]);
    assert_eq!(s.list("").await.unwrap(), vec!["backups/b1/parts/1"]);
    assert_eq!(s.get("backups/b1/parts/1").await.unwrap(), b"p");
    assert!(backup.describe().ends_with("conf/member-0/backups/b1"));
    backup.delete_all("").await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
}

async fn not_found_is_typed(b: Backend) {
    let err = b.store.get("wal/missing").await.unwrap_err();
    match &err {
        StorageError::NotFound { key, .. } => assert_eq!(key, "conf/member-0/wal/missing"),
        other => panic!("{}: {other}", b.name),
    }
    assert!(err.to_string().contains("wal/missing"), "{err}");
}

async fn corrupt_object_is_named(b: Backend) {
    let s = &b.store;
    let codec = Codec::new(Compression::Lz4, None);
    s.put("base/part-7", codec.encode(&data(100_000, 7)))
        .await
        .unwrap();
    let damage = |bytes: &mut Vec<u8>| {
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
    };
    match &b.files {
        Some(files) => {
            let file = files.join("base/part-7");
            let mut bytes = std::fs::read(&file).unwrap();
            damage(&mut bytes);
            std::fs::write(&file, bytes).unwrap();
        }
        None => {
            let mut bytes = s.get("base/part-7").await.unwrap();
            damage(&mut bytes);
            s.put("base/part-7", bytes).await.unwrap();
        }
    }
    let stored = s.get("base/part-7").await.unwrap();
    let err = codec.decode("base/part-7", &stored).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("base/part-7"), "{err}");
}

async fn encrypted_objects_need_their_key(b: Backend) {
    let s = &b.store;
    let codec = Codec::new(Compression::Zstd, Some(EncryptionKey::from_bytes([5; 32])));
    let plain = data(300_000, 3);
    s.put("wal/seg", codec.encode(&plain)).await.unwrap();
    let stored = s.get("wal/seg").await.unwrap();
    assert_eq!(codec.decode("wal/seg", &stored).unwrap(), plain);
    let other = Codec::new(Compression::Zstd, Some(EncryptionKey::from_bytes([6; 32])));
    let err = other.decode("wal/seg", &stored).unwrap_err().to_string();
    assert!(
        err.contains("wal/seg") && err.contains("wrong encryption key"),
        "{err}"
    );
}

async fn large_object(b: Backend) {
    let s = &b.store;
    let big = data(20 << 20, 11);
    let t = Instant::now();
    s.put("base/big", big.clone()).await.unwrap();
    let put = t.elapsed();
    let t = Instant::now();
    let back = s.get("base/big").await.unwrap();
    let get = t.elapsed();
    assert!(back == big, "{}: 20 MiB object differs", b.name);
    // A throttled put streams in slices (multipart on S3).
    let streamed = s.with_performance(&Performance {
        max_network_bandwidth: Some(1 << 40),
        ..Performance::default()
    });
    streamed.put("base/big", big.clone()).await.unwrap();
    assert!(
        s.get("base/big").await.unwrap() == big,
        "{}: streamed put differs",
        b.name
    );
    eprintln!(
        "{}: 20 MiB put {:.0} MiB/s, get {:.0} MiB/s",
        b.name,
        20.0 / put.as_secs_f64(),
        20.0 / get.as_secs_f64()
    );
}

/// 3 MiB at 1 MiB/s through `maxNetworkBandwidth`: about 3 s, within 10% of the rate.
async fn throttled_puts_keep_to_the_rate(b: Backend) {
    let rate = 1 << 20;
    let perf = Performance {
        max_network_bandwidth: Some(rate),
        upload_concurrency: 3,
        ..Performance::default()
    };
    let s = b.store.with_performance(&perf);
    let t = Instant::now();
    let puts = (0..3).map(|i| {
        let s = s.child("throttled");
        async move { s.put(&format!("p{i}"), data(1 << 20, i)).await }
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let measured = (3 << 20) as f64 / secs;
    eprintln!(
        "{}: 3 MiB in {secs:.2} s, {:.1}% of the 1 MiB/s limit",
        b.name,
        100.0 * measured / rate as f64
    );
    // Never above the limit; below it only by what a loaded machine takes away.
    assert!(
        (0.5..=1.1).contains(&(measured / rate as f64)),
        "{}: {measured:.0} B/s against a limit of {rate} B/s",
        b.name
    );
    assert_eq!(s.list("throttled").await.unwrap().len(), 3);
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod filesystem {
            $(#[tokio::test] async fn $check() { super::$check(super::filesystem().await).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $check() { super::$check(super::s3().await).await })*
        }
        mod moto {
            $(#[tokio::test] async fn $check() { super::$check(super::moto().await).await })*
        }
        mod gcs {
            $(#[tokio::test] async fn $check() { super::$check(super::gcs().await).await })*
        }
        mod azurite {
            $(#[tokio::test] async fn $check() { super::$check(super::azurite().await).await })*
        }
    };
}

conformance!(
    put_get_round_trips,
    overwrite_replaces,
    exists_tells_presence,
    list_nested,
    list_empty,
    delete_missing_is_ok,
    delete_all_stays_under_its_dir,
    child_prefixes,
    not_found_is_typed,
    corrupt_object_is_named,
    encrypted_objects_need_their_key,
    large_object,
    throttled_puts_keep_to_the_rate,
);
