//! One module per command family.

pub mod apply;
pub mod catalog;
pub mod client;
pub mod daemon;
pub mod delete;
pub mod demo;
pub mod describe;
pub mod get;
pub mod node;
pub mod psql;
pub mod restore_points;
pub mod retention;
pub mod serve;
pub mod state_dir;
pub mod verify;
pub mod wait;
pub mod wal;

/// Plain log lines on stderr, filtered by `SHARDVAULT_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
