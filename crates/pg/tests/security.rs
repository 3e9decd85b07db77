//! What other local users and the `postgres` user can do to a running cluster, tried for
//! real with `runuser`: nobody reaches a server or reads its state, and nothing `postgres`
//! plants in the cluster's files makes root follow it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use shardvault_pg::runtime::cluster::{
    Bootstrap, ClusterObserved, ClusterPlan, MemberPlan, Sharding, destroy, reconcile,
};
use shardvault_pg::runtime::find_pg_bin;
use shardvault_storage::{Destination, StorageConfig};
use shardvault_testkit::TempStateDir;

/// Cluster `name` under `<state>/clusters/default`: a coordinator and one shard of
/// `per_shard` servers, archiving to `<state>/storage`.
fn plan(state: &Path, name: &str, per_shard: u32) -> ClusterPlan {
    let member = |name: String, instances| MemberPlan {
        destinations: vec![Destination {
            storage: StorageConfig::Filesystem {
                path: state.join("storage"),
            },
            prefix: name.clone(),
            compression: Default::default(),
            performance: Default::default(),
            encryption: None,
        }],
        name,
        instances,
        bootstrap: Bootstrap::Initdb,
    };
    ClusterPlan {
        name: name.to_string(),
        dir: state.join("clusters/default").join(name),
        pg_bin: find_pg_bin("15").unwrap(),
        shardvault_bin: shardvault_testkit::shardvault_bin(),
        database: "app".to_string(),
        sharding: Sharding::Ddp,
        members: vec![
            member(format!("{name}-coord"), 1),
            member(format!("{name}-shard0"), per_shard),
        ],
        extra_settings: vec![("fsync".into(), "off".into())],
        snapshots_dir: state.join("snapshots"),
        restores: Default::default(),
    }
}

/// Runs `args` as OS user `user`.
fn as_user(user: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `psql -c 'SELECT current_user'` as `user` on server `port` of the cluster.
fn psql_as(user: &str, observed: &ClusterObserved, port: u16) -> Output {
    let psql = observed.pg_bin.join("psql");
    as_user(
        user,
        &[
            psql.to_str().unwrap(),
            "-h",
            observed.socket_dir.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
            "SELECT current_user",
        ],
    )
}

fn postmaster_environment(pgdata: &Path) -> Vec<String> {
    let pidfile = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap();
    let pid = pidfile.lines().next().unwrap().trim();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test]
async fn other_users_reach_no_server_read_no_state_and_servers_get_a_minimal_environment() {
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment now.
    unsafe {
        std::env::set_var("RUST_BACKTRACE", "full");
        std::env::set_var("SV_TEST_SECRET", "do-not-pass-me-on");
    }
    let state = TempStateDir::new();
    let plan = plan(state.path(), "sec", 2);
    let observed = reconcile(&plan).await.unwrap();
    assert!(observed.ready(), "{observed:#?}");

    for instance in observed.members.iter().flat_map(|m| &m.instances) {
        // Replication (the replica streams) and our own connections work without trust.
        let hba = std::fs::read_to_string(instance.pgdata.join("pg_hba.conf")).unwrap();
        assert!(!hba.contains("trust"), "{hba}");
        let out = psql_as("nobody", &observed, instance.port);
        assert!(
            !out.status.success(),
            "nobody connected to {}",
            instance.name
        );
        assert!(text(&out).contains("Permission denied"), "{}", text(&out));
        let out = psql_as("postgres", &observed, instance.port);
        assert_eq!(text(&out).trim(), "postgres", "{}", instance.name);

        let env = postmaster_environment(&instance.pgdata);
        for leaked in ["RUST_BACKTRACE=", "SV_TEST_SECRET="] {
            assert!(!env.iter().any(|v| v.starts_with(leaked)), "{env:?}");
        }
        assert!(env.iter().any(|v| v.starts_with("PATH=")), "{env:?}");
    }

    // Who may connect is pinned on the command line: no file in the data directory (say a
    // restored postgresql.auto.conf) overrides it.
    let coord = shardvault_testkit::cluster::client(&observed, 0).await;
    for sql in [
        "ALTER SYSTEM SET listen_addresses = '*'",
        "SELECT pg_reload_conf()",
    ] {
        coord.batch_execute(sql).await.unwrap();
    }
    let rows = coord
        .query(
            "SELECT name, setting, source FROM pg_settings WHERE name IN \
             ('listen_addresses', 'hba_file', 'unix_socket_permissions') ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let (name, setting, source): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        // (PostgreSQL reports the file locations given on the command line as "override".)
        assert!(
            ["command line", "override"].contains(&source.as_str()),
            "{name} = {setting} from {source}"
        );
        assert_ne!(setting, "*", "{name}");
    }

    let sock = observed.socket_dir.clone();
    assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o700);
    let member_dir = plan.dir.join("sec-shard0");
    let files = [
        plan.dir.join("observed.json"),
        plan.dir.join("ports.json"),
        member_dir.join("node.json"),
        member_dir.join("sec-shard0-0/postgres.log"),
        member_dir.join("sec-shard0-0/data/postgresql.conf"),
    ];
    for file in &files {
        assert!(file.is_file(), "{}", file.display());
        let out = as_user("nobody", &["cat", file.to_str().unwrap()]);
        assert!(!out.status.success(), "nobody read {}", file.display());
    }
    for dir in [&plan.dir, &member_dir, &sock] {
        let out = as_user("nobody", &["ls", dir.to_str().unwrap()]);
        assert!(!out.status.success(), "nobody listed {}", dir.display());
    }
    destroy(&plan.dir).await.unwrap();
}

