//! A restored member never reaches its source cluster. Until the runtime has repointed it,
//! a restored primary runs *isolated*: it starts with settings that keep every background
//! job that talks to other nodes off (for citus: 2PC recovery, deadlock detection, deferred
//! drops, the background task queue, metadata sync) and with `hot_standby = off`, so no
//! client runs a query while it recovers. Right after promotion, before anything else, its
//! links are rewritten *locally*: the ddp coordinator's foreign servers, or every member's
//! `pg_dist_node` (a direct catalog update: `citus_set_coordinator_host` and
//! `citus_update_node` would propagate to the nodes the catalog still names, the source's).
//! When every member is repointed, in-doubt citus transactions are resolved against the
//! restored nodes only, by each initiator's `pg_dist_transaction`; then the settings are
//! released. A file `isolated` in the primary's instance directory marks the state, so a
//! runtime that stops half-way starts isolated again.

use std::path::{Path, PathBuf};

use super::cluster::Sharding;
use super::error::RuntimeError;
use super::instance::Instance;
use super::wiring;

const MARKER: &str = "isolated";

/// Citus's settings that keep a node from contacting other nodes by itself.
const CITUS_SETTINGS: [(&str, &str); 6] = [
    ("citus.recover_2pc_interval", "-1"),
    ("citus.distributed_deadlock_detection_factor", "-1"),
    ("citus.defer_shard_delete_interval", "-1"),
    ("citus.background_task_queue_interval", "-1"),
    // The longest interval Citus takes (7 days); it has no "off".
    ("citus.metadata_sync_interval", "604800000"),
    ("citus.enable_metadata_sync", "off"),
];

/// The isolation marker of an instance.
fn marker(instance_dir: &Path) -> PathBuf {
    instance_dir.join(MARKER)
}

/// True while the primary in `instance_dir` has not been released from isolation.
pub fn is_isolated(instance_dir: &Path) -> bool {
    marker(instance_dir).is_file()
}

/// Marks the primary in `instance_dir` isolated (before its first start after a restore).
pub fn mark(instance_dir: &Path) -> Result<(), RuntimeError> {
    let path = marker(instance_dir);
    std::fs::write(&path, b"").map_err(RuntimeError::io(&path))
}

