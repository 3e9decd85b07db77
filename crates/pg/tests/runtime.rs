//! The local cluster runtime on real PostgreSQL servers: creation, replication, ddp wiring,
//! supervision (restart, adoption), destruction and refusals.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use shardvault_pg::config::NodeConfig;
use shardvault_pg::runtime::cluster::{
    Bootstrap, ClusterObserved, ClusterPlan, InstanceState, MemberPlan, RecoveryTarget, Role,
    Sharding, destroy, reconcile,
};
use shardvault_pg::runtime::instance::postgres_alive;
use shardvault_pg::runtime::{RuntimeError, find_pg_bin};
use shardvault_pg::user;
use shardvault_storage::{Destination, StorageConfig};
use shardvault_testkit::TempStateDir;

/// A state dir the server user can enter; its servers are stopped and it is removed on drop.
fn state_dir() -> TempStateDir {
    TempStateDir::new()
}

fn plan(state: &Path, name: &str, coord: u32, shards: u32, per_shard: u32) -> ClusterPlan {
    let member = |name: String, instances| MemberPlan {
        destinations: vec![archive(state, &name)],
        name,
        instances,
        bootstrap: Bootstrap::Initdb,
    };
    let mut members = vec![member(format!("{name}-coord"), coord)];
    members.extend((0..shards).map(|i| member(format!("{name}-shard{i}"), per_shard)));
    ClusterPlan {
        name: name.to_string(),
        dir: state.join("clusters/default").join(name),
        pg_bin: find_pg_bin("15").unwrap(),
        shardvault_bin: shardvault_testkit::shardvault_bin(),
        database: "app".to_string(),
        sharding: Sharding::Ddp,
        members,
        extra_settings: vec![("fsync".into(), "off".into())],
        snapshots_dir: state.join("snapshots"),
        restores: Default::default(),
    }
}

/// A member's WAL archive and backups: `<state>/archive/<member>`.
fn archive(state: &Path, member: &str) -> Destination {
    Destination {
        storage: StorageConfig::Filesystem {
            path: state.join("archive"),
        },
        prefix: member.to_string(),
        compression: Default::default(),
        performance: Default::default(),
        encryption: None,
    }
}

async fn client(observed: &ClusterObserved, member: usize) -> tokio_postgres::Client {
    let conninfo = observed.primary_conninfo(member).unwrap();
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    tokio::spawn(conn);
    client
}

fn pids(observed: &ClusterObserved) -> Vec<i32> {
    observed
        .members
        .iter()
        .flat_map(|m| &m.instances)
        .map(|i| pid_of(&i.pgdata).unwrap_or_else(|| panic!("{} is not running", i.name)))
        .collect()
}

fn pid_of(pgdata: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid = text.lines().next()?.parse().ok()?;
    postgres_alive(pid).then_some(pid)
}

async fn assert_destroyed(plan: &ClusterPlan, pids: &[i32]) {
    destroy(&plan.dir).await.unwrap();
    assert!(!plan.dir.exists(), "{} is left", plan.dir.display());
    for pid in pids {
        assert!(!postgres_alive(*pid), "server {pid} still runs");
    }
    // Nothing listens on the cluster's sockets any more.
    destroy(&plan.dir).await.unwrap();
}

