//! Store throughput on the filesystem and the in-process S3 server, and the accuracy of a
//! 10 s throttled upload (run by hand: `cargo bench -p shardvault-storage --bench throughput`).

use std::time::Instant;

use shardvault_storage::testing::start_s3_server;
use shardvault_storage::{Performance, StorageConfig, Store};

const OBJECT: usize = 32 << 20;
const OBJECTS: usize = 8;

async fn measure(name: &str, store: &Store) {
    let data: Vec<u8> = (0..OBJECT).map(|i| (i * 31 % 251) as u8).collect();
    let mib = (OBJECT * OBJECTS) as f64 / (1 << 20) as f64;
    let t = Instant::now();
    let puts = (0..OBJECTS).map(|i| {
        let (store, data) = (store.clone(), data.clone());
        async move { store.put(&format!("o{i}"), data).await }
    });
    for r in futures::future::join_all(puts).await {
        r.expect("put");
    }
    let put = mib / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let gets = (0..OBJECTS).map(|i| {
        let store = store.clone();
        async move { store.get(&format!("o{i}")).await }
    });
    for r in futures::future::join_all(gets).await {
        assert_eq!(r.expect("get").len(), OBJECT);
    }
    let get = mib / t.elapsed().as_secs_f64();
    println!("{name}: {OBJECTS} x 32 MiB, 4 at once: put {put:.0} MiB/s, get {get:.0} MiB/s");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fs = Store::open(
        &StorageConfig::Filesystem {
            path: dir.path().into(),
        },
        "bench",
    )
    .expect("filesystem store");
    let perf = Performance {
        upload_concurrency: 4,
        download_concurrency: 4,
        ..Performance::default()
    };
    measure("filesystem", &fs.with_performance(&perf)).await;
    let server = start_s3_server().await;
    let s3 = Store::open(&server.config, "bench").expect("s3 store");
    measure("s3 (s3s-fs, same process)", &s3.with_performance(&perf)).await;

    let rate = 2 << 20;
    let throttled = s3.child("throttled").with_performance(&Performance {
        max_network_bandwidth: Some(rate),
        upload_concurrency: 4,
        ..Performance::default()
    });
    let t = Instant::now();
    let puts = (0..5).map(|i| {
        let store = throttled.clone();
        async move { store.put(&format!("t{i}"), vec![i as u8; 4 << 20]).await }
    });
    for r in futures::future::join_all(puts).await {
        r.expect("throttled put");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "throttle: 20 MiB at 2 MiB/s to s3 in {secs:.2} s = {:.1}% of the limit",
        100.0 * (20 << 20) as f64 / secs / rate as f64
    );
}
