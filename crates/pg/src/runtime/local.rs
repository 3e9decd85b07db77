//! [`ClusterRuntime`] on this host: clusters live under `<state>/clusters/<ns>/<name>` (see
//! [`cluster`](super::cluster)), node work runs `shardvault node` as the server user with
//! its config in `<state>/work/<ns>/<job>/<member>.json` for as long as the command runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::cluster::{self, ClusterObserved, ClusterPlan};
use super::error::RuntimeError;
use super::pgbin::find_pg_bin;
use super::restore_board::{RestoreBoard, RestoreProgress};
use super::seam::{
    ClusterEndpoints, ClusterId, ClusterRuntime, DesiredCluster, MemberEndpoint, NodeWork,
    VolumeSnapshot,
};
use super::snapshot::{self, SnapshotClass};
use crate::config::NodeConfig;
use crate::node_events::{self, ProgressSink, Relay};
use crate::{statefile, user};

/// Directory under the state directory holding the clusters.
const CLUSTERS_DIR: &str = "clusters";

/// Directory under the state directory holding volume snapshots, `<ns>/<name>` (ours, 0700).
const SNAPSHOTS_DIR: &str = "snapshots";

/// Directory under the state directory holding the node configs of running node work.
const WORK_DIR: &str = "work";

/// Local PostgreSQL servers under one state directory.
#[derive(Debug, Clone)]
pub struct LocalRuntime {
    state_dir: PathBuf,
    shardvault_bin: PathBuf,
    extra_settings: Vec<(String, String)>,
    /// Restore progress of the clusters this runtime restores, by cluster directory.
    restores: Arc<Mutex<HashMap<PathBuf, RestoreBoard>>>,
}

impl LocalRuntime {
    /// A runtime keeping clusters in `state_dir` whose servers archive (and whose node work
    /// runs) with `shardvault_bin`. Removes what an earlier run left of node work (configs
    /// with secrets of commands that were cut short): call it before any node work runs.
    pub fn open(state_dir: &Path, shardvault_bin: PathBuf) -> Result<LocalRuntime, RuntimeError> {
        let runtime = LocalRuntime::observing(state_dir, shardvault_bin);
        let work = state_dir.join(WORK_DIR);
        match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::Io {
                    path: work,
                    cause: e,
                });
            }
            _ => {}
        }
        Ok(runtime)
    }

    /// The runtime whose clusters another process runs in `state_dir`, to observe them: it
    /// leaves the node work of that process alone (unlike [`LocalRuntime::open`]).
    pub fn observing(state_dir: &Path, shardvault_bin: PathBuf) -> LocalRuntime {
        LocalRuntime {
            state_dir: state_dir.to_path_buf(),
            shardvault_bin,
            extra_settings: Vec::new(),
            restores: Arc::default(),
        }
    }

    /// Adds server settings to every instance (tests make servers lighter with them).
    pub fn with_extra_settings(mut self, settings: Vec<(String, String)>) -> LocalRuntime {
        self.extra_settings = settings;
        self
    }

    fn cluster_dir(&self, id: &ClusterId) -> PathBuf {
        self.state_dir
            .join(CLUSTERS_DIR)
            .join(&id.namespace)
            .join(&id.name)
    }

    /// Creates `<state>/work/<ns>/<job>`: the first two ours (0711), the last private to the
    /// server user that reads the configs (0700).
    fn work_dir(&self, cluster: &ClusterId, job: &str) -> Result<PathBuf, RuntimeError> {
        let top = self.state_dir.join(WORK_DIR);
        for dir in [top.clone(), top.join(&cluster.namespace)] {
            statefile::create_own_dir(&dir, 0o711).map_err(RuntimeError::io(&dir))?;
        }
        let work = top.join(&cluster.namespace).join(job);
        user::create_dir_all_for_server(&work)
            .and_then(|()| user::make_private_for_server(&work))
            .map_err(RuntimeError::io(&work))?;
        Ok(work)
    }

    /// `<state>/snapshots/<ns>`, ours and private (0700): the server user never reaches a
    /// snapshot, so nothing it does can change one.
    fn snapshots_dir(&self, namespace: &str) -> PathBuf {
        self.state_dir.join(SNAPSHOTS_DIR).join(namespace)
    }

    /// The restore board of a cluster (made on first use).
    fn board(&self, id: &ClusterId) -> RestoreBoard {
        let mut boards = self.restores.lock().unwrap_or_else(|p| p.into_inner());
        boards.entry(self.cluster_dir(id)).or_default().clone()
    }

    fn plan(&self, desired: DesiredCluster) -> Result<ClusterPlan, RuntimeError> {
        Ok(ClusterPlan {
            snapshots_dir: self.snapshots_dir(&desired.id.namespace),
            restores: self.board(&desired.id),
            dir: self.cluster_dir(&desired.id),
            pg_bin: find_pg_bin(major(&desired.postgres_version))?,
            name: desired.id.name,
            shardvault_bin: self.shardvault_bin.clone(),
            database: desired.database,
            sharding: desired.sharding,
            members: desired.members,
            extra_settings: self.extra_settings.clone(),
        })
    }
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or("")
}

impl ClusterRuntime for LocalRuntime {
    fn check_version(&self, version: &str) -> Result<(), RuntimeError> {
        find_pg_bin(major(version)).map(drop)
    }