#[tokio::test]
async fn an_eight_server_ddp_cluster_replicates_and_distributes_rows() {
    let state = state_dir();
    let plan = plan(state.path(), "big", 2, 3, 2);
    let started = Instant::now();
    let observed = reconcile(&plan).await.unwrap();
    let to_ready = started.elapsed();
    eprintln!(
        "8-server ddp cluster Ready in {:.1}s",
        to_ready.as_secs_f64()
    );
    assert!(observed.ready(), "{observed:#?}");
    assert_eq!(observed.members.len(), 4);
    let all: Vec<_> = observed.members.iter().flat_map(|m| &m.instances).collect();
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().filter(|i| i.role == Role::Replica).count(), 4);
    assert!(all.iter().all(|i| i.state == InstanceState::Running));
    assert!(
        observed
            .actions
            .contains(&"created big-shard2-0 (initdb)".to_string())
    );
    assert!(
        observed
            .actions
            .contains(&"created replica big-shard2-1 of big-shard2-0".to_string())
    );
    assert_eq!(pids(&observed).len(), 8);
    let postgres_uid = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for instance in &all {
        let meta = std::fs::metadata(&instance.pgdata).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700, "{}", instance.name);
        assert_eq!(meta.uid(), postgres_uid, "{}", instance.name);
    }

    // Four replicas stream, one per member, each from its own slot.
    let mut streaming = 0;
    for m in 0..4 {
        let c = client(&observed, m).await;
        let row = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.active) FROM pg_stat_replication r \
                 JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(1), 1, "member {m}");
        streaming += row.get::<_, i64>(0);
        let prepared: String = c
            .query_one("SHOW max_prepared_transactions", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(prepared, "20");
        // WAL archiving calls wal-push with the member's node config.
        let command: String = c
            .query_one("SHOW archive_command", &[])
            .await
            .unwrap()
            .get(0);
        let node_config = &observed.members[m].node_config;
        assert!(command.contains("wal-push %p --config"), "{command}");
        assert!(
            command.contains(&node_config.display().to_string()),
            "{command}"
        );
        let meta = std::fs::metadata(node_config).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), postgres_uid);
        let config = NodeConfig::load(node_config).unwrap();
        assert_eq!(config.destinations, plan.members[m].destinations);
        assert_eq!(config.port, observed.members[m].instances[0].port);
    }
    assert_eq!(streaming, 4);

    // Rows written through the coordinator land on the shard their hash picks.
    let coord = client(&observed, 0).await;
    let shards: i32 = coord
        .query_one(
            "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, balance bigint not null', 'id')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shards, 3);
    coord
        .execute(
            "INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 300) g",
            &[],
        )
        .await
        .unwrap();
    let row = coord
        .query_one("SELECT count(*), sum(balance)::bigint FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (300, 451_500));
    let mut total = 0;
    for shard in 0..3 {
        let ids: Vec<i64> = client(&observed, shard + 1)
            .await
            .query("SELECT id FROM accounts", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(ids.len() > 50, "shard {shard} has {} rows", ids.len());
        total += ids.len();
        let right: bool = coord
            .query_one(
                "SELECT bool_and(satisfies_hash_partition('accounts'::regclass, 3, $1, id)) FROM unnest($2::bigint[]) id",
                &[&(shard as i32), &ids],
            )
            .await
            .unwrap()
            .get(0);
        assert!(right, "shard {shard} holds rows of another shard");
    }
    assert_eq!(total, 300);

    let before = pids(&observed);
    assert_destroyed(&plan, &before).await;
}

#[tokio::test]
async fn a_killed_server_is_restarted_running_ones_are_adopted_and_destroy_cleans_up() {
    let state = state_dir();
    let plan = plan(state.path(), "small", 1, 2, 1);
    let first = reconcile(&plan).await.unwrap();
    assert!(first.ready(), "{first:#?}");
    assert!(
        first
            .actions
            .contains(&"created small-shard1-0 (initdb)".to_string())
    );
    assert!(
        first
            .actions
            .contains(&"created database app on small-shard0".to_string())
    );
    let ports: Vec<u16> = first.members.iter().map(|m| m.instances[0].port).collect();

    // A second reconcile adopts every running server: no action, same processes.
    let pids_before = pids(&first);
    let second = reconcile(&plan).await.unwrap();
    assert!(second.ready());
    assert_eq!(second.actions, Vec::<String>::new());
    assert_eq!(pids(&second), pids_before);

    // kill -9 of a shard primary: the next reconcile restarts it, on the same port.
    let coord = client(&second, 0).await;
    coord
        .query_one(
            "SELECT ddp_create_distributed_table('t', 'k int primary key, v text', 'k')",
            &[],
        )
        .await
        .unwrap();
    coord
        .execute(
            "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20) g",
            &[],
        )
        .await
        .unwrap();
    let victim = pid_of(&second.members[2].instances[0].pgdata).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let third = reconcile(&plan).await.unwrap();
    assert!(third.ready(), "{third:#?}");
    assert_eq!(
        third.actions,
        vec!["restarted small-shard1-0 (it had stopped)".to_string()]
    );
    let ports_after: Vec<u16> = third.members.iter().map(|m| m.instances[0].port).collect();
    assert_eq!(ports_after, ports);
    let coord = client(&third, 0).await;
    let n: i64 = coord
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20);

    // A foreign server pointing elsewhere (as in a restored coordinator) is repointed.
    coord
        .batch_execute("ALTER SERVER shard1 OPTIONS (SET port '1')")
        .await
        .unwrap();
    let fourth = reconcile(&plan).await.unwrap();
    assert_eq!(
        fourth.actions,
        vec![format!(
            "repointed foreign server shard1 to small-shard1-0 (port {})",
            ports[2]
        )]
    );
    let n: i64 = client(&fourth, 0)
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20);
    assert_eq!(ClusterObserved::load(&plan.dir).unwrap(), fourth);

    let all = pids(&fourth);
    assert_destroyed(&plan, &all).await;
}

