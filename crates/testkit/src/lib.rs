//! Test helpers for shardvault: temporary PostgreSQL servers built on the runtime's
//! [`Instance`], and the path of the built `shardvault` binary.

pub mod btrfs;
pub mod cluster;
pub mod daemon;
pub mod guide;
pub mod manifests;

use std::path::{Path, PathBuf};

use shardvault_pg::config::NodeConfig;
use shardvault_pg::runtime::find_pg_bin;
use shardvault_pg::runtime::instance::{
    Instance, SUPERUSER, free_ports, postgres_alive, stop_pid_immediate_blocking,
};
use shardvault_pg::user;
use shardvault_storage::Destination;

/// PostgreSQL major the tests run against.
pub const PG_VERSION: &str = "15";

/// The built `target/debug/shardvault` (the test script builds it before the tests run).
pub fn shardvault_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/<profile>/deps/.
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("shardvault"));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    candidates.push(target.join("debug/shardvault"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("run cargo build --bins first: none of {candidates:?} exists"))
}

/// A temporary state directory the server user can write to; on drop every PostgreSQL server
/// whose data directory is below it is stopped (even when a test failed half-way), then it is
/// removed.
pub struct TempStateDir {
    dir: tempfile::TempDir,
}

impl TempStateDir {
    /// Creates the directory, owned by the server user.
    pub fn new() -> TempStateDir {
        TempStateDir::new_in(&std::env::temp_dir())
    }

    /// Creates the directory below `parent`, owned by the server user.
    pub fn new_in(parent: &Path) -> TempStateDir {
        let dir = tempfile::Builder::new()
            .prefix("sv-state-")
            .tempdir_in(parent)
            .expect("a temporary directory");
        user::chown_to_server_user(dir.path()).expect("chown of the temporary directory");
        TempStateDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TempStateDir {
    fn default() -> Self {
        TempStateDir::new()
    }
}

impl Drop for TempStateDir {
    fn drop(&mut self) {
        stop_servers_under(self.dir.path(), 8);
    }
}

/// Stops at once every running server with a `postmaster.pid` up to `depth` levels below `dir`.
pub(crate) fn stop_servers_under(dir: &Path, depth: usize) {
    let pidfile = dir.join("postmaster.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    if let Some(pid) = pid.filter(|pid| postgres_alive(*pid)) {
        stop_pid_immediate_blocking(pid);
    }
    if depth == 0 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            stop_servers_under(&path, depth - 1);
        }
    }
}

/// One real PostgreSQL primary in a temporary directory, stopped and removed on drop.
pub struct TempServer {
    instance: Instance,
    scratch: PathBuf,
    // Dropped after `Drop::drop` has stopped the server.
    tmp: tempfile::TempDir,
}

impl TempServer {
    /// Creates and starts a server with the runtime's base settings, `fsync=off`, and `extra_settings`.
    pub async fn start(extra_settings: &[(&str, &str)]) -> TempServer {
        let mut settings = vec![("fsync".to_string(), "off".to_string())];
        settings.extend(
            extra_settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let server = TempServer::new(settings);
        server
            .instance
            .initdb()
            .await
            .expect("initdb of a temporary server");
        server
            .instance
            .start()
            .await
            .expect("start of a temporary server");
        server
    }

    /// A streaming replica of this server (`pg_basebackup -R` with a physical slot), started.
    pub async fn start_replica(&self) -> TempServer {
        let replica = TempServer::new(self.instance.settings.clone());
        replica
            .instance
            .create_replica_of(&self.instance)
            .await
            .expect("pg_basebackup of a temporary replica");
        replica
            .instance
            .start()
            .await
            .expect("start of a temporary replica");
        replica
    }

    fn new(settings: Vec<(String, String)>) -> TempServer {
        let tmp = tempfile::Builder::new()
            .prefix("sv-pg-")
            .tempdir()
            .expect("a temporary directory");
        user::chown_to_server_user(tmp.path()).expect("chown of the temporary directory");
        let port = free_ports(1, &[]).expect("a free port")[0];
        let instance = Instance {
            name: format!("temp-{port}"),
            pg_bin: find_pg_bin(PG_VERSION).expect("PostgreSQL 15 (bash scripts/setup.sh)"),
            dir: tmp.path().join("pg"),
            socket_dir: tmp.path().to_path_buf(),
            port,
            settings,
        };
        let scratch = tmp.path().join("scratch");
        user::create_dir_all_for_server(&scratch).expect("the scratch directory");
        TempServer {
            instance,
            scratch,
            tmp,
        }
    }

    /// The runtime's description of this server.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.instance.pgdata()
    }

    /// The unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.instance.socket_dir
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// A scratch directory owned by the server user (e.g. for a restore target).
    pub fn dir(&self) -> &Path {
        &self.scratch
    }

    /// The temporary directory everything of this server lives in.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A libpq connection string for database `db`.
    pub fn conninfo(&self, db: &str) -> String {
        self.instance.conninfo(db)
    }

    /// A connected client on database `db` as the superuser.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        self.instance
            .connect(db)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.instance.name))
    }

    /// Stops the server (fast shutdown).
    pub async fn stop(&mut self) {
        self.instance
            .stop()
            .await
            .expect("stop of a temporary server");
    }

    /// Starts the server again after [`TempServer::stop`].
    pub async fn start_again(&mut self) {
        self.instance
            .start()
            .await
            .expect("restart of a temporary server");
    }

    /// A node config for this server with `destinations`.
    pub fn node_config(&self, destinations: Vec<Destination>) -> NodeConfig {
        NodeConfig {
            member: self.instance.name.clone(),
            pg_bin: self.instance.pg_bin.clone(),
            pgdata: self.pgdata(),
            host: self.instance.socket_dir.clone(),
            port: self.instance.port,
            user: SUPERUSER.to_string(),
            destinations,
            restore_source: None,
        }
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        self.instance.stop_immediate_blocking();
    }
}
