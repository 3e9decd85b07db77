//! Logs a person can read: the demo's daemon journey (cluster, backup, two restores) and a
//! failing storage, run with stderr piped and `RUST_BACKTRACE=1`, print one timestamp per
//! line, no Rust Debug text, each cause once, no backtrace, and a retry as one line with its
//! attempt count.

use std::net::TcpListener;
use std::process::Output;

use shardvault_testkit::{TempStateDir, shardvault_bin};

/// Fragments of Rust Debug formatting that must never reach a log line or an error.
const DEBUG_FRAGMENTS: &[&str] = &[
    "Some(",
    "{ ",
    "Name(\"",
    "JsonPath(",
    "Time {",
    "Field(\"",
    "Error {",
];

/// Whether `s` starts with an RFC 3339 UTC timestamp (`2026-12-02T04:01:04.116Z`).
fn starts_with_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
}

/// Log-line prefixes (a timestamp followed by a level) inside `line`.
fn log_prefixes(line: &str) -> usize {
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    line.char_indices()
        .filter(|(i, _)| starts_with_timestamp(&line[*i..]))
        .filter(|(i, _)| {
            let rest = &line[*i..];
            let after = rest.split_once(' ').map_or("", |(_, r)| r).trim_start();
            levels.iter().any(|l| after.starts_with(l))
        })
        .count()
}

/// A cause printed twice in one line: a part between `: ` separators (of some length)
/// that appears again later in the line.
fn repeated_cause(line: &str) -> Option<String> {
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    parts.iter().enumerate().find_map(|(i, p)| {
        (p.len() >= 12 && parts[i + 1..].iter().any(|q| q.contains(p))).then(|| p.to_string())
    })
}

/// Every problem of `stderr`'s lines, with the line.
fn problems(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let mut say = |what: &str| out.push(format!("{what}: {line}"));
        if log_prefixes(line) > 1 {
            say("a nested timestamp");
        }
        if let Some(f) = DEBUG_FRAGMENTS.iter().find(|f| line.contains(*f)) {
            say(&format!("Debug text {f:?}"));
        }
        if let Some(cause) = repeated_cause(line) {
            say(&format!("the cause {cause:?} twice"));
        }
        if [
            "stack backtrace",
            "Backtrace",
            "panicked at",
            "std::rt::lang_start",
        ]
        .iter()
        .any(|b| line.contains(b))
        {
            say("a backtrace");
        }
    }
    out
}

fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    std::process::Command::new(shardvault_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_BACKTRACE", "1")
        .env_remove("SHARDVAULT_LOG")
        .output()
        .unwrap()
}

#[test]
fn the_checks_find_what_they_look_for() {
    let nested = "2026-12-02T04:01:12.299858Z  INFO restore: 2026-12-02T04:01:12.290826Z  INFO shardvault::cmd::node: restore: 0 of 29 MiB";
    assert_eq!(log_prefixes(nested), 2);
    let value =
        "2026-12-02T04:01:11.620039Z  INFO done (2.7 s): target 2026-12-02T04:01:10.333802986Z";
    assert_eq!(
        log_prefixes(value),
        1,
        "a timestamp as a value is no log line"
    );
    let twice = "error: node config /x: No such file or directory (os error 2): No such file or directory (os error 2)";
    assert!(repeated_cause(twice).is_some());
    assert!(problems("x: Some(3)\nstack backtrace:\n").len() == 2);
    assert!(problems(value).is_empty());
}

#[test]
fn the_demo_journey_logs_one_readable_sentence_per_line() {
    let state = TempStateDir::new();
    let dir = state.path().join("demo");
    let out = run(&["demo", "--state-dir", dir.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stderr}");
    assert!(
        stderr.lines().count() > 20 && stderr.contains("restore two new clusters"),
        "the demo's log is on stderr:\n{stderr}"
    );
    let found = problems(&stderr);
    assert!(
        found.is_empty(),
        "{}\n\nwhole log:\n{stderr}",
        found.join("\n")
    );
    assert!(
        stderr.lines().all(starts_with_timestamp),
        "every line is a log line:\n{stderr}"
    );
}

#[test]
fn a_failing_storage_retries_in_one_line_each_and_fails_in_one_line() {
    // A port nothing listens on (taken from the system, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("SHARDVAULT_STORAGE_PREFIX", "s3://bk/x".to_string()),
        ("SHARDVAULT_S3_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("SHARDVAULT_S3_PATH_STYLE", "true".to_string()),
        ("SHARDVAULT_S3_ACCESS_KEY_ID", "id".to_string()),
        ("SHARDVAULT_S3_SECRET_ACCESS_KEY", "secret".to_string()),
    ];
    let out = run(&["backups", "ls"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    let retries: Vec<&&str> = lines.iter().filter(|l| l.contains("retry ")).collect();
    assert_eq!(retries.len(), 4, "{stderr}");
    for (i, r) in retries.iter().enumerate() {
        assert!(r.contains(&format!("retry {} of 4", i + 1)), "{r}");
        assert!(r.contains("Connection refused"), "{r}");
    }
    assert_eq!(lines.len(), 5, "four retries and the error:\n{stderr}");
    assert!(
        lines[4].starts_with("error: storage list x/basebackups/ failed: "),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    let found = problems(&stderr);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
