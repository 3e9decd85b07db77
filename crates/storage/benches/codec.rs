//! Codec throughput by compression, with and without encryption (run by hand:
//! `cargo bench -p shardvault-storage --bench codec`).

use std::time::Instant;

use shardvault_storage::{Codec, Compression, EncryptionKey};

/// Table-like data: repetitive structure with varying values.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match i % 16 {
                0..=5 => b"row-0000"[i % 8],
                6..=9 => (x % 10) as u8 + b'0',
                _ => 0,
            }
        })
        .collect()
}

fn main() {
    let data = sample(32 << 20);
    let mib = data.len() as f64 / (1 << 20) as f64;
    let key = EncryptionKey::from_bytes([7; 32]);
    println!(
        "{:<8} {:>9} {:>7} {:>13} {:>13}",
        "codec", "encrypted", "ratio", "encode MiB/s", "decode MiB/s"
    );
    for compression in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Brotli,
        Compression::Lzma,
    ] {
        for encrypted in [false, true] {
            let codec = Codec::new(compression, encrypted.then(|| key.clone()));
            let t = Instant::now();
            let object = codec.encode(&data);
            let enc = mib / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let back = codec.decode("bench", &object).expect("round trip");
            let dec = mib / t.elapsed().as_secs_f64();
            assert!(back == data);
            let ratio = data.len() as f64 / object.len() as f64;
            println!(
                "{:<8} {:>9} {:>7.2} {:>13.0} {:>13.0}",
                format!("{compression:?}"),
                encrypted,
                ratio,
                enc,
                dec
            );
        }
    }
}