    fn check_volume_snapshots(&self, class: Option<&str>) -> Result<(), RuntimeError> {
        let class = SnapshotClass::parse(class)?;
        Ok(snapshot::check_filesystem(
            class,
            &self.state_dir.join(CLUSTERS_DIR),
        )?)
    }

    fn snapshot_member(
        &self,
        id: &ClusterId,
        member: &str,
        class: Option<&str>,
        name: &str,
    ) -> Result<VolumeSnapshot, RuntimeError> {
        let class = SnapshotClass::parse(class)?;
        let observed = self.observed(id)?;
        let primary = observed
            .members
            .iter()
            .find(|m| m.name == member)
            .and_then(|m| m.instances.first())
            .ok_or_else(|| {
                RuntimeError::Plan(format!("cluster {id} has no member {member} running here"))
            })?;
        let dir = self.snapshots_dir(&id.namespace);
        for d in [self.state_dir.join(SNAPSHOTS_DIR), dir.clone()] {
            statefile::create_own_dir(&d, 0o700).map_err(RuntimeError::io(&d))?;
        }
        snapshot::check_filesystem(class, &primary.pgdata)?;
        snapshot::snapshot_read_only(&primary.pgdata, &dir, name)?;
        Ok(VolumeSnapshot {
            class: class.name().to_string(),
            name: name.to_string(),
            location: format!(
                "{} on this host, on the same disk as the cluster's data",
                dir.join(name).display()
            ),
        })
    }

    fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<bool, RuntimeError> {
        Ok(snapshot::delete(&self.snapshots_dir(namespace), name)?)
    }

    fn reconcile(
        &self,
        desired: DesiredCluster,
    ) -> BoxFuture<'static, Result<ClusterObserved, RuntimeError>> {
        let plan = self.plan(desired);
        Box::pin(async move { cluster::reconcile(&plan?).await })
    }

    fn destroy(&self, id: &ClusterId) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let dir = self.cluster_dir(id);
        Box::pin(async move { cluster::destroy(&dir).await })
    }

    fn observed(&self, id: &ClusterId) -> Result<ClusterObserved, RuntimeError> {
        ClusterObserved::load(&self.cluster_dir(id))
    }

    fn endpoints(&self, id: &ClusterId) -> Result<ClusterEndpoints, RuntimeError> {
        let observed = self.observed(id)?;
        let members = observed
            .members
            .into_iter()
            .map(|m| {
                Ok(MemberEndpoint {
                    node_config: NodeConfig::load(&m.node_config)?,
                    name: m.name,
                    instances: m.instances,
                })
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(ClusterEndpoints {
            database: observed.database,
            members,
        })
    }

    fn restore_progress(&self, id: &ClusterId) -> BTreeMap<String, RestoreProgress> {
        self.board(id).snapshot()
    }

    fn run_node(
        &self,
        work: NodeWork,
        progress: Option<ProgressSink>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RuntimeError>> {
        let dir = self.work_dir(&work.cluster, &work.job);
        let bin = self.shardvault_bin.clone();
        Box::pin(async move { run_node(&bin, &dir?, work, progress).await })
    }
}

/// Runs `bin node SUBCOMMAND --config FILE ARGS...` as the server user; the config file
/// is removed whatever happens, also when the work is cancelled (its future dropped).
async fn run_node(
    bin: &Path,
    dir: &Path,
    work: NodeWork,
    progress: Option<ProgressSink>,
) -> Result<Vec<u8>, RuntimeError> {
    let config = ConfigFile(dir.join(format!("{}.json", work.member)));
    work.config.save(&config.0)?;
    run_with_config(bin, &config.0, &work, progress).await
}

/// A node config written for one command: it carries the storage's secrets, so it is
/// removed when the command ends or is cancelled.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("could not remove the node config {}: {e}", self.0.display());
            }
            _ => {}
        }
    }
}

async fn run_with_config(
    bin: &Path,
    config: &Path,
    work: &NodeWork,
    progress: Option<ProgressSink>,
) -> Result<Vec<u8>, RuntimeError> {
    let mut cmd = user::command(bin);
    user::die_with_parent(&mut cmd);
    node_events::mark(&mut cmd);
    // `node SUBCOMMAND --config FILE REST...`: the config right after the subcommand.
    let (sub, rest) = work
        .args
        .split_first()
        .map_or((None, &[][..]), |(s, r)| (Some(s), r));
    let mut child = cmd
        .arg("node")
        .args(sub)
        .arg("--config")
        .arg(config)
        .args(rest)
        .env("SHARDVAULT_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            program: bin.to_path_buf(),
            cause: source,
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut out = Vec::new();
    let mut relay = Relay::new(&work.member, progress);
    let events = async {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Some(line) = lines.next_line().await? {
            relay.line(&line);
        }
        Ok::<_, std::io::Error>(())
    };
    let (r1, r2, status) = tokio::join!(stdout.read_to_end(&mut out), events, child.wait());
    r1.map(drop).and(r2).map_err(RuntimeError::io(bin))?;
    let status = status.map_err(RuntimeError::io(bin))?;
    if !status.success() {
        return Err(RuntimeError::Command {
            what: format!(
                "shardvault node {}",
                work.args.first().and_then(|a| a.to_str()).unwrap_or("")
            ),
            status,
            output: relay.failure(),
        });
    }
    Ok(out)
}