/// The settings an isolated primary starts with.
pub fn settings(sharding: Sharding) -> Vec<(String, String)> {
    let mut s = vec![("hot_standby".to_string(), "off".to_string())];
    if sharding == Sharding::Citus {
        s.extend(
            CITUS_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    s
}

/// Rewrites, on member `index` only, every link to other members so that it names the
/// restored ones (`primaries`, coordinator first). Returns what changed.
pub async fn repoint(
    sharding: Sharding,
    index: usize,
    primaries: &[&Instance],
    database: &str,
) -> Result<Vec<String>, RuntimeError> {
    match sharding {
        Sharding::Ddp if index == 0 => {
            wiring::wire_ddp(primaries[0], &primaries[1..], database).await
        }
        Sharding::Ddp => Ok(Vec::new()),
        Sharding::Citus => rewrite_pg_dist_node(index, primaries, database).await,
    }
}

/// Points every row of member `index`'s `pg_dist_node` at the restored servers: group 0 at
/// the coordinator, the workers in node id order at the shards.
async fn rewrite_pg_dist_node(
    index: usize,
    primaries: &[&Instance],
    database: &str,
) -> Result<Vec<String>, RuntimeError> {
    let member = primaries[index];
    let sql = |what: &str| {
        let (instance, what) = (member.name.clone(), what.to_string());
        move |source| RuntimeError::Sql {
            instance,
            what,
            cause: source,
        }
    };
    let client = member.connect(database).await?;
    let has_citus = client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])
        .await
        .map_err(sql("reading pg_extension"))?
        .is_some();
    if !has_citus {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT nodeid, groupid, nodename, nodeport FROM pg_dist_node ORDER BY groupid = 0 DESC, nodeid",
            &[],
        )
        .await
        .map_err(sql("reading pg_dist_node"))?;
    let mut workers = primaries[1..].iter();
    let mut actions = Vec::new();
    for row in rows {
        let (id, group, name, port): (i32, i32, String, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let target = if group == 0 {
            primaries[0]
        } else {
            *workers.next().ok_or_else(|| {
                RuntimeError::Plan(format!(
                    "{}: pg_dist_node names more workers than the cluster has shards ({})",
                    member.name,
                    primaries.len() - 1
                ))
            })?
        };
        let host = target.socket_dir.to_string_lossy().into_owned();
        let wanted_port = i32::from(target.port);
        if name == host && port == wanted_port {
            continue;
        }
        client
            .execute(
                "UPDATE pg_dist_node SET nodename = $1, nodeport = $2 WHERE nodeid = $3",
                &[&host, &wanted_port, &id],
            )
            .await
            .map_err(sql(&format!("repointing pg_dist_node row {id}")))?;
        actions.push(format!(
            "repointed citus node {id} on {} to {} (locally, before anything ran)",
            member.name, target.name
        ));
    }
    Ok(actions)
}

/// Resolves every two-phase transaction a citus node left in doubt, against the restored
/// members only: a `citus_<group>_...` transaction prepared on any member is committed when
/// the initiating member (`group`) has its record in `pg_dist_transaction`, else rolled
/// back. Returns what was done.
pub async fn resolve_in_doubt(
    primaries: &[&Instance],
    database: &str,
) -> Result<Vec<String>, RuntimeError> {
    let mut clients = Vec::new();
    for p in primaries {
        clients.push(p.connect(database).await?);
    }
    // Each member's group id and the commit records it holds as an initiator.
    let mut initiators = Vec::new();
    for (p, c) in primaries.iter().zip(&clients) {
        let group: i32 = c
            .query_one("SELECT groupid FROM pg_dist_local_group", &[])
            .await
            .map_err(RuntimeError::sql(&p.name, "reading pg_dist_local_group"))?
            .get(0);
        let records: Vec<String> = c
            .query("SELECT gid FROM pg_dist_transaction", &[])
            .await
            .map_err(RuntimeError::sql(&p.name, "reading pg_dist_transaction"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        initiators.push((group, records));
    }
    let mut actions = Vec::new();
    for (p, c) in primaries.iter().zip(&clients) {
        let prepared: Vec<String> = c
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() \
                 AND gid LIKE 'citus\\_%' ORDER BY gid",
                &[],
            )
            .await
            .map_err(RuntimeError::sql(&p.name, "listing prepared transactions"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for gid in prepared {
            let group: Option<i32> = gid.split('_').nth(1).and_then(|g| g.parse().ok());
            let Some((_, records)) = initiators.iter().find(|(g, _)| Some(*g) == group) else {
                // Not started by a member of this cluster: not ours to decide.
                continue;
            };
            let commit = records.contains(&gid);
            let verb = if commit { "COMMIT" } else { "ROLLBACK" };
            let escaped = gid.replace('\'', "''");
            c.batch_execute(&format!("{verb} PREPARED '{escaped}'"))
                .await
                .map_err(RuntimeError::sql(
                    &p.name,
                    &format!("{verb} PREPARED {gid}"),
                ))?;
            actions.push(format!(
                "{} in-doubt transaction {gid} on {} ({})",
                if commit { "committed" } else { "rolled back" },
                p.name,
                if commit {
                    "its initiator recorded the commit"
                } else {
                    "its initiator has no commit record"
                }
            ));
        }
    }
    Ok(actions)
}

/// After a restore to `time` of a ddp cluster: rolls back, on every restored member, each
/// two-phase transaction that some member prepared after `time`. Recovery to a time stops
/// at the first commit after it but replays prepares past it; a distributed commit comes
/// only after all its prepares, so such a transaction committed nowhere by `time` (one clock
/// on one host). One prepared at or before `time` may have committed on a member that shows
/// nothing: it is left in doubt, and said so. Returns what was done.
pub async fn roll_back_prepared_after(
    primaries: &[&Instance],
    time: &str,
) -> Result<Vec<String>, RuntimeError> {
    /// One prepared transaction of a restored member.
    struct Prepared {
        member: usize,
        gid: String,
        database: String,
        after_target: bool,
        at: String,
    }
    let mut found = Vec::new();
    for (member, p) in primaries.iter().enumerate() {
        let rows = p
            .connect("postgres")
            .await?
            .query(
                "SELECT gid, database, prepared > $1::text::timestamptz, prepared::text \
                 FROM pg_prepared_xacts ORDER BY gid",
                &[&time],
            )
            .await
            .map_err(RuntimeError::sql(&p.name, "listing prepared transactions"))?;
        found.extend(rows.iter().map(|r| Prepared {
            member,
            gid: r.get(0),
            database: r.get(1),
            after_target: r.get(2),
            at: r.get(3),
        }));
    }
    let late: std::collections::BTreeSet<&str> = found
        .iter()
        .filter(|f| f.after_target)
        .map(|f| f.gid.as_str())
        .collect();
    let mut actions = Vec::new();
    for f in &found {
        let (p, gid) = (primaries[f.member], &f.gid);
        if !late.contains(gid.as_str()) {
            actions.push(format!(
                "left in doubt: transaction {gid:?} on {} was prepared at {}, before the target \
                 time, and may have committed on another member: end it with COMMIT PREPARED or \
                 ROLLBACK PREPARED",
                p.name, f.at
            ));
            continue;
        }
        let escaped = gid.replace('\'', "''");
        p.connect(&f.database)
            .await?
            .batch_execute(&format!("ROLLBACK PREPARED '{escaped}'"))
            .await
            .map_err(RuntimeError::sql(
                &p.name,
                &format!("ROLLBACK PREPARED {gid}"),
            ))?;
        actions.push(format!(
            "rolled back in-doubt transaction {gid:?} on {} (prepared after the target time on a \
             member, so committed nowhere by then)",
            p.name
        ));
    }
    Ok(actions)
}

/// Ends isolation of a primary: its normal settings (`released`, the same instance without
/// the isolation settings) are written and reloaded, and the marker removed.
pub async fn release(released: &Instance) -> Result<(), RuntimeError> {
    released.write_settings()?;
    released
        .connect("postgres")
        .await?
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|source| RuntimeError::Sql {
            instance: released.name.clone(),
            what: "reloading its settings after isolation".to_string(),
            cause: source,
        })?;
    let path = marker(&released.dir);
    std::fs::remove_file(&path).map_err(RuntimeError::io(&path))
}
