//! The isolation scenario for any sharding type: a restore never touches its source.
//!
//! The source runs with `log_connections`; a sharded backup is taken, then a prepared
//! transaction named as Citus names its own (`citus_0_424242_7_9`) is planted on a source
//! shard, the way a distributed transaction in flight would leave it. A cluster restored from
//! the backup must come up wired to its own members while the source sees no connection from
//! a node (postgres_fdw, dblink or Citus's own), keeps the planted transaction and has
//! byte-identical catalogs. Then `verify` must fail once the WAL segment holding a shard's
//! restore point is gone from storage.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardvault_control::cut::CutMode;
use shardvault_control::sharded_backup::{self, MemberJob, Progress, ShardedBackupJob};
use shardvault_control::verify::{MemberToVerify, verify_member};
use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::manifest::BackupSummary;
use shardvault_pg::engine::{Repo, layout};
use shardvault_pg::runtime::cluster::{
    ClusterObserved, ClusterPlan, RecoveryTarget, Sharding, reconcile,
};
use shardvault_testkit::TempStateDir;
use shardvault_testkit::cluster::{
    citus_plan, client, cluster_id, connect, ddp_plan, destroy_cluster, node_runtime,
    restored_plan, start,
};

const DATABASE: &str = "iso";
const PLANTED: &str = "citus_0_424242_7_9";

/// Application names of the connections one node opens to another.
const NODE_CLIENTS: [&str; 3] = [
    "application_name=postgres_fdw",
    "application_name=dblink",
    "application_name=citus",
];

struct Quiet;

impl Progress for Quiet {
    fn member_started(&self, _: usize) {}
    fn member_copying(&self, _: usize, _: shardvault_pg::node_events::WorkProgress) {}
    fn member_done(&self, _: usize, _: &BackupSummary) {}
    fn step(&self, _: shardvault_api::progress::BackupStep) {}
}

/// A source cluster of `sharding` with 100 accounts, that logs every connection and (citus)
/// runs no background job of its own that would connect to its nodes.
async fn source(state: &TempStateDir, sharding: Sharding) -> (ClusterPlan, ClusterObserved) {
    let mut plan = match sharding {
        Sharding::Ddp => ddp_plan(state.path(), "src", DATABASE, 2),
        Sharding::Citus => citus_plan(state.path(), "src", DATABASE, 2),
    };
    plan.extra_settings
        .push(("log_connections".into(), "on".into()));
    if sharding == Sharding::Citus {
        for key in [
            "citus.recover_2pc_interval",
            "citus.distributed_deadlock_detection_factor",
        ] {
            plan.extra_settings.push((key.into(), "-1".into()));
        }
    }
    let observed = start(&plan).await;
    let create = match sharding {
        Sharding::Ddp => {
            "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, balance bigint not null', 'id')"
        }
        Sharding::Citus => {
            "CREATE TABLE accounts (id bigint primary key, balance bigint not null); \
             SELECT create_distributed_table('accounts', 'id')"
        }
    };
    client(&observed, 0)
        .await
        .batch_execute(&format!(
            "{create}; INSERT INTO accounts SELECT i, 10 FROM generate_series(1, 100) i"
        ))
        .await
        .expect("accounts created through the coordinator");
    (plan, observed)
}

fn node_config(observed: &ClusterObserved, member: usize) -> NodeConfig {
    NodeConfig::load(&observed.members[member].node_config).expect("the member's node config")
}

