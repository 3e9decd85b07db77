//! A sharded cluster on this host: a plain plan and an idempotent reconcile that creates,
//! starts, adopts and wires its servers, and a destroy that removes them.
//!
//! Layout under the plan's `dir` (ours, 0711: the server user passes through but cannot
//! change what we read back): `ports.json` (ports, allocated once) and `observed.json` (what
//! the last reconcile saw), both ours (0600; observed 0640, group of the server user); `sock/` (every server's unix socket, private
//! to the server user), `<member>/node.json` (the member's node config, 0600) and
//! `<member>/<member>-<i>/` (instance `i`: `data/`, `postgres.log`), private to the server user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use shardvault_storage::Destination;
use tokio::io::AsyncBufReadExt;

use super::archiver::{self, ArchiveState};
use super::error::RuntimeError;
use super::instance::{self, Instance, SUPERUSER};
use super::restore_board::{RestoreBoard, RestoreProgress};
use super::{isolation, pgbin, snapshot, wiring};
use crate::config::NodeConfig;
use crate::node_events::{self, ProgressSink, Relay};
use crate::statefile::{self, Owner};
use crate::user;

/// How a sharded cluster distributes its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharding {
    /// Plain PostgreSQL: postgres_fdw foreign servers and hash-partitioned tables.
    Ddp,
    /// The citus extension.
    Citus,
}

/// What a sharded cluster should look like on this host.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// The cluster's directory, `<state>/clusters/<ns>/<name>`.
    pub dir: PathBuf,
    /// Directory of the PostgreSQL binaries (see [`find_pg_bin`](super::find_pg_bin)).
    pub pg_bin: PathBuf,
    /// The `shardvault` binary `archive_command` and restores run.
    pub shardvault_bin: PathBuf,
    /// The database created on every member.
    pub database: String,
    /// How tables are distributed.
    pub sharding: Sharding,
    /// Member clusters, coordinator first.
    pub members: Vec<MemberPlan>,
    /// Extra server settings for every instance (later ones win).
    pub extra_settings: Vec<(String, String)>,
    /// Where the volume snapshots members are cloned from are kept.
    pub snapshots_dir: PathBuf,
    /// Where the restores of members stand, for the controller to show.
    pub restores: RestoreBoard,
}

/// One member cluster: a primary and its streaming replicas.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    /// Member name, `<name>-coord` or `<name>-shard<i>`.
    pub name: String,
    /// Number of servers: one primary, the rest replicas.
    pub instances: u32,
    /// Where WAL is archived and backups go (written into the member's node config).
    pub destinations: Vec<Destination>,
    /// How the primary's data directory is first created.
    pub bootstrap: Bootstrap,
}

/// How a member's primary is first created.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per member in a plan; boxing would only make plans clumsier to build"
)]
pub enum Bootstrap {
    /// An empty cluster made by initdb.
    Initdb,
    /// Restored from a backup with `shardvault node restore`, then promoted.
    Restore {
        /// Where the backup and its WAL are.
        source: Destination,
        /// The backup's name in that storage.
        backup: String,
        /// Where recovery stops.
        target: RecoveryTarget,
        /// Parallel downloads.
        concurrency: usize,
    },
    /// Cloned from the volume snapshot of a snapshot backup (no data copied), then
    /// recovered with WAL from `source` and promoted.
    CloneSnapshot {
        /// Where the backup's label and its WAL are.
        source: Destination,
        /// The backup's name in that storage.
        backup: String,
        /// The snapshot's name in the runtime.
        snapshot: String,
        /// Where recovery stops.
        target: RecoveryTarget,
    },
    /// Created earlier (restored, so never made again): a primary whose data directory is
    /// missing is an error, never an empty cluster in its place.
    Existing {
        /// How it was first made, for the error (e.g. "restored from backup b1").
        origin: String,
    },
}

/// Where recovery of a restored member stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// As soon as the backup is consistent.
    Immediate,
    /// At a named restore point.
    Name(String),
    /// At a time (RFC 3339), including or excluding transactions committed exactly then.
    Time {
        /// RFC 3339 timestamp.
        time: String,
        /// Whether transactions committed at `time` are kept.
        inclusive: bool,
    },
    /// At the end of the archived WAL.
    Latest,
}