#[tokio::test]
async fn a_missing_version_or_citus_is_refused_and_starts_nothing() {
    let state = state_dir();
    let err = find_pg_bin("9").unwrap_err();
    assert!(matches!(err, RuntimeError::VersionNotInstalled { .. }));
    assert!(err.to_string().contains("found: 15"), "{err}");

    let mut bad = plan(state.path(), "old", 1, 1, 1);
    bad.pg_bin = PathBuf::from("/usr/lib/postgresql/9/bin");
    let err = reconcile(&bad).await.unwrap_err().to_string();
    assert!(
        err.contains("postgres.version \"9\" is not installed"),
        "{err}"
    );
    assert!(!bad.dir.exists());

    // Binaries of an installation without the extension (the host's may have it).
    let prefix = tempfile::tempdir().unwrap();
    let bin = prefix.path().join("lib/postgresql/15/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        find_pg_bin("15").unwrap().join("postgres"),
        bin.join("postgres"),
    )
    .unwrap();
    let mut citus = plan(state.path(), "cit", 1, 1, 1);
    citus.pg_bin = bin;
    citus.sharding = Sharding::Citus;
    let err = reconcile(&citus).await.unwrap_err().to_string();
    assert!(
        err.contains("citus.control") && err.contains("postgresql-15-citus"),
        "{err}"
    );
    assert!(!citus.dir.exists());

    let mut empty = plan(state.path(), "zero", 1, 1, 1);
    empty.members[1].instances = 0;
    let err = reconcile(&empty).await.unwrap_err().to_string();
    assert!(err.contains("zero-shard0 has 0 instances"), "{err}");
    assert!(!empty.dir.exists());
}