/// What the source's catalogs say about its links and its transactions, per member.
async fn catalogs(observed: &ClusterObserved, sharding: Sharding) -> Vec<String> {
    let mut tables = vec!["pg_prepared_xacts", "pg_foreign_server", "pg_user_mapping"];
    if sharding == Sharding::Citus {
        tables.extend(["pg_dist_node", "pg_dist_transaction", "pg_dist_local_group"]);
    }
    let mut out = Vec::new();
    for member in 0..observed.members.len() {
        let c = client(observed, member).await;
        for table in &tables {
            let rows: Option<String> = c
                .query_one(
                    &format!("SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM {table} t"),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"))
                .get(0);
            out.push(format!(
                "{} {table}:\n{}",
                observed.members[member].name,
                rows.unwrap_or_default()
            ));
        }
    }
    out
}

/// Every server log of the cluster with its length now.
fn log_marks(observed: &ClusterObserved) -> Vec<(PathBuf, usize)> {
    observed
        .members
        .iter()
        .flat_map(|m| &m.instances)
        .map(|i| {
            let log = i
                .pgdata
                .parent()
                .expect("instance dir")
                .join("postgres.log");
            let len = std::fs::read(&log).map(|t| t.len()).unwrap_or(0);
            (log, len)
        })
        .collect()
}

/// Connections from a node logged since `marks`.
fn node_connections_since(marks: &[(PathBuf, usize)]) -> Vec<String> {
    let mut found = Vec::new();
    for (log, from) in marks {
        let text = std::fs::read(log).unwrap_or_default();
        let new = String::from_utf8_lossy(&text[(*from).min(text.len())..]).into_owned();
        found.extend(
            new.lines()
                .filter(|l| {
                    l.contains("connection authorized")
                        && NODE_CLIENTS.iter().any(|a| l.contains(a))
                })
                .map(|l| format!("{}: {l}", log.display())),
        );
    }
    found
}

/// The restored members every link of the restored cluster names: ports, coordinator first
/// for citus (every member's `pg_dist_node`), the shards for ddp (the foreign servers).
async fn links(observed: &ClusterObserved, sharding: Sharding) -> Vec<Vec<String>> {
    let (query, members) = match sharding {
        Sharding::Ddp => (
            "SELECT option_value FROM pg_foreign_server s, pg_options_to_table(s.srvoptions) \
             WHERE option_name = 'port' ORDER BY srvname",
            1,
        ),
        Sharding::Citus => (
            "SELECT nodeport::text FROM pg_dist_node ORDER BY groupid = 0 DESC, nodeid",
            observed.members.len(),
        ),
    };
    let mut out = Vec::new();
    for member in 0..members {
        out.push(
            client(observed, member)
                .await
                .query(query, &[])
                .await
                .expect("links readable")
                .iter()
                .map(|r| r.get(0))
                .collect(),
        );
    }
    out
}

/// The row versions (xmin) of the catalog rows the wiring writes, per member.
async fn wiring_rows(observed: &ClusterObserved, sharding: Sharding) -> Vec<Option<String>> {
    let (query, members) = match sharding {
        Sharding::Ddp => (
            "SELECT string_agg(xmin::text, ',') FROM (SELECT xmin FROM pg_foreign_server \
             UNION ALL SELECT xmin FROM pg_user_mapping UNION ALL SELECT xmin FROM pg_proc \
             WHERE proname = 'ddp_create_distributed_table') x",
            1,
        ),
        Sharding::Citus => (
            "SELECT string_agg(xmin::text, ',' ORDER BY nodeid) FROM pg_dist_node",
            observed.members.len(),
        ),
    };
    let mut out = Vec::new();
    for member in 0..members {
        out.push(
            client(observed, member)
                .await
                .query_one(query, &[])
                .await
                .expect("wiring rows")
                .get(0),
        );
    }
    out
}

/// The first position of WAL segment `file` (16 MiB segments).
fn segment_start(file: &str) -> String {
    let log = u64::from_str_radix(&file[8..16], 16).expect("a segment name");
    let seg = u64::from_str_radix(&file[16..24], 16).expect("a segment name");
    format!("{log:X}/{:X}", seg << 24)
}

/// Runs the whole scenario for `sharding`.
pub async fn restore_never_touches_its_source(sharding: Sharding) {
    let state = TempStateDir::new();
    let (plan, observed) = source(&state, sharding).await;
    let members: Vec<MemberJob> = plan
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| MemberJob {
            name: m.name.clone(),
            backup: format!("iso-{i}"),
            node_config: node_config(&observed, i),
            backup_from: node_config(&observed, i),
        })
        .collect();
    let job = ShardedBackupJob {
        name: "iso".into(),
        cluster: cluster_id(&plan),
        members: members.clone(),
        database: DATABASE.into(),
        cut_mode: match sharding {
            Sharding::Ddp => CutMode::default(),
            Sharding::Citus => CutMode::Citus,
        },
        parallelism: 3,
        incremental: false,
        archive_wait: Duration::from_secs(60),
    };
    let outcome = sharded_backup::run(&job, &node_runtime(state.path()), Arc::new(Quiet))
        .await
        .unwrap_or_else(|e| panic!("sharded backup: {e}"));

    // Each recorded position is the restore point record itself, on every member.
    for (i, point) in outcome.cut.members.iter().enumerate() {
        // In the postgres database: Citus refuses extensions made on a worker's own.
        let conninfo = observed.primary_conninfo(i).expect("a primary");
        let c = connect(&format!("{conninfo} dbname=postgres")).await;
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            .await
            .expect("pg_walinspect");
        let name: Option<String> = c
            .query_opt(
                "SELECT description FROM pg_get_wal_records_info(\
                 $2::text::pg_lsn, $1::text::pg_lsn) \
                 WHERE record_type = 'RESTORE_POINT' AND end_lsn = $1::text::pg_lsn",
                &[&point.lsn, &segment_start(&point.wal_file)],
            )
            .await
            .expect("pg_get_wal_records_info")
            .map(|r| r.get(0));
        assert_eq!(
            name.as_deref(),
            Some("iso"),
            "{}: the recorded position {} ends the restore point record",
            point.name,
            point.lsn
        );
    }

    let shard = client(&observed, 1).await;
    shard
        .batch_execute(&format!(
            "BEGIN; SELECT pg_current_xact_id(); PREPARE TRANSACTION '{PLANTED}'"
        ))
        .await
        .expect("a transaction prepared on a source shard");
    let before = catalogs(&observed, sharding).await;
    let marks = log_marks(&observed);

    let backups: Vec<String> = members.iter().map(|m| m.backup.clone()).collect();
    let restored_plan = restored_plan(
        state.path(),
        "dst",
        &plan,
        &backups,
        &RecoveryTarget::Name("iso".into()),
    );
    let restored = start(&restored_plan).await;

    let reached = node_connections_since(&marks);
    assert!(
        reached.is_empty(),
        "the source saw connections from a node during the restore:\n{}",
        reached.join("\n")
    );
    let after = catalogs(&observed, sharding).await;
    assert_eq!(
        before, after,
        "the source's catalogs changed during the restore"
    );
    assert!(
        before.iter().any(|c| c.contains(PLANTED)),
        "the planted transaction is in the source's pg_prepared_xacts: {before:?}"
    );
    let ports = |o: &ClusterObserved, from: usize| -> Vec<String> {
        o.members[from..]
            .iter()
            .map(|m| m.instances[0].port.to_string())
            .collect()
    };
    let want = match sharding {
        Sharding::Ddp => vec![ports(&restored, 1)],
        Sharding::Citus => vec![ports(&restored, 0); restored.members.len()],
    };
    assert_eq!(
        links(&restored, sharding).await,
        want,
        "every link of the restored cluster names its own members"
    );
    // Wiring reads before it writes: a second reconcile changes nothing, not even the
    // catalog rows it would rewrite (for citus each write is a distributed transaction).
    let before_again = wiring_rows(&restored, sharding).await;
    let again = reconcile(&restored_plan).await.expect("a second reconcile");
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert_eq!(
        before_again,
        wiring_rows(&restored, sharding).await,
        "the second reconcile rewrote wiring rows"
    );
    let rows: i64 = client(&restored, 0)
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("accounts through the restored coordinator")
        .get(0);
    assert_eq!(rows, 100);

    // verify: the segment holding shard 0's restore point missing from storage is found.
    let to_verify = |i: usize| MemberToVerify {
        name: plan.members[i].name.clone(),
        backup: backups[i].clone(),
        destination: plan.members[i].destinations[0].clone(),
        restore_point_wal: outcome.cut.members[i].wal_file.clone(),
        manifest_sha256: None,
    };
    for i in 0..plan.members.len() {
        verify_member(&to_verify(i))
            .await
            .unwrap_or_else(|e| panic!("verify {}: {e}", plan.members[i].name));
    }
    let segment = &outcome.cut.members[1].wal_file;
    Repo::open(&plan.members[1].destinations[0])
        .expect("storage")
        .store
        .delete(&layout::wal_key(segment))
        .await
        .expect("segment deleted");
    let err = verify_member(&to_verify(1))
        .await
        .expect_err("verify must fail without the restore point's segment")
        .to_string();
    assert!(err.contains(segment.as_str()), "{err}");

    shard
        .batch_execute(&format!("ROLLBACK PREPARED '{PLANTED}'"))
        .await
        .expect("the planted transaction is still there to roll back");
    destroy_cluster(&restored_plan.dir).await;
    destroy_cluster(&plan.dir).await;
}