#[tokio::test]
async fn files_the_postgres_user_plants_make_root_run_or_write_nothing() {
    let state = TempStateDir::new();
    let plan = plan(state.path(), "plant", 1);
    let observed = reconcile(&plan).await.unwrap();
    assert!(observed.ready(), "{observed:#?}");
    let observed_json = plan.dir.join("observed.json");
    let dir = plan.dir.to_str().unwrap().to_string();

    // The cluster directory is ours: postgres can neither replace nor link observed.json.
    let meta = std::fs::metadata(&plan.dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o711));
    for attack in [
        format!("echo {{}} > {dir}/observed.json"),
        format!("mv {dir}/observed.json {dir}/x"),
        format!(
            "ln -s /etc/shadow {dir}/ports.json.new && mv {dir}/ports.json.new {dir}/ports.json"
        ),
    ] {
        let out = as_user("postgres", &["sh", "-c", &attack]);
        assert!(!out.status.success(), "postgres could: {attack}");
    }

    // The layout of older versions, where postgres owned the cluster directory: a replaced
    // observed.json naming a psql of its own is refused by `shardvault psql`.
    std::os::unix::fs::chown(&plan.dir, Some(postgres_uid()), None).unwrap();
    let evil = plan.dir.join("evil");
    let marker = state.path().join("ran-as-root");
    let crafted = std::fs::read_to_string(&observed_json)
        .unwrap()
        .replace(observed.pg_bin.to_str().unwrap(), evil.to_str().unwrap());
    let script = format!(
        "mkdir {evil} && printf '#!/bin/sh\\ntouch {marker}\\n' > {evil}/psql && chmod 755 {evil}/psql \
         && cat > {dir}/o.new && mv -f {dir}/o.new {dir}/observed.json",
        evil = evil.display(),
        marker = marker.display(),
    );
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(crafted.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let psql = Command::new(shardvault_testkit::shardvault_bin())
        .args([
            "psql",
            "plant",
            "--state-dir",
            state.path().to_str().unwrap(),
        ])
        .args(["--", "-Atc", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!psql.status.success(), "{}", text(&psql));
    assert!(text(&psql).contains("is not trusted"), "{}", text(&psql));
    assert!(!marker.exists(), "root ran the postgres user's psql");

    // A link planted in its place is replaced, never written through, and the directory
    // is taken back.
    let victim = state.path().join("root-only");
    std::fs::write(&victim, b"root's").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = format!(
        "rm -f {dir}/observed.json && ln -s {} {dir}/observed.json",
        victim.display()
    );
    let out = as_user("postgres", &["sh", "-c", &link]);
    assert!(out.status.success(), "{}", text(&out));
    let err = ClusterObserved::load(&plan.dir).unwrap_err().to_string();
    assert!(err.contains("is not trusted"), "{err}");
    let again = reconcile(&plan).await.unwrap();
    assert!(again.ready(), "{again:#?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
    assert!(
        !std::fs::symlink_metadata(&observed_json)
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        ClusterObserved::load(&plan.dir).unwrap().pg_bin,
        observed.pg_bin
    );
    assert_eq!(std::fs::metadata(&plan.dir).unwrap().uid(), 0);
    destroy(&plan.dir).await.unwrap();
}

fn postgres_uid() -> u32 {
    shardvault_pg::user::server_ids()
        .expect("the tests run as root")
        .0
}