#[tokio::test]
async fn a_cluster_restored_from_backups_is_promoted_replicated_and_talks_to_its_own_shards() {
    let state = state_dir();
    let source = plan(state.path(), "src", 1, 1, 1);
    let first = reconcile(&source).await.unwrap();
    assert!(first.ready(), "{first:#?}");
    let coord = client(&first, 0).await;
    coord
        .query_one(
            "SELECT ddp_create_distributed_table('items', 'id bigint primary key, v text', 'id')",
            &[],
        )
        .await
        .unwrap();
    coord
        .execute(
            "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g",
            &[],
        )
        .await
        .unwrap();

    // One backup per member, taken as the server user like archive_command's wal-push.
    for member in &first.members {
        let mut cmd = user::command(shardvault_testkit::shardvault_bin());
        cmd.args(["node", "backup", "--name", "b1", "--config"])
            .arg(&member.node_config);
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    coord
        .execute(
            "INSERT INTO items SELECT g, 'after' FROM generate_series(101, 150) g",
            &[],
        )
        .await
        .unwrap();

    // A new cluster from those backups, with a replica on the shard built after promotion,
    // and without a backup destination of its own.
    let mut restored = plan(state.path(), "dst", 1, 1, 2);
    for (member, from) in restored.members.iter_mut().zip(&source.members) {
        member.destinations.clear();
        member.bootstrap = Bootstrap::Restore {
            source: from.destinations[0].clone(),
            backup: "b1".into(),
            target: RecoveryTarget::Immediate,
            concurrency: 2,
        };
    }
    let observed = reconcile(&restored).await.unwrap();
    assert!(observed.ready(), "{observed:#?}");
    assert!(
        observed
            .actions
            .contains(&"restored dst-shard0-0 from backup b1 (--target-immediate)".to_string()),
        "{:?}",
        observed.actions
    );
    assert!(
        observed
            .actions
            .contains(&"created replica dst-shard0-1 of dst-shard0-0".to_string())
    );
    assert!(
        observed.actions.contains(&format!(
            "repointed foreign server shard0 to dst-shard0-0 (port {})",
            observed.members[1].instances[0].port
        )),
        "{:?}",
        observed.actions
    );
    for member in ["dst-coord-0", "dst-shard0-0"] {
        assert!(
            observed
                .actions
                .iter()
                .any(|a| a.starts_with(&format!("released {member} from isolation"))),
            "{:?}",
            observed.actions
        );
    }
    // Nowhere to archive: WAL archiving is off rather than failing forever while pg_wal grows.
    for member in 0..2 {
        let mode: String = client(&observed, member)
            .await
            .query_one("SELECT current_setting('archive_mode')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "off", "{}", observed.members[member].name);
    }
    // Wiring reads before it writes: a second reconcile changes nothing, not even the
    // catalog rows it would rewrite (their xmin stays).
    let wiring_rows = "SELECT string_agg(xmin::text, ',') FROM (\
         SELECT xmin FROM pg_foreign_server UNION ALL SELECT xmin FROM pg_proc \
         WHERE proname = 'ddp_create_distributed_table' UNION ALL SELECT xmin FROM pg_user_mapping) x";
    let xmins: String = client(&observed, 0)
        .await
        .query_one(wiring_rows, &[])
        .await
        .unwrap()
        .get(0);
    let again = reconcile(&restored).await.unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    let xmins_again: String = client(&observed, 0)
        .await
        .query_one(wiring_rows, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(xmins, xmins_again, "the wiring rewrote catalog rows");
    let node = NodeConfig::load(&observed.members[1].node_config).unwrap();
    assert_eq!(
        node.restore_source,
        Some(source.members[1].destinations[0].clone())
    );

    // The restored coordinator reads the restored shard (100 rows), not the source (150).
    let coord = client(&observed, 0).await;
    let row = coord
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v = 'after') FROM items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (100, 0));
    coord
        .execute("INSERT INTO items VALUES (1000, 'restored')", &[])
        .await
        .unwrap();
    let n: i64 = client(&first, 0)
        .await
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 150,
        "the source cluster must not see writes to the restored one"
    );

    let mut all = pids(&first);
    all.extend(pids(&observed));
    assert_destroyed(&restored, &all[2..]).await;
    assert_destroyed(&source, &all[..2]).await;
}

#[tokio::test]
async fn a_wiring_error_carries_the_servers_message() {
    let state = state_dir();
    let plan = plan(state.path(), "werr", 1, 1, 1);
    let first = reconcile(&plan).await.unwrap();
    assert!(first.ready(), "{first:#?}");
    // A function of that name the wiring cannot replace.
    client(&first, 0)
        .await
        .batch_execute(
            "DROP FUNCTION ddp_create_distributed_table(text, text, text);
             CREATE FUNCTION public.ddp_create_distributed_table(a text, b text, c text)
             RETURNS text LANGUAGE sql AS 'SELECT a'",
        )
        .await
        .unwrap();
    let second = reconcile(&plan).await.unwrap();
    let err = second.wiring_error.clone().expect("the wiring fails");
    assert!(
        err.contains("creating ddp_create_distributed_table")
            && err.contains("cannot change return type of existing function"),
        "{err}"
    );
    assert!(!second.ready());
    let all = pids(&second);
    assert_destroyed(&plan, &all).await;
}
