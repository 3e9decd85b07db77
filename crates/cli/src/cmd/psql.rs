//! `shardvault psql CLUSTER`: psql on the primary of a member of a local sharded cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use shardvault_pg::runtime::ClusterObserved;
use shardvault_pg::runtime::instance::SUPERUSER;

use super::state_dir;

/// Options of `shardvault psql`.
#[derive(clap::Args)]
pub struct Args {
    /// Name of the SGShardedCluster.
    cluster: String,
    /// Connect to the primary of shard N (0-based).
    #[arg(long, value_name = "N", conflicts_with = "coordinator")]
    shard: Option<usize>,
    /// Connect to the coordinator's primary (the default).
    #[arg(long)]
    coordinator: bool,
    /// Namespace of the cluster.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// State directory (default: $SHARDVAULT_HOME, else ~/.local/share/shardvault).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Arguments passed on to psql.
    #[arg(last = true, value_name = "ARGS")]
    psql_args: Vec<String>,
}

/// Replaces this process with psql connected to the chosen member's primary.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = state_dir::resolve(args.state_dir);
    let mut command = psql_command(
        &state,
        &args.namespace,
        &args.cluster,
        args.shard,
        &args.psql_args,
    )?;
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    Err(err).with_context(|| format!("could not run {}", command.get_program().to_string_lossy()))
}

/// The psql command line for the primary of the coordinator (`shard` None) or of shard `shard`.
fn psql_command(
    state: &Path,
    namespace: &str,
    cluster: &str,
    shard: Option<usize>,
    psql_args: &[String],
) -> anyhow::Result<std::process::Command> {
    let dir = state.join("clusters").join(namespace).join(cluster);
    let observed = ClusterObserved::load(&dir).with_context(|| {
        format!(
            "no running cluster {namespace}/{cluster} under {}: apply the SGShardedCluster and let `shardvault serve` create it (or pass --state-dir / -n)",
            state.display()
        )
    })?;
    let shards = observed.members.len().saturating_sub(1);
    let index = match shard {
        None => 0,
        Some(n) if n < shards => n + 1,
        Some(n) => anyhow::bail!(
            "--shard {n}: cluster {cluster} has {shards} shard(s), numbered 0 to {}",
            shards.saturating_sub(1)
        ),
    };
    let member = &observed.members[index];
    let primary = member
        .instances
        .first()
        .with_context(|| format!("member {} has no instance", member.name))?;
    let psql = [
        observed.pg_bin.join("psql"),
        PathBuf::from("/usr/lib/postgresql/15/bin/psql"),
    ]
    .into_iter()
    .find(|p| p.is_file() && trusted_program(p))
    .with_context(|| {
        format!(
            "no trusted psql in {} (owned by root, writable by nobody else): install postgresql-client",
            observed.pg_bin.display()
        )
    })?;
    let mut command = std::process::Command::new(psql);
    command
        .arg("-h")
        .arg(&observed.socket_dir)
        .args(["-p", &primary.port.to_string(), "-U", SUPERUSER, "-d"])
        .arg(&observed.database)
        .args(psql_args);
    Ok(command)
}

/// True when `program` and its directory belong to us or root and nobody else may change
/// them: `psql` is run with our privileges, so never one the server user could replace.
fn trusted_program(program: &Path) -> bool {
    let dir = program.parent().unwrap_or(Path::new("/"));
    [program, dir].into_iter().all(|p| {
        std::fs::metadata(p)
            .and_then(|meta| shardvault_pg::statefile::check_ours(p, &meta))
            .inspect_err(|e| tracing::warn!("not running psql from there: {e}"))
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use shardvault_pg::runtime::cluster::{
        Bootstrap, ClusterPlan, MemberPlan, Sharding, destroy, reconcile,
    };
    use shardvault_pg::runtime::find_pg_bin;

    #[tokio::test]
    async fn psql_reaches_the_coordinator_and_each_shard() {
        let state = shardvault_testkit::TempStateDir::new();
        let member = |name: &str| MemberPlan {
            name: name.to_string(),
            instances: 1,
            destinations: vec![],
            bootstrap: Bootstrap::Initdb,
        };
        let plan = ClusterPlan {
            name: "pq".into(),
            dir: state.path().join("clusters/ns1/pq"),
            pg_bin: find_pg_bin("15").unwrap(),
            shardvault_bin: shardvault_testkit::shardvault_bin(),
            database: "app".into(),
            sharding: Sharding::Ddp,
            members: vec![member("pq-coord"), member("pq-shard0"), member("pq-shard1")],
            extra_settings: vec![("fsync".into(), "off".into())],
            snapshots_dir: state.path().join("snapshots"),
            restores: Default::default(),
        };
        let observed = reconcile(&plan).await.unwrap();
        assert!(observed.ready(), "{observed:#?}");

        let query = |args: &[&str]| {
            let out = std::process::Command::new(shardvault_testkit::shardvault_bin())
                .args(args)
                .args([
                    "--state-dir",
                    state.path().to_str().unwrap(),
                    "-n",
                    "ns1",
                    "--",
                ])
                .args([
                    "-Atc",
                    "SELECT current_database() || ':' || current_setting('port')",
                ])
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        let port = |m: usize| observed.members[m].instances[0].port;
        assert_eq!(query(&["psql", "pq"]).1, format!("app:{}", port(0)));
        assert_eq!(
            query(&["psql", "pq", "--coordinator"]).1,
            format!("app:{}", port(0))
        );
        assert_eq!(
            query(&["psql", "pq", "--shard", "1"]).1,
            format!("app:{}", port(2))
        );
        let (ok, _, err) = query(&["psql", "pq", "--shard", "2"]);
        assert!(
            !ok && err.contains("has 2 shard(s), numbered 0 to 1"),
            "{err}"
        );
        let (ok, _, err) = query(&["psql", "nope"]);
        assert!(!ok && err.contains("no running cluster ns1/nope"), "{err}");

        // The postgres OS user gets in too (peer authentication, observed.json readable).
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(shardvault_testkit::shardvault_bin())
            .args(["psql", "pq", "--state-dir", state.path().to_str().unwrap()])
            .args(["-n", "ns1", "--", "-Atc", "SELECT current_user"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            "postgres",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        destroy(&plan.dir).await.unwrap();
    }
}
