//! One PostgreSQL server on this host: initdb, settings, start and stop as the server user,
//! adoption of a running server, replicas made with `pg_basebackup`, free ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::RuntimeError;
use crate::statefile::{self, Owner};
use crate::user;

/// The database superuser every server is created with (and node work connects as).
pub const SUPERUSER: &str = "postgres";

/// How long a server may take to accept connections after `pg_ctl start`.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a fast shutdown may take before the server is stopped immediately.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings every server gets: replication, two-phase commit, small memory.
pub fn base_settings() -> Vec<(String, String)> {
    [
        ("wal_level", "replica"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("max_prepared_transactions", "20"),
        ("max_connections", "50"),
        ("hot_standby", "on"),
        ("shared_buffers", "16MB"),
        ("logging_collector", "off"),
        ("log_line_prefix", "%m [%p] "),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Settings that archive every WAL segment with `shardvault wal-push` and a member's node config.
pub fn archive_settings(shardvault_bin: &Path, node_config: &Path) -> Vec<(String, String)> {
    let command = format!(
        "{} wal-push %p --config {}",
        shell_quote(&shardvault_bin.to_string_lossy()),
        shell_quote(&node_config.to_string_lossy())
    );
    vec![
        ("archive_mode".to_string(), "on".to_string()),
        ("archive_command".to_string(), command),
    ]
}

/// One PostgreSQL server: where its files live, its port and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance name, e.g. `my-cluster-shard1-0`.
    pub name: String,
    /// Directory holding `postgres`, `pg_ctl`, `initdb`, `pg_basebackup`.
    pub pg_bin: PathBuf,
    /// Instance directory, owned by the server user: `data/` and `postgres.log` live here.
    pub dir: PathBuf,
    /// Directory of the server's unix socket.
    pub socket_dir: PathBuf,
    /// The server's port (it listens on the unix socket only).
    pub port: u16,
    /// Settings on top of [`base_settings`], later entries winning.
    pub settings: Vec<(String, String)>,
}

impl Instance {
    /// The data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file (outside the data directory, so backups do not carry it).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The physical replication slot name a replica of this name streams from.
    pub fn slot_name(&self) -> String {
        self.name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// A libpq connection string for database `db` of this server.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={db}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// True once the data directory was completely created (initdb, restore or base backup).
    pub fn is_bootstrapped(&self) -> bool {
        self.marker().is_file()
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("bootstrapped")
    }

    /// Records that the data directory is complete, so a later run never re-creates it.
    pub fn mark_bootstrapped(&self) -> Result<(), RuntimeError> {
        let marker = self.marker();
        statefile::write(&marker, b"", 0o600, Owner::ServerUser).map_err(RuntimeError::io(&marker))
    }

    /// Creates the instance and socket directories private to the server user (0700) and
    /// removes the leftovers of an earlier bootstrap that did not finish.
    pub fn prepare_dirs(&self) -> Result<(), RuntimeError> {
        for dir in [&self.dir, &self.socket_dir] {
            user::create_dir_all_for_server(dir).map_err(RuntimeError::io(dir))?;
            user::make_private_for_server(dir).map_err(RuntimeError::io(dir))?;
        }
        let pgdata = self.pgdata();
        if !self.is_bootstrapped() && pgdata.exists() {
            tracing::warn!(instance = %self.name, "removing the half-created data directory {}", pgdata.display());
            std::fs::remove_dir_all(&pgdata).map_err(RuntimeError::io(&pgdata))?;
        }
        Ok(())
    }

    /// On a filesystem that can snapshot, creates the (missing) data directory as a
    /// subvolume, so volume snapshots can be taken of it.
    async fn create_data_subvolume(&self) -> Result<(), RuntimeError> {
        if super::snapshot::can_snapshot(&self.dir) {
            super::snapshot::create_data_subvolume(&self.pgdata()).await?;
        }
        Ok(())
    }

    /// Creates the data directory with `initdb` as the server user (no connection trusted:
    /// [`Instance::write_settings`] writes the access rules before every start).
    pub async fn initdb(&self) -> Result<(), RuntimeError> {
        self.prepare_dirs()?;
        self.create_data_subvolume().await?;
        let mut cmd = user::command(self.pg_bin.join("initdb"));
        cmd.arg("-D")
            .arg(self.pgdata())
            .args(["-U", SUPERUSER, "--auth-local=peer", "--auth-host=reject"])
            .args(["--encoding=UTF8", "--locale=C", "--no-instructions"]);
        if self.fsync_off() {
            cmd.arg("--no-sync");
        }
        run(cmd, &format!("initdb of {}", self.name)).await?;
        self.mark_bootstrapped()
    }

    /// Makes this instance a streaming replica of `primary`: a physical slot on the primary,
    /// then `pg_basebackup -R -S <slot>` into this instance's data directory.
    pub async fn create_replica_of(&self, primary: &Instance) -> Result<(), RuntimeError> {
        self.prepare_dirs()?;
        self.create_data_subvolume().await?;
        let slot = self.slot_name();
        let client = primary.connect("postgres").await?;
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map_err(|source| RuntimeError::Sql {
                instance: primary.name.clone(),
                what: format!("creating replication slot {slot}"),
                cause: source,
            })?;
        let mut cmd = user::command(self.pg_bin.join("pg_basebackup"));
        cmd.arg("-D")
            .arg(self.pgdata())
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string(), "-U", SUPERUSER])
            .args(["-R", "-S", &slot, "-X", "stream", "-c", "fast"]);
        if self.fsync_off() {
            cmd.arg("--no-sync");
        }
        run(
            cmd,
            &format!("pg_basebackup of {} from {}", self.name, primary.name),
        )
        .await?;
        self.mark_bootstrapped()
    }

    fn fsync_off(&self) -> bool {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == "fsync")
            .is_some_and(|(_, v)| matches!(v.as_str(), "off" | "false" | "0"))
    }

    /// Writes `shardvault.conf` in the data directory (port, socket, base and own settings)
    /// and makes sure `postgresql.conf` includes it.
    pub fn write_settings(&self) -> Result<(), RuntimeError> {
        let pgdata = self.pgdata();
        let fixed = [
            ("port".to_string(), self.port.to_string()),
            (
                "unix_socket_directories".to_string(),
                self.socket_dir.to_string_lossy().into_owned(),
            ),
            ("unix_socket_permissions".to_string(), "0700".to_string()),
            ("listen_addresses".to_string(), String::new()),
        ];
        let mut text =
            String::from("# Written by the shardvault runtime on every start; edits are lost.\n");
        for (key, value) in fixed.iter().chain(&base_settings()).chain(&self.settings) {
            text.push_str(&format!("{key} = {}\n", conf_quote(value)));
        }
        let path = pgdata.join("shardvault.conf");
        statefile::write(&path, text.as_bytes(), 0o600, Owner::ServerUser)
            .map_err(RuntimeError::io(&path))?;

        let main = pgdata.join("postgresql.conf");
        let include = "include_if_exists = 'shardvault.conf'";
        let current = read_server_file(&main)?;
        if !current.lines().any(|l| l.trim() == include) {
            let text = format!("{current}\n{include}\n");
            statefile::write(&main, text.as_bytes(), 0o600, Owner::ServerUser)
                .map_err(RuntimeError::io(&main))?;
        }
        self.write_access()?;
        Ok(())
    }

    /// Who may connect, and where, given on the command line (`-c`), where nothing in the
    /// data directory overrides it: a restored `postgresql.auto.conf` could otherwise open
    /// the server to the network or point it at other access rules.
    fn pinned_options(&self) -> String {
        let pgdata = self.pgdata();
        [
            ("port", self.port.to_string()),
            ("listen_addresses", String::new()),
            (
                "unix_socket_directories",
                self.socket_dir.to_string_lossy().into_owned(),
            ),
            ("unix_socket_permissions", "0700".to_string()),
            (
                "hba_file",
                pgdata.join("pg_hba.conf").to_string_lossy().into_owned(),
            ),
            (
                "ident_file",
                pgdata.join("pg_ident.conf").to_string_lossy().into_owned(),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("-c {}", shell_quote(&format!("{k}={v}"))))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Writes `pg_hba.conf` and `pg_ident.conf` (see [`access_rules`]); true when they changed.
    fn write_access(&self) -> Result<bool, RuntimeError> {
        let pgdata = self.pgdata();
        let (hba, ident) = access_rules();
        let mut changed = false;
        for (name, text) in [("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
            let path = pgdata.join(name);
            if read_server_file(&path).ok().as_deref() != Some(text.as_str()) {
                statefile::write(&path, text.as_bytes(), 0o600, Owner::ServerUser)
                    .map_err(RuntimeError::io(&path))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Brings the access rules of a running server up to date (written, then reloaded), for
    /// servers adopted from an earlier run.
    pub async fn refresh_access(&self) -> Result<(), RuntimeError> {
        if self.write_access()? {
            let client = self.connect("postgres").await?;
            client
                .execute("SELECT pg_reload_conf()", &[])
                .await
                .map_err(|source| RuntimeError::Sql {
                    instance: self.name.clone(),
                    what: "reloading the access rules".to_string(),
                    cause: source,
                })?;
            tracing::info!(instance = %self.name, "access rules rewritten and reloaded");
        }
        Ok(())
    }

    /// The postmaster's pid when this server is running (read from `postmaster.pid`).
    pub fn running_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        postgres_alive(pid).then_some(pid)
    }

    /// Removes `postmaster.pid` and the socket lock file when the pid they name is no live
    /// server: a postmaster killed with -9 can linger as a zombie until it is reaped, and
    /// PostgreSQL would take it for a running server.
    fn remove_stale_lock_files(&self) -> Result<(), RuntimeError> {
        let socket_lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for lock in [self.pgdata().join("postmaster.pid"), socket_lock] {
            let Ok(text) = std::fs::read_to_string(&lock) else {
                continue;
            };
            let pid = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok());
            if !pid.is_some_and(postgres_alive) {
                tracing::info!(instance = %self.name, "removing stale lock file {}", lock.display());
                match std::fs::remove_file(&lock) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(RuntimeError::Io {
                            path: lock,
                            cause: e,
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Starts the server with `pg_ctl` as the server user and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), RuntimeError> {
        // A server killed with -9 leaves children that hold its shared memory for a moment.
        for attempt in 1.. {
            self.launch().await?;
            match self.wait_accepting(START_TIMEOUT).await {
                Err(RuntimeError::Server { ref tail, .. })
                    if attempt < 5 && tail.contains("pre-existing shared memory block") =>
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
        unreachable!("the start loop returns")
    }

    /// Runs `pg_ctl start` without waiting (settings are written first).
    pub async fn launch(&self) -> Result<(), RuntimeError> {
        self.write_settings()?;
        self.remove_stale_lock_files()?;
        let mut cmd = user::command(self.pg_bin.join("pg_ctl"));
        cmd.args(["start", "-W", "-s", "-D"])
            .arg(self.pgdata())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(self.pinned_options());
        run(cmd, &format!("pg_ctl start of {}", self.name)).await?;
        Ok(())
    }

    /// Waits until the server accepts connections; fails with the log tail if it exits or
    /// `timeout` passes.
    pub async fn wait_accepting(&self, timeout: Duration) -> Result<(), RuntimeError> {
        let started = Instant::now();
        loop {
            if self.try_connect("postgres").await.is_ok() {
                return Ok(());
            }
            self.check_alive(started)?;
            if started.elapsed() > timeout {
                return Err(self.server_error(format!(
                    "did not accept connections within {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until recovery has finished and the server is promoted (`pg_is_in_recovery()`
    /// false), resuming replay if it paused at its target; fails with the log tail if the
    /// server exits.
    pub async fn wait_promoted(&self) -> Result<(), RuntimeError> {
        self.wait_promoted_reporting(&|_, _| {}).await
    }

    /// [`Instance::wait_promoted`], telling `replayed` where recovery is on each look: the
    /// WAL position replayed and the commit time of the last transaction replayed.
    pub async fn wait_promoted_reporting(
        &self,
        replayed: &(dyn Fn(String, Option<String>) + Sync),
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut last_note = Instant::now();
        loop {
            if let Ok(client) = self.try_connect("postgres").await {
                let row = client
                    .query_one(
                        "SELECT pg_is_in_recovery(), \
                         CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END, \
                         pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text",
                        &[],
                    )
                    .await;
                if let Ok(row) = row {
                    if !row.get::<_, bool>(0) {
                        return Ok(());
                    }
                    if let Some(lsn) = row.get::<_, Option<String>>(2) {
                        replayed(lsn, row.get(3));
                    }
                    if row.get::<_, String>(1) == "paused" {
                        tracing::info!(instance = %self.name, "recovery paused at its target; resuming to promote");
                        let _ = client.execute("SELECT pg_wal_replay_resume()", &[]).await;
                    }
                }
            }
            self.check_alive(started)?;
            if last_note.elapsed() > Duration::from_secs(30) {
                tracing::info!(instance = %self.name, "still recovering ({}s)", started.elapsed().as_secs());
                last_note = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An error when the server has gone away (after a short grace for it to write its pid file).
    fn check_alive(&self, started: Instant) -> Result<(), RuntimeError> {
        if started.elapsed() > Duration::from_secs(2) && self.running_pid().is_none() {
            return Err(self.server_error("the server exited".to_string()));
        }
        Ok(())
    }

    fn server_error(&self, problem: String) -> RuntimeError {
        RuntimeError::Server {
            instance: self.name.clone(),
            problem,
            log: self.log_file(),
            tail: self.log_tail(20),
        }
    }

    /// The last `lines` lines of the server log (never read through a link).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = read_server_file(&self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server (fast shutdown, immediate after a minute); Ok when it is not running.
    pub async fn stop(&self) -> Result<(), RuntimeError> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        stop_pid(pid, STOP_TIMEOUT).await;
        Ok(())
    }

    /// Stops the server at once without waiting on a runtime (`pg_ctl stop -m immediate`), for Drop.
    pub fn stop_immediate_blocking(&self) {
        if let Some(pid) = self.running_pid() {
            stop_pid_immediate_blocking(pid);
        }
    }

    /// Connects to database `db` as the superuser.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, RuntimeError> {
        self.try_connect(db)
            .await
            .map_err(|source| RuntimeError::Sql {
                instance: self.name.clone(),
                what: format!("connecting to database {db} on port {}", self.port),
                cause: source,
            })
    }

    async fn try_connect(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5))
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// Stops the postmaster `pid`: fast shutdown, immediate after `timeout`, then SIGKILL.
pub async fn stop_pid(pid: i32, timeout: Duration) {
    use nix::sys::signal::Signal;
    for (sig, wait) in [
        (Signal::SIGINT, timeout),
        (Signal::SIGQUIT, Duration::from_secs(10)),
        (Signal::SIGKILL, Duration::from_secs(10)),
    ] {
        signal(pid, sig);
        let deadline = Instant::now() + wait;
        while postgres_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !postgres_alive(pid) {
            return;
        }
    }
}

/// Stops the postmaster `pid` at once (SIGQUIT, SIGKILL after 10s) and waits, without a runtime.
pub fn stop_pid_immediate_blocking(pid: i32) {
    signal(pid, nix::sys::signal::Signal::SIGQUIT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while postgres_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if postgres_alive(pid) {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// True when `pid` is a live (not zombie) PostgreSQL process.
pub fn postgres_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": comm may contain spaces, so split at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    comm.starts_with("postgres") && state != "Z" && state != "X"
}

/// `n` distinct ports free on this host right now, none of them in `taken`.
pub fn free_ports(n: usize, taken: &[u16]) -> std::io::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        if tries > 1000 {
            return Err(std::io::Error::other("no free port after 1000 tries"));
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        if !taken.contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// Runs `cmd` to completion, returning its stdout; a failure carries stdout and stderr.
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
) -> Result<String, RuntimeError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| RuntimeError::Spawn {
            program,
            cause: source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RuntimeError::Command {
            what: what.to_string(),
            status: output.status,
            output: format!("{}{}", stdout, stderr).trim().to_string(),
        });
    }
    Ok(stdout)
}

/// The access rules of every server: the database superuser only through `peer`
/// authentication from the OS users mapped in `pg_ident.conf` (root, the server user and
/// the user running shardvault), replication likewise; any other role by password
/// (scram-sha-256). Only local sockets exist (`listen_addresses` is empty) and their
/// directory is private to the server user.
pub fn access_rules() -> (String, String) {
    let header = "# Written by the shardvault runtime on every start; edits are lost.\n";
    let hba = format!(
        "{header}local all {SUPERUSER} peer map=shardvault\n\
         local replication {SUPERUSER} peer map=shardvault\n\
         local all all scram-sha-256\n"
    );
    let mut users = vec!["root".to_string(), user::SERVER_USER.to_string()];
    if let Some(me) = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .filter(|me| !users.contains(&me.name))
    {
        users.push(me.name);
    }
    let mut ident = header.to_string();
    for os_user in users {
        ident.push_str(&format!("shardvault {os_user} {SUPERUSER}\n"));
    }
    (hba, ident)
}

/// Reads a file in a directory the server user owns, never through a link.
fn read_server_file(path: &Path) -> Result<String, RuntimeError> {
    use std::io::Read;
    let mut text = String::new();
    statefile::open_nofollow(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(RuntimeError::io(path))?;
    Ok(text)
}

/// A value quoted for `postgresql.conf`.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A word quoted for `/bin/sh`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_command_quotes_paths_for_the_shell() {
        let s = archive_settings(
            Path::new("/opt/sv bin/shardvault"),
            Path::new("/x/it's.json"),
        );
        assert_eq!(
            s[1].1,
            r"'/opt/sv bin/shardvault' wal-push %p --config '/x/it'\''s.json'"
        );
        assert_eq!(
            conf_quote(&s[1].1),
            r"'''/opt/sv bin/shardvault'' wal-push %p --config ''/x/it''\\''''s.json'''"
        );
    }

    #[test]
    fn free_ports_are_distinct_and_avoid_taken_ones() {
        let first = free_ports(3, &[]).unwrap();
        let more = free_ports(3, &first).unwrap();
        let mut all = [first, more].concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn slot_names_are_valid_identifiers() {
        let i = Instance {
            name: "My-cluster-shard1-1".into(),
            pg_bin: PathBuf::new(),
            dir: PathBuf::new(),
            socket_dir: PathBuf::new(),
            port: 1,
            settings: vec![],
        };
        assert_eq!(i.slot_name(), "my_cluster_shard1_1");
    }
}
