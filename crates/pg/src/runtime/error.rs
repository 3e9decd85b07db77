//! The runtime's error type. A variant says its cause in its own message and does not also
//! return it from `source()`, so a printer of the chain says it once.

use std::path::PathBuf;

/// Why the local runtime could not create, start, stop or wire a PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or directory could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A program could not be run at all.
    #[error("could not run {program}: {cause}; check that it is installed and executable")]
    Spawn {
        program: PathBuf,
        cause: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// The requested PostgreSQL major version is not installed.
    #[error(
        "postgres.version {wanted:?} is not installed: no {wanted}/bin/postgres under /usr/lib/postgresql (found: {}); install postgresql-{wanted} or pick one of those",
        if found.is_empty() { "none".to_string() } else { found.join(", ") }
    )]
    VersionNotInstalled { wanted: String, found: Vec<String> },
    /// A `type: citus` cluster on a host without the citus extension.
    #[error(
        "type: citus needs the citus extension, but {control} does not exist; install the citus extension for PostgreSQL {major} (package postgresql-{major}-citus, or Citus Data's postgresql-{major}-citus-<version>) and apply again, or use type: ddp"
    )]
    CitusMissing { control: PathBuf, major: String },
    /// A server did not come up (or went away) in time.
    #[error("{instance}: {problem}; last lines of {log}:\n{tail}")]
    Server {
        instance: String,
        problem: String,
        log: PathBuf,
        tail: String,
    },
    /// A SQL statement failed.
    #[error("{instance}: {what}: {}", crate::sql_error::message(cause))]
    Sql {
        instance: String,
        what: String,
        cause: tokio_postgres::Error,
    },
    /// A runtime state file exists but cannot be understood.
    #[error(
        "{path}: {cause}; it is written by the shardvault runtime, remove the cluster and create it again"
    )]
    State {
        path: PathBuf,
        cause: serde_json::Error,
    },
    /// The cluster plan cannot be carried out as given.
    #[error("{0}")]
    Plan(String),
    /// Not enough free ports on this host.
    #[error("no free port for {instance}: {cause}")]
    NoPort {
        instance: String,
        cause: std::io::Error,
    },
    /// A volume snapshot could not be taken, cloned or deleted.
    #[error(transparent)]
    Snapshot(#[from] super::snapshot::SnapshotError),
    /// The node config file of a member could not be written.
    #[error(transparent)]
    NodeConfig(#[from] crate::config::ConfigError),
}

impl RuntimeError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io {
            path,
            cause: source,
        }
    }

    /// Wraps a SQL error of `instance`, which failed doing `what`.
    pub fn sql(
        instance: &str,
        what: &str,
    ) -> impl FnOnce(tokio_postgres::Error) -> RuntimeError + use<> {
        let (instance, what) = (instance.to_string(), what.to_string());
        move |cause| RuntimeError::Sql {
            instance,
            what,
            cause,
        }
    }
}
