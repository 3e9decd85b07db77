//! Log lines of shardvault child processes (node work run by the daemon): the child writes
//! `LEVEL message` without a timestamp, and the parent logs each line once, at the child's
//! level, under its own timestamp, about the member it concerns.

/// The variable that tells a shardvault process its stderr is read by a parent.
pub const FORMAT_VAR: &str = "SHARDVAULT_LOG_FORMAT";

/// The value of [`FORMAT_VAR`] for a child whose lines a parent relays.
pub const CHILD: &str = "child";

/// Prefix of the line a failed shardvault command ends with (its error, cause chain and all).
const ERROR_PREFIX: &str = "error: ";

/// Makes `cmd` (a shardvault command) write its log lines for [`relay`].
pub fn mark(cmd: &mut tokio::process::Command) {
    cmd.env(FORMAT_VAR, CHILD);
}

/// Whether this process writes its log lines for a parent.
pub fn is_child() -> bool {
    std::env::var(FORMAT_VAR).is_ok_and(|v| v == CHILD)
}

/// The level of a child's log line and its message; None for a line that is no log line
/// (a command's own output or its final error).
fn parse(line: &str) -> Option<(tracing::Level, &str)> {
    let (level, message) = line.trim_start().split_once(' ')?;
    Some((level.parse().ok()?, message.trim_start()))
}

/// Logs one line of a child about `instance`: a log line at its level, other text at info;
/// the final error line is left to the caller, which returns it as the error.
pub fn relay(instance: &str, line: &str) {
    if line.trim().is_empty() || line.starts_with(ERROR_PREFIX) {
        return;
    }
    match parse(line) {
        Some((tracing::Level::ERROR, m)) => tracing::error!(instance, "{m}"),
        Some((tracing::Level::WARN, m)) => tracing::warn!(instance, "{m}"),
        Some((tracing::Level::INFO, m)) => tracing::info!(instance, "{m}"),
        Some((_, m)) => tracing::debug!(instance, "{m}"),
        None => tracing::info!(instance, "{line}"),
    }
}

/// What a failed child said on stderr: its final error, else its last line, without a level.
pub fn failure(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(error) = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(ERROR_PREFIX))
    {
        return error.to_string();
    }
    match lines.last() {
        Some(line) => parse(line).map_or(*line, |(_, m)| m).to_string(),
        None => "no message".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_line_loses_its_level_and_the_error_wins() {
        assert_eq!(
            parse(" INFO restore: 3 of 29 MiB"),
            Some((tracing::Level::INFO, "restore: 3 of 29 MiB"))
        );
        assert_eq!(parse("restored backup b into /d"), None);
        let stderr =
            " WARN stored copy is corrupt; replacing it\nerror: backup b not found in /s\n";
        assert_eq!(failure(stderr), "backup b not found in /s");
        assert_eq!(failure(" WARN slow storage\n\n"), "slow storage");
        assert_eq!(failure(""), "no message");
    }
}
