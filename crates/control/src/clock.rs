//! Where controllers get the time: the system clock, or a clock a test drives (in process,
//! or through a file the daemon reads when `SHARDVAULT_CLOCK_FILE` is set).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Environment variable naming a file that holds the daemon's time (RFC 3339), for tests.
pub const CLOCK_FILE_ENV: &str = "SHARDVAULT_CLOCK_FILE";

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// How long a controller may sleep before looking at this clock again (a driven clock
    /// can jump, so it is looked at often).
    fn poll(&self) -> Duration;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn poll(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// A clock that stands still until the test sets or advances it.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Sets the time.
    pub fn set(&self, at: Timestamp) {
        *self.0.lock().expect("not poisoned") = at;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut t = self.0.lock().expect("not poisoned");
        *t = t.saturating_add(by).expect("in range");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("not poisoned")
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(200)
    }
}

/// A clock read from a file holding an RFC 3339 timestamp, so a test can drive the time of a
/// daemon running in another process. An unreadable file reads as the system time (logged).
#[derive(Debug, Clone)]
pub struct FileClock(PathBuf);

impl FileClock {
    /// A clock reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileClock {
        FileClock(path.into())
    }
}

impl Clock for FileClock {
    fn now(&self) -> Timestamp {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.trim().parse().unwrap_or_else(|e| {
            tracing::warn!(
                "{}: {text:?} is not an RFC 3339 time ({e}): using the system clock; write e.g. 2030-01-01T00:00:00Z",
                self.0.display()
            );
            Timestamp::now()
        })
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(200)
    }
}

/// The daemon's clock: a [`FileClock`] when `SHARDVAULT_CLOCK_FILE` is set, else the system's.
pub fn from_env() -> Arc<dyn Clock> {
    match std::env::var_os(CLOCK_FILE_ENV) {
        Some(path) if !path.is_empty() => {
            tracing::warn!(
                "{CLOCK_FILE_ENV} is set: schedules follow the time in {} (tests only)",
                PathBuf::from(&path).display()
            );
            Arc::new(FileClock::new(path))
        }
        _ => Arc::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driven_clocks_move_only_when_told() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let c = ManualClock::new(t0);
        c.advance(SignedDuration::from_hours(1));
        assert_eq!(c.now().to_string(), "2030-01-01T01:00:00Z");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("clock");
        std::fs::write(&f, "2030-01-02T03:04:05Z\n").unwrap();
        assert_eq!(FileClock::new(&f).now().to_string(), "2030-01-02T03:04:05Z");
    }
}
