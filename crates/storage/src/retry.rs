//! Retrying transient storage failures, each retry said in one line with its attempt count.

use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryEvent, RetryLayer};

use crate::error::backend_cause;

/// Retries after the first attempt.
const RETRIES: usize = 4;

/// `op` retrying transient failures with jittered backoff.
pub(crate) fn with_retries(op: Operator) -> Operator {
    op.layer(
        RetryLayer::new()
            .with_jitter()
            .with_max_times(RETRIES)
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_notify(|event: RetryEvent<'_>| tracing::warn!("{}", retry_line(&event))),
    )
}

/// The sentence a retry is logged as: what failed, why (the cause once), which attempt.
fn retry_line(event: &RetryEvent<'_>) -> String {
    format!(
        "storage {} failed ({}); retry {} of {RETRIES} in {:.1} s",
        event.op.into_static(),
        backend_cause(event.err),
        event.attempt,
        event.retry_after.as_secs_f64()
    )
}