impl RecoveryTarget {
    /// The `shardvault node restore` flags for this target.
    pub fn flags(&self) -> Vec<String> {
        match self {
            RecoveryTarget::Immediate => vec!["--target-immediate".into()],
            RecoveryTarget::Name(name) => vec!["--target-name".into(), name.clone()],
            RecoveryTarget::Time { time, inclusive } => {
                let mut flags = vec!["--target-time".into(), time.clone()];
                if !inclusive {
                    flags.push("--target-exclusive".into());
                }
                flags
            }
            RecoveryTarget::Latest => vec!["--target-latest".into()],
        }
    }
}

/// The role of an instance in its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes writes.
    Primary,
    /// Streams from the primary.
    Replica,
}

/// What an instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Running (and, for a replica, streaming).
    Running,
    /// Running but not yet streaming, or waiting for its primary.
    Pending,
    /// Could not be created or started; see the reason.
    Failed,
}

/// One instance as the last reconcile saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceObserved {
    /// Instance name, `<member>-<i>`.
    pub name: String,
    /// Primary or replica.
    pub role: Role,
    /// The port (unix socket in the cluster's socket dir).
    pub port: u16,
    /// Running, pending or failed.
    pub state: InstanceState,
    /// Why it is not running, if so.
    pub reason: Option<String>,
    /// The data directory.
    pub pgdata: PathBuf,
}

/// One member as the last reconcile saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberObserved {
    /// Member name.
    pub name: String,
    /// The member's node config file (for wal-push, backups and restores).
    pub node_config: PathBuf,
    /// Primary first.
    pub instances: Vec<InstanceObserved>,
    /// The primary's WAL archiving, when it answered.
    #[serde(default)]
    pub archiving: Option<ArchiveState>,
}

/// What reconcile found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterObserved {
    /// Cluster name.
    pub name: String,
    /// Directory of the PostgreSQL binaries.
    pub pg_bin: PathBuf,
    /// Unix socket directory of every server.
    pub socket_dir: PathBuf,
    /// The database on every member.
    pub database: String,
    /// Coordinator first.
    pub members: Vec<MemberObserved>,
    /// Problem with the sharding wiring, if any.
    pub wiring_error: Option<String>,
    /// What this reconcile changed, one sentence each (empty when everything was in place).
    pub actions: Vec<String>,
}

impl ClusterObserved {
    /// True when every instance runs (replicas streaming) and the wiring is in place.
    pub fn ready(&self) -> bool {
        self.wiring_error.is_none()
            && self
                .members
                .iter()
                .flat_map(|m| &m.instances)
                .all(|i| i.state == InstanceState::Running)
    }

    /// Reads `observed.json` that the last reconcile wrote in cluster directory `dir`, only
    /// when nobody else can have changed it (see [`statefile::read_trusted`]).
    pub fn load(dir: &Path) -> Result<ClusterObserved, RuntimeError> {
        let path = dir.join(OBSERVED_FILE);
        let text = statefile::read_trusted(&path).map_err(RuntimeError::io(&path))?;
        serde_json::from_slice(&text).map_err(|source| RuntimeError::State {
            path,
            cause: source,
        })
    }

    /// A libpq connection string for the primary of member `index` (0 = coordinator).
    pub fn primary_conninfo(&self, index: usize) -> Option<String> {
        let primary = self.members.get(index)?.instances.first()?;
        Some(format!(
            "host={} port={} user={SUPERUSER} dbname={}",
            self.socket_dir.display(),
            primary.port,
            self.database
        ))
    }
}

const PORTS_FILE: &str = "ports.json";
const OBSERVED_FILE: &str = "observed.json";

