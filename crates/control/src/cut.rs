//! The cluster-wide restore point: one consistent moment across every member.
//!
//! Restore points created one member after another are not a consistent cut: a cross-shard
//! two-phase commit can be committed on one shard and still prepared on another between
//! them. So for `ddp` we first raise a write barrier: on every member primary at once, the
//! user tables of the database are locked in SHARE mode. That lock waits for every write in
//! flight, prepared transactions included (they keep their locks), and holds new ones. A
//! distributed transaction half-way through can wait on one shard for a lock we hold while
//! we wait on another shard for its lock; `lock_timeout` breaks that wait, we release
//! everything and retry with backoff. While every lock is held no member has a write in
//! flight, so the restore points taken then are one cut. For `citus`,
//! `citus_create_restore_point` does the equivalent inside Citus.

use std::time::{Duration, Instant};

use futures::future::{BoxFuture, try_join_all};
use rand::Rng;
use shardvault_api::shardedbackup::{MemberRestorePoint, RestorePoint};
use tokio_postgres::{Client, NoTls};

/// How the cut is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutMode {
    /// Write barrier on every member, then every restore point (ddp).
    Barrier {
        /// Longest wait for one lock before the attempt is abandoned.
        lock_timeout: Duration,
        /// Attempts before giving up.
        max_attempts: u32,
    },
    /// `citus_create_restore_point` on the coordinator (citus).
    Citus,
    /// No barrier: restore points one member after another, with a delay between them.
    /// Not consistent; exists so tests can prove the consistency check can fail.
    UnsafeSequential { delay: Duration },
}

impl Default for CutMode {
    fn default() -> Self {
        CutMode::Barrier {
            lock_timeout: Duration::from_millis(15),
            max_attempts: 60,
        }
    }
}

/// A member primary to take the cut on.
#[derive(Debug, Clone)]
pub struct CutMember {
    /// Member name.
    pub name: String,
    /// libpq connection string to the member primary's database.
    pub conninfo: String,
}

/// Where one member stood at the cut.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPoint {
    /// Member name.
    pub name: String,
    /// LSN of the restore point record.
    pub lsn: String,
    /// WAL segment holding the restore point.
    pub wal_file: String,
    /// Timeline of the member.
    pub timeline: u32,
}

/// The result of a cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// Restore point name (the same on every member).
    pub name: String,
    /// When the cut was taken.
    pub time: jiff::Timestamp,
    /// How long writes were held back, in milliseconds.
    pub write_pause_ms: f64,
    /// Attempts the barrier needed.
    pub attempts: u32,
    /// Every member's position, in the order given.
    pub members: Vec<MemberPoint>,
}

/// Why a cut could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// A member could not be reached or refused a statement.
    #[error("member {member}: {}", shardvault_pg::sql_error::message(cause))]
    Member {
        member: String,
        cause: tokio_postgres::Error,
    },
    /// A member's restore point record is not where Citus wrote it.
    #[error(
        "member {member}: {found} restore point records named {name:?} between WAL {from} and {to} instead of one; the restore point cannot be located, take the backup again"
    )]
    RestorePointNotFound {
        member: String,
        name: String,
        from: String,
        to: String,
        found: usize,
    },
    /// The work done while writes were held failed (nothing was created).
    #[error("while writes were held: {0}")]
    WhileHeld(String),
    /// The barrier never held.
    #[error(
        "the write barrier could not be taken in {attempts} attempts (lock_timeout {timeout_ms} ms): long-running writes hold table locks; retry when the write load is lighter"
    )]
    BarrierNotTaken { attempts: u32, timeout_ms: u128 },
}

fn member_err(member: &str) -> impl FnOnce(tokio_postgres::Error) -> CutError + '_ {
    move |source| CutError::Member {
        member: member.to_string(),
        cause: source,
    }
}

