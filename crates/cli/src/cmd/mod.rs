//! One module per command family.

pub mod apply;
pub mod catalog;
pub mod child_events;
pub mod client;
pub mod console;
pub mod crds;
pub mod daemon;
pub mod delete;
pub mod demo;
pub mod describe;
pub mod error_chain;
pub mod get;
pub mod member_backups;
pub mod node;
pub mod operator;
pub mod progress_view;
pub mod psql;
pub mod repeats;
pub mod restore_points;
pub mod retention;
pub mod serve;
pub mod settings;
pub mod state_dir;
pub mod stdout;
pub mod verify;
pub mod wait;
pub mod wal;

/// Plain log lines on stderr, filtered by `SHARDVAULT_LOG` (default `info`), repeats held back;
/// a child of the daemon writes events for it instead.
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SHARDVAULT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,tokio_postgres=warn,opendal=error,kube_runtime=warn,kube_client=warn",
            )
        });
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let registry = tracing_subscriber::registry().with(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if shardvault_pg::node_events::is_child() {
        // Events for the parent to log once, under its own timestamp.
        registry.with(child_events::ChildEvents).try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let lines = lines
            .with_ansi(ansi)
            .with_filter(repeats::Repeats::default());
        registry.with(lines).try_init()
    };
}