/// Longest unix socket path the kernel takes (`sun_path` less the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How long a running replica may take to accept connections before it is started again.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a new replica may take to start streaming before it is reported pending.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates what is missing (primary by initdb or restore, then replicas), starts what is
/// stopped (adopting servers that run), creates `database` on every member and wires the
/// sharding. Errors are for the plan as a whole; a member that fails is reported in the
/// result with its reason.
pub async fn reconcile(plan: &ClusterPlan) -> Result<ClusterObserved, RuntimeError> {
    check_plan(plan)?;
    let layout = Layout::prepare(plan)?;
    let mut observed = ClusterObserved {
        name: plan.name.clone(),
        pg_bin: plan.pg_bin.clone(),
        socket_dir: layout.socket_dir.clone(),
        database: plan.database.clone(),
        members: Vec::new(),
        wiring_error: None,
        actions: Vec::new(),
    };

    // Primaries first, all members at once.
    let targets: Vec<&Instance> = layout.members.iter().map(|m| &m[0]).collect();
    let primaries = join_all(
        plan.members
            .iter()
            .enumerate()
            .map(|(index, member)| ensure_primary(plan, member, index, &targets)),
    )
    .await;

    // Then every replica of a primary that is up, all at once.
    let mut replica_jobs = Vec::new();
    for (m, result) in primaries.iter().enumerate() {
        if result.is_ok() {
            let instances = &layout.members[m];
            for replica in &instances[1..] {
                replica_jobs.push(ensure_replica(replica, &instances[0]));
            }
        }
    }
    let mut replicas = join_all(replica_jobs).await.into_iter();

    for ((member, instances), primary) in plan.members.iter().zip(&layout.members).zip(&primaries) {
        let mut seen = Vec::new();
        match primary {
            Ok(actions) => {
                observed.actions.extend(actions.iter().cloned());
                seen.push(observe(
                    &instances[0],
                    Role::Primary,
                    Ok(InstanceState::Running),
                ));
                for replica in &instances[1..] {
                    let (actions, state) = replicas.next().expect("one result per replica");
                    observed.actions.extend(actions);
                    seen.push(observe(replica, Role::Replica, state));
                }
            }
            Err(err) => {
                seen.push(observe(&instances[0], Role::Primary, Err(err.to_string())));
                for replica in &instances[1..] {
                    seen.push(observe(
                        replica,
                        Role::Replica,
                        Err(format!("waiting for primary {}", instances[0].name)),
                    ));
                }
            }
        }
        observed.members.push(MemberObserved {
            name: member.name.clone(),
            node_config: layout.node_config(&member.name),
            instances: seen,
            archiving: None,
        });
    }
    let archiving = join_all(layout.members.iter().zip(&primaries).map(
        |(instances, up)| async move {
            match up {
                Ok(_) => archiver::observe(&instances[0]).await.ok(),
                Err(_) => None,
            }
        },
    ))
    .await;
    for (member, state) in observed.members.iter_mut().zip(archiving) {
        member.archiving = state;
    }

    if primaries.iter().all(Result::is_ok) {
        let coordinator = &layout.members[0][0];
        let shards: Vec<&Instance> = layout.members[1..].iter().map(|m| &m[0]).collect();
        let wired = match end_isolation(plan, &layout).await {
            Ok(actions) => {
                observed.actions.extend(actions);
                match plan.sharding {
                    Sharding::Ddp => wiring::wire_ddp(coordinator, &shards, &plan.database).await,
                    Sharding::Citus => {
                        wiring::wire_citus(coordinator, &shards, &plan.database).await
                    }
                }
            }
            Err(e) => Err(e),
        };
        match wired {
            Ok(actions) => observed.actions.extend(actions),
            Err(err) => observed.wiring_error = Some(err.to_string()),
        }
    } else {
        observed.wiring_error = Some("not every member primary is running".to_string());
    }

    let path = plan.dir.join(OBSERVED_FILE);
    let text = serde_json::to_vec_pretty(&observed).expect("observed state serializes");
    // Readable by the server user too, so `shardvault psql` works as `postgres`.
    statefile::write(&path, &text, 0o640, Owner::UsWithServerGroup)
        .map_err(RuntimeError::io(&path))?;
    for action in &observed.actions {
        tracing::info!(cluster = %plan.name, "{action}");
    }
    Ok(observed)
}

/// Stops every server of the cluster in `plan_dir`, then removes its data, sockets and ports.
pub async fn destroy(plan_dir: &Path) -> Result<(), RuntimeError> {
    if !plan_dir.exists() {
        return Ok(());
    }
    let mut pids = Vec::new();
    for member in read_dirs(plan_dir)? {
        for dir in read_dirs(&member)? {
            let pidfile = dir.join("data/postmaster.pid");
            let pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| instance::postgres_alive(*p)) {
                pids.push(pid);
            }
        }
    }
    join_all(
        pids.into_iter()
            .map(|pid| instance::stop_pid(pid, Duration::from_secs(30))),
    )
    .await;
    let sockets = socket_dir_for(plan_dir);
    if !sockets.starts_with(plan_dir) && sockets.exists() {
        std::fs::remove_dir_all(&sockets).map_err(RuntimeError::io(&sockets))?;
    }
    // A WAL prefetcher (`wal-fetch`) started by a stopped server may still be writing into
    // its data directory for a moment: retry while the tree is not empty.
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(plan_dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(RuntimeError::io(plan_dir)(e)),
        }
    }
}

