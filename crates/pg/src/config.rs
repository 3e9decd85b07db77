//! The per-member config file the runtime writes and the engine, wal-push and wal-fetch read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shardvault_storage::Destination;

/// Everything node work needs to know about one member cluster (mode 0600 on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Member name, e.g. `my-cluster-shard0`.
    pub member: String,
    /// Directory holding `postgres`, `pg_ctl`, `initdb`, ...
    pub pg_bin: PathBuf,
    /// The data directory of the instance node work acts on.
    pub pgdata: PathBuf,
    /// Unix socket directory of that instance.
    pub host: PathBuf,
    /// Port of that instance.
    pub port: u16,
    /// Database user node work connects as.
    pub user: String,
    /// Where WAL is pushed (every entry) and backups go (the first, unless told otherwise).
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Where wal-fetch reads WAL from while this member is being restored.
    #[serde(default)]
    pub restore_source: Option<Destination>,
}

/// Failure to read or write a node config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("node config {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not a valid node config.
    #[error(
        "node config {path}: {cause}; it is written by the shardvault runtime, rewrite it with the cluster's spec"
    )]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

impl NodeConfig {
    /// Reads a node config file (never through a link: it lives where the server user writes).
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        use std::io::Read;
        let mut text = Vec::new();
        crate::statefile::open_nofollow(path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(|source| ConfigError::Io {
                path: path.into(),
                cause: source,
            })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            cause: source,
        })
    }

    /// Writes the file atomically with mode 0600, owned by the server user when we are root.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let bytes = serde_json::to_vec_pretty(self).expect("config serializes");
        crate::statefile::write(path, &bytes, 0o600, crate::statefile::Owner::ServerUser).map_err(
            |source| ConfigError::Io {
                path: path.into(),
                cause: source,
            },
        )
    }

    /// A libpq connection string for the instance.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host.display(),
            self.port,
            self.user,
            dbname
        )
    }
}
