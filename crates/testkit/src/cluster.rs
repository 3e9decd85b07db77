//! Library-level sharded clusters for tests: a ddp cluster planned under a [`TempStateDir`]
//! with filesystem storage beside it, clusters restored from its member backups, and clients.
//!
//! [`TempStateDir`]: crate::TempStateDir

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shardvault_pg::engine::wal::PREFETCH_DIR;
use shardvault_pg::fingerprint::{Fingerprint, differences};
use shardvault_pg::runtime::cluster::{
    Bootstrap, ClusterObserved, ClusterPlan, MemberPlan, RecoveryTarget, Sharding, destroy,
    reconcile,
};
use shardvault_pg::runtime::{ClusterId, LocalRuntime, find_pg_bin};
use shardvault_storage::{Destination, StorageConfig};

use crate::{PG_VERSION, shardvault_bin};

/// Plan of ddp cluster `name` in `<state>/clusters/<name>`: a coordinator and `shards` shards
/// of one instance each, `fsync=off`, member `m` archiving to [`member_storage`]`(state, m)`.
pub fn ddp_plan(state: &Path, name: &str, database: &str, shards: usize) -> ClusterPlan {
    let mut members = vec![format!("{name}-coord")];
    members.extend((0..shards).map(|i| format!("{name}-shard{i}")));
    ClusterPlan {
        name: name.to_string(),
        dir: state.join("clusters").join(name),
        pg_bin: find_pg_bin(PG_VERSION).expect("PostgreSQL 15 (bash scripts/setup.sh)"),
        shardvault_bin: shardvault_bin(),
        database: database.to_string(),
        sharding: Sharding::Ddp,
        members: members
            .into_iter()
            .map(|member| MemberPlan {
                destinations: vec![member_storage(state, &member)],
                name: member,
                instances: 1,
                bootstrap: Bootstrap::Initdb,
            })
            .collect(),
        extra_settings: vec![("fsync".into(), "off".into())],
        snapshots_dir: state.join("snapshots"),
        restores: Default::default(),
    }
}

/// The runtime that runs node work (member backups) for the clusters planned under `state`;
/// open it once per state directory, before any node work (it sweeps earlier work files).
pub fn node_runtime(state: &Path) -> LocalRuntime {
    LocalRuntime::open(state, shardvault_bin()).expect("the local runtime opens")
}

/// The id node work names a cluster planned by [`ddp_plan`] or [`citus_plan`] with.
pub fn cluster_id(plan: &ClusterPlan) -> ClusterId {
    ClusterId::new("default", &plan.name)
}

/// Plan of citus cluster `name`: [`ddp_plan`] with the citus extension instead (the host must
/// have citus for PostgreSQL 15; the runtime refuses the plan with a clear error otherwise).
pub fn citus_plan(state: &Path, name: &str, database: &str, shards: usize) -> ClusterPlan {
    ClusterPlan {
        sharding: Sharding::Citus,
        ..ddp_plan(state, name, database, shards)
    }
}

/// Where member `member` archives WAL and keeps its backups: prefix `<member>` of the
/// filesystem storage `<state>/storage`.
pub fn member_storage(state: &Path, member: &str) -> Destination {
    Destination {
        storage: StorageConfig::Filesystem {
            path: state.join("storage"),
        },
        prefix: member.to_string(),
        compression: Default::default(),
        performance: Default::default(),
        encryption: None,
    }
}

/// Plan of cluster `name`, shaped like `source`, whose member `i` is restored from backup
/// `backups[i]` of member `i` of `source`, recovering to `target`.
pub fn restored_plan(
    state: &Path,
    name: &str,
    source: &ClusterPlan,
    backups: &[String],
    target: &RecoveryTarget,
) -> ClusterPlan {
    assert_eq!(
        backups.len(),
        source.members.len(),
        "one backup per member of {}",
        source.name
    );
    let mut plan = ddp_plan(state, name, &source.database, source.members.len() - 1);
    plan.sharding = source.sharding;
    for ((member, from), backup) in plan.members.iter_mut().zip(&source.members).zip(backups) {
        member.bootstrap = Bootstrap::Restore {
            source: from.destinations[0].clone(),
            backup: backup.clone(),
            target: target.clone(),
            concurrency: 2,
        };
    }
    plan
}

/// Creates (or restores) and starts the plan's cluster; panics unless every server runs and
/// the sharding is wired.
pub async fn start(plan: &ClusterPlan) -> ClusterObserved {
    let observed = reconcile(plan)
        .await
        .unwrap_or_else(|e| panic!("cluster {}: {e}", plan.name));
    assert!(
        observed.ready(),
        "cluster {} is not ready: {observed:#?}",
        plan.name
    );
    observed
}

/// A client of the primary of member `index` (0 = coordinator), on the cluster's database.
pub async fn client(observed: &ClusterObserved, index: usize) -> tokio_postgres::Client {
    let conninfo = observed
        .primary_conninfo(index)
        .unwrap_or_else(|| panic!("cluster {} has no member {index}", observed.name));
    connect(&conninfo).await
}

/// A client for `conninfo`; panics naming it when the server cannot be reached.
pub async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {conninfo}: {e}"));
    tokio::spawn(conn);
    client
}

/// Runs `statements` on `conninfo`; panics with the error.
pub async fn sql(conninfo: &str, statements: &str) {
    connect(conninfo)
        .await
        .batch_execute(statements)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// Asserts that every member of a restored cluster holds what the source held.
pub fn assert_same_content(want: &[Fingerprint], got: &[Fingerprint], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: member count");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        let diffs = differences(w, g);
        assert!(diffs.is_empty(), "{what}: member {i} differs: {diffs:?}");
    }
    assert!(
        want.iter().map(|f| f.len()).sum::<usize>() >= 1,
        "{what}: the source had tables to compare"
    );
}

/// Destroys the cluster in `plan_dir`, trying again while its directory cannot be removed
/// because something still writes into it: a restored member's detached `wal-fetch`
/// prefetcher outlives its server and keeps downloading into `pg_wal/.shardvault-prefetch`.
/// Returns one line per try that failed (its error and the prefetched files it met), empty
/// when the first try succeeded; panics when the directory is still there after 30 s.
pub async fn destroy_cluster(plan_dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = Vec::new();
    loop {
        match destroy(plan_dir).await {
            Ok(()) => return failed,
            Err(e) => {
                let mut prefetched = Vec::new();
                prefetched_files(plan_dir, &mut prefetched);
                failed.push(format!("{e} (prefetched files present: {prefetched:?})"));
                assert!(
                    Instant::now() < deadline,
                    "destroy {}: {failed:?}",
                    plan_dir.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Files in the `wal-fetch` prefetch directories below `dir`.
fn prefetched_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !path.is_dir() || path.is_symlink() {
            continue;
        }
        if entry.file_name() == PREFETCH_DIR {
            out.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            prefetched_files(&path, out);
        }
    }
}