/// `<dir>/sock`, or `/tmp/shardvault-<hash of dir>` when socket paths there would be longer
/// than the kernel allows.
fn socket_dir_for(dir: &Path) -> PathBuf {
    let local = dir.join("sock");
    if local.join(".s.PGSQL.65535.lock").as_os_str().len() <= MAX_SOCKET_PATH {
        return local;
    }
    // FNV-1a: stable across builds, so every run finds the same directory.
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    PathBuf::from(format!("/tmp/shardvault-{hash:016x}"))
}

/// Fails unless the socket directory is a real directory of the server user (one planted
/// in `/tmp` by someone else would hand them every server's socket), then makes it 0700.
fn check_socket_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(RuntimeError::io(dir))?;
    let owner = user::server_ids().map_or(nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
    if meta.file_type().is_symlink() || !meta.is_dir() || meta.uid() != owner {
        return Err(RuntimeError::Plan(format!(
            "socket directory {} is not a directory of uid {owner} (it is owned by uid {}): \
             someone else created it; remove it and reconcile again",
            dir.display(),
            meta.uid()
        )));
    }
    user::make_private_for_server(dir).map_err(RuntimeError::io(dir))
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let entries = std::fs::read_dir(dir).map_err(RuntimeError::io(dir))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect())
}

fn check_plan(plan: &ClusterPlan) -> Result<(), RuntimeError> {
    if !plan.pg_bin.join("postgres").is_file() {
        return Err(RuntimeError::VersionNotInstalled {
            wanted: pgbin::major_of(&plan.pg_bin),
            found: pgbin::installed_versions(),
        });
    }
    if plan.sharding == Sharding::Citus {
        pgbin::require_citus(&plan.pg_bin)?;
    }
    if plan.members.len() < 2 {
        return Err(RuntimeError::Plan(format!(
            "cluster {} has {} member(s); it needs a coordinator and at least one shard",
            plan.name,
            plan.members.len()
        )));
    }
    if let Some(m) = plan.members.iter().find(|m| m.instances == 0) {
        return Err(RuntimeError::Plan(format!(
            "member {} has 0 instances; it needs at least 1",
            m.name
        )));
    }
    Ok(())
}

/// Every instance of the plan with its port, and the directories they live in.
struct Layout {
    dir: PathBuf,
    socket_dir: PathBuf,
    /// Per member, primary first.
    members: Vec<Vec<Instance>>,
    /// Per member, the settings of its servers when not isolated.
    settings: Vec<Vec<(String, String)>>,
}

impl Layout {
    /// Creates the cluster directories, allocates missing ports and writes node configs.
    fn prepare(plan: &ClusterPlan) -> Result<Layout, RuntimeError> {
        let socket_dir = socket_dir_for(&plan.dir);
        // `<state>/clusters/<ns>/<name>`: the last two ours, so neither can be swapped for a
        // link (the daemon takes `<state>/clusters` when it starts).
        for dir in plan
            .dir
            .ancestors()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            statefile::create_own_dir(dir, 0o711).map_err(RuntimeError::io(dir))?;
        }
        user::create_dir_all_for_server(&socket_dir).map_err(RuntimeError::io(&socket_dir))?;
        check_socket_dir(&socket_dir)?;
        let ports = allocate_ports(plan)?;
        let mut layout = Layout {
            dir: plan.dir.clone(),
            socket_dir,
            members: Vec::new(),
            settings: Vec::new(),
        };
        for member in &plan.members {
            let member_dir = plan.dir.join(&member.name);
            user::create_dir_all_for_server(&member_dir).map_err(RuntimeError::io(&member_dir))?;
            user::make_private_for_server(&member_dir).map_err(RuntimeError::io(&member_dir))?;
            let node_config = layout.node_config(&member.name);
            // Without a destination, WAL would pile up behind an archive_command that
            // cannot succeed: such a member does not archive.
            let mut settings = if member.destinations.is_empty() {
                Vec::new()
            } else {
                instance::archive_settings(&plan.shardvault_bin, &node_config)
            };
            if plan.sharding == Sharding::Citus {
                settings.push(("shared_preload_libraries".into(), "citus".into()));
            }
            settings.extend(plan.extra_settings.iter().cloned());
            let mut instances: Vec<Instance> = instance_names(member)
                .map(|name| Instance {
                    port: ports[&name],
                    dir: member_dir.join(&name),
                    name,
                    pg_bin: plan.pg_bin.clone(),
                    socket_dir: layout.socket_dir.clone(),
                    settings: settings.clone(),
                })
                .collect();
            let to_restore = matches!(
                member.bootstrap,
                Bootstrap::Restore { .. } | Bootstrap::CloneSnapshot { .. }
            ) && !instances[0].is_bootstrapped();
            if to_restore || isolation::is_isolated(&instances[0].dir) {
                instances[0]
                    .settings
                    .extend(isolation::settings(plan.sharding));
            }
            layout.settings.push(settings);
            let primary = &instances[0];
            NodeConfig {
                member: member.name.clone(),
                pg_bin: plan.pg_bin.clone(),
                pgdata: primary.pgdata(),
                host: layout.socket_dir.clone(),
                port: primary.port,
                user: SUPERUSER.to_string(),
                destinations: member.destinations.clone(),
                restore_source: match &member.bootstrap {
                    Bootstrap::Initdb | Bootstrap::Existing { .. } => None,
                    Bootstrap::Restore { source, .. } | Bootstrap::CloneSnapshot { source, .. } => {
                        Some(source.clone())
                    }
                },
            }
            .save(&node_config)?;
            layout.members.push(instances);
        }
        Ok(layout)
    }

    fn node_config(&self, member: &str) -> PathBuf {
        self.dir.join(member).join("node.json")
    }
}