async fn connect(m: &CutMember) -> Result<Client, CutError> {
    let (client, conn) = tokio_postgres::connect(&m.conninfo, NoTls)
        .await
        .map_err(member_err(&m.name))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Work run once while the cut holds, right before the restore points are created (volume
/// snapshots, and the end of their backups): every member's writes wait while it runs.
pub type WhileHeld<'a> = &'a (dyn Fn() -> BoxFuture<'a, Result<(), String>> + Sync);

/// Creates restore point `name` on every member as one consistent cut.
pub async fn take_cut(members: &[CutMember], name: &str, mode: &CutMode) -> Result<Cut, CutError> {
    take_cut_holding(members, name, mode, None).await
}

/// [`take_cut`], running `held` while writes are held (for `citus`, before its restore
/// point, which blocks commit decisions itself).
pub async fn take_cut_holding(
    members: &[CutMember],
    name: &str,
    mode: &CutMode,
    held: Option<WhileHeld<'_>>,
) -> Result<Cut, CutError> {
    let clients = try_join_all(members.iter().map(connect)).await?;
    let started = Instant::now();
    let run_held = || async {
        match held {
            Some(work) => work().await.map_err(CutError::WhileHeld),
            None => Ok(()),
        }
    };
    let (points, attempts, pause) = match mode {
        CutMode::Barrier {
            lock_timeout,
            max_attempts,
        } => barrier_cut(members, &clients, name, *lock_timeout, *max_attempts, held).await?,
        CutMode::Citus => {
            run_held().await?;
            let before =
                try_join_all(members.iter().zip(&clients).map(|(m, c)| insert_lsn(m, c))).await?;
            clients[0]
                .query_one("SELECT citus_create_restore_point($1)::text", &[&name])
                .await
                .map_err(member_err(&members[0].name))?;
            let pause = started.elapsed();
            let after =
                try_join_all(members.iter().zip(&clients).map(|(m, c)| insert_lsn(m, c))).await?;
            // Citus writes the point on every node; find each member's record between.
            let mut points = Vec::new();
            for (i, m) in members.iter().enumerate() {
                points.push(find_restore_point(m, name, &before[i], &after[i]).await?);
            }
            (points, 1, pause)
        }
        CutMode::UnsafeSequential { delay } => {
            run_held().await?;
            let mut points = Vec::new();
            for (i, (m, c)) in members.iter().zip(&clients).enumerate() {
                if i > 0 {
                    tokio::time::sleep(*delay).await;
                }
                points.push(restore_point(m, c, name).await?);
            }
            (points, 1, Duration::ZERO)
        }
    };
    Ok(Cut {
        name: name.to_string(),
        time: jiff::Timestamp::now(),
        write_pause_ms: pause.as_secs_f64() * 1000.0,
        attempts,
        members: points,
    })
}

const USER_TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1";

async fn barrier_cut(
    members: &[CutMember],
    clients: &[Client],
    name: &str,
    lock_timeout: Duration,
    max_attempts: u32,
    held: Option<WhileHeld<'_>>,
) -> Result<(Vec<MemberPoint>, u32, Duration), CutError> {
    // Writers can be held back by every attempt (granted locks, and the queued lock
    // requests they wait behind), so the pause is the sum of all attempts, not the last.
    let mut pause = Duration::ZERO;
    for attempt in 1..=max_attempts {
        let started = Instant::now();
        let locked = futures::future::join_all(
            members
                .iter()
                .zip(clients)
                .map(|(m, c)| lock_member(m, c, lock_timeout)),
        )
        .await;
        let failure = locked.iter().find_map(|r| r.as_ref().err());
        // Why this attempt gave way: a lock wait that timed out (or deadlocked), or `false`
        // for a prepared transaction seen while every lock was held.
        let lock_wait = match failure {
            None => {
                // Locks hold writers, but a participant that only read holds no lock the
                // barrier waits for and can still be prepared: no cut while one is.
                let prepared = try_join_all(
                    members
                        .iter()
                        .zip(clients)
                        .map(|(m, c)| prepared_count(m, c)),
                )
                .await;
                match prepared {
                    Ok(counts) if counts.iter().all(|n| *n == 0) => {
                        if let Some(work) = held
                            && let Err(e) = work().await
                        {
                            let _ = release_all(members, clients, "ROLLBACK").await;
                            return Err(CutError::WhileHeld(e));
                        }
                        let points = try_join_all(
                            members
                                .iter()
                                .zip(clients)
                                .map(|(m, c)| restore_point(m, c, name)),
                        )
                        .await;
                        let released = release_all(members, clients, "COMMIT").await;
                        pause += started.elapsed();
                        let points = points?;
                        released?;
                        return Ok((points, attempt, pause));
                    }
                    Ok(_) => false,
                    Err(e) => {
                        let _ = release_all(members, clients, "ROLLBACK").await;
                        return Err(e);
                    }
                }
            }
            Some(e) if is_retryable(e) => true,
            Some(_) => {
                let _ = release_all(members, clients, "ROLLBACK").await;
                return Err(locked
                    .into_iter()
                    .find_map(Result::err)
                    .expect("a failure was seen"));
            }
        };
        release_all(members, clients, "ROLLBACK").await?;
        pause += started.elapsed();
        if lock_wait {
            cancel_autovacuum(members, clients).await;
        }
        let base = 5u64 << attempt.min(6);
        let jitter = rand::rng().random_range(0..base);
        tracing::debug!(attempt, lock_wait, "write barrier not taken; retrying");
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }
    Err(CutError::BarrierNotTaken {
        attempts: max_attempts,
        timeout_ms: lock_timeout.as_millis(),
    })
}

/// Prepared two-phase transactions of the member's database.
async fn prepared_count(m: &CutMember, c: &Client) -> Result<i64, CutError> {
    Ok(c.query_one(
        "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
        &[],
    )
    .await
    .map_err(member_err(&m.name))?
    .get(0))
}

/// Cancels autovacuum workers of the members' databases: their locks conflict with the
/// barrier's, and PostgreSQL cancels them for a waiting lock only after `deadlock_timeout`,
/// longer than the barrier waits. Autovacuum simply runs again later.
async fn cancel_autovacuum(members: &[CutMember], clients: &[Client]) {
    for (m, c) in members.iter().zip(clients) {
        if let Err(e) = c
            .batch_execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'autovacuum worker' AND datname = current_database()",
            )
            .await
        {
            tracing::debug!(member = %m.name, "cannot cancel autovacuum: {e}");
        }
    }
}

/// Lock timeouts and deadlocks end an attempt, not the cut.
fn is_retryable(e: &CutError) -> bool {
    use tokio_postgres::error::SqlState;
    match e {
        CutError::Member { cause: source, .. } => {
            source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                || source.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        }
        CutError::BarrierNotTaken { .. }
        | CutError::RestorePointNotFound { .. }
        | CutError::WhileHeld(_) => false,
    }
}

async fn lock_member(m: &CutMember, c: &Client, lock_timeout: Duration) -> Result<(), CutError> {
    let err = member_err(&m.name);
    c.batch_execute(&format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'",
        lock_timeout.as_millis().max(1)
    ))
    .await
    .map_err(err)?;
    let tables: Vec<String> = c
        .query(USER_TABLES, &[])
        .await
        .map_err(member_err(&m.name))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !tables.is_empty() {
        c.batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
            .await
            .map_err(member_err(&m.name))?;
    }
    Ok(())
}

async fn release_all(
    members: &[CutMember],
    clients: &[Client],
    verb: &str,
) -> Result<(), CutError> {
    try_join_all(
        members
            .iter()
            .zip(clients)
            .map(|(m, c)| async move { c.batch_execute(verb).await.map_err(member_err(&m.name)) }),
    )
    .await
    .map(|_| ())
}

async fn restore_point(m: &CutMember, c: &Client, name: &str) -> Result<MemberPoint, CutError> {
    let row = c
        .query_one(
            "SELECT lsn::text, pg_walfile_name(lsn), \
             (SELECT timeline_id FROM pg_control_checkpoint())::int4 \
             FROM pg_create_restore_point($1) AS lsn",
            &[&name],
        )
        .await
        .map_err(member_err(&m.name))?;
    Ok(MemberPoint {
        name: m.name.clone(),
        lsn: row.get(0),
        wal_file: row.get(1),
        timeline: row.get::<_, i32>(2) as u32,
    })
}

/// The member's current WAL insert position.
async fn insert_lsn(m: &CutMember, c: &Client) -> Result<String, CutError> {
    Ok(c.query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(member_err(&m.name))?
        .get(0))
}

/// Where restore point `name` really is on member `m`: its `XLOG_RESTORE_POINT` record
/// between WAL positions `from` and `to`, read with pg_walinspect (PostgreSQL 15 contrib)
/// in the member's `postgres` database once the WAL up to `to` is flushed.
async fn find_restore_point(
    m: &CutMember,
    name: &str,
    from: &str,
    to: &str,
) -> Result<MemberPoint, CutError> {
    let c = connect(&CutMember {
        name: m.name.clone(),
        conninfo: format!("{} dbname=postgres", m.conninfo),
    })
    .await?;
    let err = || member_err(&m.name);
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .await
        .map_err(err())?;
    // The record is inserted, not flushed: the WAL writer flushes it within moments.
    let deadline = Instant::now() + FLUSH_WAIT;
    while !c
        .query_one(
            "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
            &[&to],
        )
        .await
        .map_err(err())?
        .get::<_, bool>(0)
    {
        if Instant::now() > deadline {
            c.batch_execute("SELECT pg_switch_wal()")
                .await
                .map_err(err())?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = c
        .query(
            "SELECT end_lsn::text, pg_walfile_name(end_lsn), \
             (SELECT timeline_id FROM pg_control_checkpoint())::int4 \
             FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn) \
             WHERE resource_manager = 'XLOG' AND record_type = 'RESTORE_POINT' AND description = $3",
            &[&from, &to, &name],
        )
        .await
        .map_err(err())?;
    match rows.as_slice() {
        [row] => Ok(MemberPoint {
            name: m.name.clone(),
            lsn: row.get(0),
            wal_file: row.get(1),
            timeline: row.get::<_, i32>(2) as u32,
        }),
        _ => Err(CutError::RestorePointNotFound {
            member: m.name.clone(),
            name: name.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            found: rows.len(),
        }),
    }
}

/// How long a restore point's record may take to be flushed before a WAL switch forces it.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The status form of a cut (`status.restorePoint`, catalog records).
impl From<&Cut> for RestorePoint {
    fn from(cut: &Cut) -> RestorePoint {
        RestorePoint {
            name: cut.name.clone(),
            time: cut.time.to_string(),
            write_pause_ms: (cut.write_pause_ms * 100.0).round() / 100.0,
            barrier_attempts: cut.attempts,
            members: cut
                .members
                .iter()
                .map(|p| MemberRestorePoint {
                    name: p.name.clone(),
                    lsn: p.lsn.clone(),
                    wal_file: p.wal_file.clone(),
                    timeline: p.timeline,
                })
                .collect(),
        }
    }
}
