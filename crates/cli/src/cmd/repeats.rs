//! A log filter that keeps one repeating cause from flooding the log: an event equal to one
//! logged in the last minute is held back and counted, and the count is said once.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Filter};

/// How long an event is held back after it was logged.
const WINDOW: Duration = Duration::from_secs(60);

/// Most distinct recent events remembered.
const REMEMBERED: usize = 256;

/// Holds back events repeated within [`WINDOW`].
#[derive(Default)]
pub struct Repeats {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    since: Instant,
    held: u64,
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl Repeats {
    /// Whether an event with `key` is logged now; says how often a held-back one repeated.
    fn admit(&self, key: String, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(&key) {
            if now.duration_since(s.since) < WINDOW {
                s.held += 1;
                return false;
            }
            if s.held > 0 {
                eprintln!(
                    "(the next message was repeated {} more times in the last {} s)",
                    s.held,
                    now.duration_since(s.since).as_secs()
                );
            }
            s.since = now;
            s.held = 0;
            return true;
        }
        if seen.len() >= REMEMBERED {
            seen.retain(|_, s| now.duration_since(s.since) < WINDOW);
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(
            key,
            Seen {
                since: now,
                held: 0,
            },
        );
        true
    }
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &Context<'_, S>) -> bool {
        let mut text = Text(format!("{:?}", event.metadata().callsite()));
        event.record(&mut text);
        self.admit(text.0, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_held_back_then_said_again() {
        let r = Repeats::default();
        let t0 = Instant::now();
        assert!(r.admit("a".into(), t0));
        assert!(!r.admit("a".into(), t0 + Duration::from_secs(1)));
        assert!(r.admit("b".into(), t0 + Duration::from_secs(2)));
        assert!(!r.admit("a".into(), t0 + Duration::from_secs(59)));
        assert!(r.admit("a".into(), t0 + Duration::from_secs(61)));
    }
}