fn instance_names(member: &MemberPlan) -> impl Iterator<Item = String> + '_ {
    (0..member.instances).map(move |i| format!("{}-{i}", member.name))
}

/// Loads `ports.json`, gives a free port to every instance without one, and saves it.
fn allocate_ports(plan: &ClusterPlan) -> Result<BTreeMap<String, u16>, RuntimeError> {
    let path = plan.dir.join(PORTS_FILE);
    let mut ports: BTreeMap<String, u16> = match statefile::read_trusted(&path) {
        Ok(text) => serde_json::from_slice(&text).map_err(|source| RuntimeError::State {
            path: path.clone(),
            cause: source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(source) => {
            return Err(RuntimeError::Io {
                path,
                cause: source,
            });
        }
    };
    let missing: Vec<String> = plan
        .members
        .iter()
        .flat_map(instance_names)
        .filter(|name| !ports.contains_key(name))
        .collect();
    if missing.is_empty() {
        return Ok(ports);
    }
    let taken: Vec<u16> = ports.values().copied().collect();
    let free =
        instance::free_ports(missing.len(), &taken).map_err(|source| RuntimeError::NoPort {
            instance: missing[0].clone(),
            cause: source,
        })?;
    ports.extend(missing.into_iter().zip(free));
    let text = serde_json::to_vec_pretty(&ports).expect("ports serialize");
    statefile::write(&path, &text, 0o600, Owner::Us).map_err(RuntimeError::io(&path))?;
    Ok(ports)
}

/// Makes the member's primary run (created, restored, started or adopted), promoted, with
/// `database`; returns what it did.
async fn ensure_primary(
    plan: &ClusterPlan,
    member: &MemberPlan,
    index: usize,
    primaries: &[&Instance],
) -> Result<Vec<String>, RuntimeError> {
    let primary = primaries[index];
    let mut actions = Vec::new();
    // A running server is adopted; one that dies while we look (kill -9 a moment ago) is
    // brought up like a stopped one.
    let adopted = primary.running_pid().is_some() && primary.wait_promoted().await.is_ok();
    if adopted {
        primary.refresh_access().await?;
        if let Some(wanted) = archive_mode_change(primary).await? {
            // archive_mode takes effect at start only.
            primary.stop().await?;
            primary.start().await?;
            actions.push(format!(
                "restarted {} to turn WAL archiving {wanted}",
                primary.name
            ));
        }
    } else {
        if primary.is_bootstrapped() {
            primary.start().await?;
            actions.push(format!("restarted {} (it had stopped)", primary.name));
        } else {
            match &member.bootstrap {
                Bootstrap::Initdb => {
                    primary.initdb().await?;
                    primary.start().await?;
                    actions.push(format!("created {} (initdb)", primary.name));
                }
                Bootstrap::Existing { origin } => {
                    return Err(RuntimeError::Plan(format!(
                        "the data directory of {} is missing; the member was {origin} and is \
                         never re-created empty: delete the cluster and restore it again",
                        primary.name
                    )));
                }
                Bootstrap::Restore { .. } | Bootstrap::CloneSnapshot { .. } => {
                    let (backup, target) = restore(plan, member, primary).await?;
                    // Recovery may take long: wait_promoted waits as long as the server lives.
                    primary.launch().await?;
                    let board = &plan.restores;
                    let replayed = primary
                        .wait_promoted_reporting(&|lsn, time| {
                            board.set(&member.name, RestoreProgress::Replaying { lsn, time })
                        })
                        .await;
                    board.clear(&member.name);
                    replayed?;
                    actions.push(format!(
                        "restored {} from backup {backup} ({})",
                        primary.name,
                        target.flags().join(" ")
                    ));
                    if matches!(target, RecoveryTarget::Name(_)) {
                        actions.extend(rollback_read_only_prepared(primary).await?);
                    }
                }
            }
        }
        primary.wait_promoted().await?;
    }
    if isolation::is_isolated(&primary.dir) {
        actions.extend(isolation::repoint(plan.sharding, index, primaries, &plan.database).await?);
    }
    forget_recovery_settings(primary).await?;
    if ensure_database(primary, &plan.database).await? {
        actions.push(format!(
            "created database {} on {}",
            plan.database, member.name
        ));
    }
    Ok(actions)
}

/// Runs `shardvault node restore` as the server user into the primary's data directory
/// (for a snapshot backup, into the clone of its snapshot made first), logging its output
/// as it goes; returns the backup and target restored.
async fn restore<'a>(
    plan: &ClusterPlan,
    member: &'a MemberPlan,
    primary: &Instance,
) -> Result<(&'a str, &'a RecoveryTarget), RuntimeError> {
    primary.prepare_dirs()?;
    let node_config = plan.dir.join(&member.name).join("node.json");
    let mut cmd = user::command(&plan.shardvault_bin);
    user::die_with_parent(&mut cmd);
    node_events::mark(&mut cmd);
    cmd.args(["node", "restore", "--config"]).arg(&node_config);
    let (backup, target) = match &member.bootstrap {
        Bootstrap::Restore {
            backup,
            target,
            concurrency,
            ..
        } => {
            cmd.args(["--backup", backup, "--pgdata"])
                .arg(primary.pgdata())
                // Never where a (possibly crafted) manifest says: inside the instance directory.
                .arg("--tablespace-dir")
                .arg(primary.dir.join("tablespaces"))
                .args(["--concurrency", &(*concurrency).max(1).to_string()]);
            (backup, target)
        }
        Bootstrap::CloneSnapshot {
            backup,
            snapshot,
            target,
            ..
        } => {
            let from = plan.snapshots_dir.join(snapshot);
            if !from.exists() {
                return Err(RuntimeError::Plan(format!(
                    "the volume snapshot {snapshot} of backup {backup} is not on this host \
                     (deleted, or taken elsewhere): restore from another backup"
                )));
            }
            snapshot::clone_writable(&from, &primary.dir, "data")?;
            cmd.args(["--backup", backup, "--snapshot-clone", "--pgdata"])
                .arg(primary.pgdata());
            (backup, target)
        }
        Bootstrap::Initdb | Bootstrap::Existing { .. } => {
            return Err(RuntimeError::Plan(format!(
                "member {} is not restored from a backup",
                member.name
            )));
        }
    };
    cmd.args(target.flags())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let spawn_err = |source| RuntimeError::Spawn {
        program: plan.shardvault_bin.clone(),
        cause: source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let board = plan.restores.clone();
    let member_name = member.name.clone();
    let copying: ProgressSink =
        Arc::new(move |p| board.set(&member_name, RestoreProgress::Copying(p)));
    let mut output = Relay::new(&primary.name, None);
    let mut events = Relay::new(&primary.name, Some(copying));
    tokio::join!(
        relay_lines(&mut output, child.stdout.take()),
        relay_lines(&mut events, child.stderr.take()),
    );
    let status = child.wait().await.map_err(spawn_err)?;
    if !status.success() {
        plan.restores.clear(&member.name);
        // What a failed restore wrote is no member: nothing may take it for one.
        primary.prepare_dirs()?;
        return Err(RuntimeError::Command {
            what: format!(
                "shardvault node restore of {} from backup {backup}",
                primary.name
            ),
            status,
            output: events.failure(),
        });
    }
    isolation::mark(&primary.dir)?;
    primary.mark_bootstrapped()?;
    Ok((backup, target))
}

/// Recovery settings a restore leaves in `postgresql.auto.conf` (the last two come with a
/// backup taken from a replica).
const RECOVERY_SETTINGS: [&str; 10] = [
    "restore_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_action",
    "primary_conninfo",
    "primary_slot_name",
];

/// Rolls back the two-phase transactions left prepared at a cluster-wide restore point that
/// only read (they hold no lock but AccessShareLock): a read-only participant of a
/// distributed transaction holds nothing the write barrier waits for, and left prepared it
/// would block vacuum forever. It changed nothing, so rolling it back loses nothing.
/// Prepared transactions that wrote are left alone.
async fn rollback_read_only_prepared(primary: &Instance) -> Result<Vec<String>, RuntimeError> {
    let sql_err = |what: &str| RuntimeError::sql(&primary.name, what);
    let client = primary.connect("postgres").await?;
    let rows = client
        .query(
            "SELECT p.gid, p.database FROM pg_prepared_xacts p \
             WHERE NOT EXISTS (SELECT 1 FROM pg_locks l \
                 WHERE l.virtualtransaction = '-1/' || p.transaction::text \
                   AND l.locktype NOT IN ('transactionid', 'virtualxid') \
                   AND l.mode <> 'AccessShareLock')",
            &[],
        )
        .await
        .map_err(sql_err("listing prepared transactions"))?;
    let mut actions = Vec::new();
    for row in rows {
        let (gid, database): (String, String) = (row.get(0), row.get(1));
        let db = primary.connect(&database).await?;
        let escaped = gid.replace('\'', "''");
        db.batch_execute(&format!("ROLLBACK PREPARED '{escaped}'"))
            .await
            .map_err(sql_err("rolling back a read-only prepared transaction"))?;
        actions.push(format!(
            "rolled back read-only prepared transaction {gid:?} on {} (it changed nothing)",
            primary.name
        ));
    }
    Ok(actions)
}

/// Once every member primary runs: resolves what citus, or for ddp a restore to a time, left
/// in doubt on the restored members, then releases every isolated primary (see
/// [`isolation`]). Returns what it did.
async fn end_isolation(plan: &ClusterPlan, layout: &Layout) -> Result<Vec<String>, RuntimeError> {
    let isolated: Vec<usize> = (0..layout.members.len())
        .filter(|m| isolation::is_isolated(&layout.members[*m][0].dir))
        .collect();
    if isolated.is_empty() {
        return Ok(Vec::new());
    }
    let primaries: Vec<&Instance> = layout.members.iter().map(|m| &m[0]).collect();
    let mut actions = Vec::new();
    if plan.sharding == Sharding::Citus {
        actions.extend(isolation::resolve_in_doubt(&primaries, &plan.database).await?);
    } else if let Some(time) = isolated
        .iter()
        .find_map(|m| match &plan.members[*m].bootstrap {
            Bootstrap::Restore { target, .. } | Bootstrap::CloneSnapshot { target, .. } => {
                match target {
                    RecoveryTarget::Time { time, .. } => Some(time.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
    {
        actions.extend(isolation::roll_back_prepared_after(&primaries, &time).await?);
    }
    for m in isolated {
        let released = Instance {
            settings: layout.settings[m].clone(),
            ..layout.members[m][0].clone()
        };
        isolation::release(&released).await?;
        actions.push(format!(
            "released {} from isolation (its links name the restored members only)",
            released.name
        ));
    }
    Ok(actions)
}

/// `Some("on" | "off")` when the running primary's `archive_mode` differs from its settings.
async fn archive_mode_change(primary: &Instance) -> Result<Option<&'static str>, RuntimeError> {
    let wanted = if primary
        .settings
        .iter()
        .any(|(k, v)| k == "archive_mode" && v == "on")
    {
        "on"
    } else {
        "off"
    };
    let current: String = primary
        .connect("postgres")
        .await?
        .query_one("SELECT current_setting('archive_mode')", &[])
        .await
        .map_err(|source| RuntimeError::Sql {
            instance: primary.name.clone(),
            what: "reading archive_mode".to_string(),
            cause: source,
        })?
        .get(0);
    Ok((current != wanted).then_some(wanted))
}

/// Removes a restore's recovery settings from a promoted primary (`ALTER SYSTEM RESET`), so
/// replicas copied from it do not stop at the old target and promote themselves.
async fn forget_recovery_settings(primary: &Instance) -> Result<(), RuntimeError> {
    let auto = primary.pgdata().join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto).map_err(RuntimeError::io(&auto))?;
    let present: Vec<&str> = RECOVERY_SETTINGS
        .into_iter()
        .filter(|key| {
            text.lines()
                .any(|l| l.split('=').next().is_some_and(|k| k.trim() == *key))
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let client = primary.connect("postgres").await?;
    for key in present {
        // One statement per query: ALTER SYSTEM refuses multi-statement strings.
        client
            .batch_execute(&format!("ALTER SYSTEM RESET {key}"))
            .await
            .map_err(|source| RuntimeError::Sql {
                instance: primary.name.clone(),
                what: format!("resetting {key} after recovery"),
                cause: source,
            })?;
    }
    Ok(())
}

/// Hands every line of a restore's output stream to `relay` (see [`crate::node_events`]).
async fn relay_lines<R: tokio::io::AsyncRead + Unpin>(relay: &mut Relay, stream: Option<R>) {
    if let Some(stream) = stream {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            relay.line(&line);
        }
    }
}

/// Makes a replica run and stream from `primary`: created with pg_basebackup when missing,
/// started when stopped, adopted when running. Returns its actions and state.
async fn ensure_replica(
    replica: &Instance,
    primary: &Instance,
) -> (Vec<String>, Result<InstanceState, String>) {
    let mut actions = Vec::new();
    let result = async {
        let adopted =
            replica.running_pid().is_some() && replica.wait_accepting(ADOPT_TIMEOUT).await.is_ok();
        if adopted {
            replica.refresh_access().await?;
        } else {
            if replica.is_bootstrapped() {
                replica.start().await?;
                actions.push(format!("restarted {} (it had stopped)", replica.name));
            } else {
                replica.create_replica_of(primary).await?;
                replica.start().await?;
                actions.push(format!(
                    "created replica {} of {}",
                    replica.name, primary.name
                ));
            }
        }
        wait_streaming(replica).await
    }
    .await;
    (actions, result.map_err(|e: RuntimeError| e.to_string()))
}

/// Running when the replica's WAL receiver streams within a short wait, else pending.
async fn wait_streaming(replica: &Instance) -> Result<InstanceState, RuntimeError> {
    let client = replica.connect("postgres").await?;
    let started = Instant::now();
    loop {
        let streaming = client
            .query_opt(
                "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                &[],
            )
            .await
            .map_err(|source| RuntimeError::Sql {
                instance: replica.name.clone(),
                what: "reading pg_stat_wal_receiver".to_string(),
                cause: source,
            })?
            .is_some();
        if streaming {
            return Ok(InstanceState::Running);
        }
        if started.elapsed() > STREAMING_TIMEOUT {
            return Ok(InstanceState::Pending);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `database` on the server unless it exists; true when it was created.
async fn ensure_database(server: &Instance, database: &str) -> Result<bool, RuntimeError> {
    let client = server.connect("postgres").await?;
    let sql = |what: &str| {
        let instance = server.name.clone();
        let what = what.to_string();
        move |source| RuntimeError::Sql {
            instance,
            what,
            cause: source,
        }
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(sql("reading pg_database"))?
        .is_some();
    if exists {
        return Ok(false);
    }
    client
        .batch_execute(&format!("CREATE DATABASE {}", wiring::ident(database)))
        .await
        .map_err(sql(&format!("creating database {database}")))?;
    Ok(true)
}

fn observe(
    instance: &Instance,
    role: Role,
    state: Result<InstanceState, String>,
) -> InstanceObserved {
    let (state, reason) = match state {
        Ok(InstanceState::Pending) => (
            InstanceState::Pending,
            Some("started but not streaming yet".to_string()),
        ),
        Ok(state) => (state, None),
        Err(reason) => (InstanceState::Failed, Some(reason)),
    };
    InstanceObserved {
        name: instance.name.clone(),
        role,
        port: instance.port,
        state,
        reason,
        pgdata: instance.pgdata(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_move_to_a_short_dir_when_the_cluster_dir_is_long() {
        let short = Path::new("/var/lib/sv/clusters/default/c1");
        assert_eq!(socket_dir_for(short), short.join("sock"));
        let long = Path::new("/var/lib/shardvault/clusters/default").join("c".repeat(80));
        let dir = socket_dir_for(&long);
        assert!(
            dir.to_string_lossy().starts_with("/tmp/shardvault-"),
            "{}",
            dir.display()
        );
        assert_eq!(dir, socket_dir_for(&long));
        assert_ne!(dir, socket_dir_for(&long.with_file_name("d".repeat(80))));
    }

    #[test]
    fn recovery_targets_become_restore_flags() {
        assert_eq!(RecoveryTarget::Immediate.flags(), ["--target-immediate"]);
        assert_eq!(
            RecoveryTarget::Name("b1".into()).flags(),
            ["--target-name", "b1"]
        );
        assert_eq!(RecoveryTarget::Latest.flags(), ["--target-latest"]);
        let t = RecoveryTarget::Time {
            time: "2026-01-01T00:00:00Z".into(),
            inclusive: false,
        };
        assert_eq!(
            t.flags(),
            [
                "--target-time",
                "2026-01-01T00:00:00Z",
                "--target-exclusive"
            ]
        );
    }
}
