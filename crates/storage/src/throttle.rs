//! A shared bandwidth limit: callers take bytes from it before moving them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A bytes-per-second limit shared by every clone (`maxNetworkBandwidth`, `maxDiskBandwidth`).
///
/// Each `acquire(n)` books the next `n / rate` seconds of the link and waits until its booking
/// starts, so over any window of `T` seconds at most `rate * T` bytes plus one request pass.
/// Idle time is not saved up for later bursts.
#[derive(Debug, Clone)]
pub struct Throttle {
    bytes_per_second: u64,
    /// When the link is next free; `None` until first used.
    next_free: Arc<Mutex<Option<Instant>>>,
}

impl Throttle {
    /// A limit of `bytes_per_second`; 0 means no limit.
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second,
            next_free: Arc::new(Mutex::new(None)),
        }
    }

    /// The limit in bytes per second (0: no limit).
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until `bytes` may be moved without exceeding the limit.
    pub async fn acquire(&self, bytes: u64) {
        if self.bytes_per_second == 0 || bytes == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let start = {
            let mut next = self
                .next_free
                .lock()
                .expect("throttle lock is never poisoned");
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_by_their_size() {
        let t = Throttle::new(1000);
        let begin = Instant::now();
        for _ in 0..11 {
            t.acquire(100).await;
        }
        // Ten bookings of 0.1 s precede the eleventh.
        assert_eq!(begin.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_limit() {
        let t = Throttle::new(1000);
        let (a, b) = (t.clone(), t.clone());
        let begin = Instant::now();
        tokio::join!(a.acquire(500), b.acquire(500));
        t.acquire(1).await;
        assert_eq!(begin.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let t = Throttle::new(0);
        let begin = Instant::now();
        t.acquire(u64::MAX).await;
        assert_eq!(begin.elapsed(), Duration::ZERO);
    }
}
