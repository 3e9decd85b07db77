//! Schedules, retention and several destinations through the daemon, on real PostgreSQL
//! servers: a driven clock (`SHARDVAULT_CLOCK_FILE`) walks an hourly schedule through a day;
//! retention keeps the newest 7 managed backups with their objects and the WAL they need, an
//! unmanaged backup keeps its WAL until told otherwise, an overlapping run is skipped, and the
//! oldest kept backup still restores. A second cluster with two storages restores from the
//! second after the first one's objects are deleted by hand.

use std::collections::BTreeSet;
use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use shardvault_pg::fingerprint;
use shardvault_testkit::cluster::{assert_same_content, sql};
use shardvault_testkit::daemon::{Daemon, ready};

fn storage(name: &str, dir: &Path) -> String {
    format!(
        "apiVersion: stackgres.io/v1beta1\nkind: SGObjectStorage\nmetadata:\n  name: {name}\nspec:\n  type: filesystem\n  filesystem:\n    path: {}\n",
        dir.display()
    )
}

/// A small ddp cluster (coordinator and one shard, one server each) with `backups` entries
/// (YAML list items, indented for `configurations.backups`) or a restore.
fn cluster(name: &str, tail: &str) -> String {
    format!(
        "
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: {name}
spec:
  type: ddp
  database: sharded
  postgres:
    version: '15'
  coordinator:
    instances: 1
    pods:
      persistentVolume:
        size: 1Gi
  shards:
    clusters: 1
    instancesPerCluster: 1
    pods:
      persistentVolume:
        size: 1Gi
{tail}"
    )
}

/// The scheduled cluster: hourly backups (`entry`) and hourly cluster-wide restore points.
fn sched_cluster(entry: &str) -> String {
    cluster("sched", entry).replace(
        "metadata:\n  name: sched\n",
        "metadata:\n  name: sched\n  annotations:\n    shardvault.io/restore-point-schedule: '0 * * * *'\n",
    )
}

fn restore_from(backup: &str) -> String {
    format!("  initialData:\n    restore:\n      fromBackup:\n        name: {backup}\n")
}

/// Applies a manifest through a file (`apply -f`), which must be accepted.
fn apply(d: &Daemon, yaml: &str) {
    let file = d.state().join("manifest.yaml");
    std::fs::write(&file, yaml).unwrap();
    d.ok(&["apply", "-f", file.to_str().unwrap()]);
}

/// True when SGShardedBackup `name` exists.
fn exists(d: &Daemon, name: &str) -> bool {
    let out = d.sv(&["get", "sgshardedbackup", name, "-o", "json"]);
    out.status.success()
        && serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|o| o["kind"] == "SGShardedBackup")
}

fn phase(obj: &Value) -> &str {
    obj.pointer("/status/process/status")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn completed(d: &Daemon, backup: &str) -> Value {
    let b = d.wait_until("sgshardedbackup", backup, 180, |o| {
        matches!(phase(o), "Completed" | "Failed")
    });
    assert_eq!(phase(&b), "Completed", "{b:#}");
    b
}

/// Names of the entries of a directory (empty when it does not exist).
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Backups stored in a member directory (those with a manifest: the filesystem backend leaves
/// empty directories behind deleted objects).
fn stored_backups(member_dir: &Path) -> BTreeSet<String> {
    let dir = member_dir.join("basebackups");
    entries(&dir)
        .into_iter()
        .filter(|b| dir.join(b).join("manifest.json").exists())
        .collect()
}

/// WAL segment files (not `.history`) of a member directory, sorted.
fn wal_segments(member_dir: &Path) -> Vec<String> {
    entries(&member_dir.join("wal"))
        .into_iter()
        .filter(|f| !f.ends_with(".history"))
        .collect()
}

fn start_wal_file(d: &Daemon, sg_backup: &str) -> String {
    d.json(&["get", "sgbackup", sg_backup])["status"]["backupInformation"]["startWalFile"]
        .as_str()
        .expect("a completed SGBackup has a startWalFile")
        .to_string()
}

/// GET /metrics from the daemon.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("the metrics port answers");
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

const T0: &str = "2030-01-01T00:00:10Z";

fn at_hour(h: i64) -> Timestamp {
    T0.parse::<Timestamp>()
        .unwrap()
        .checked_add(SignedDuration::from_hours(h))
        .unwrap()
}

/// File names of the restore point records of hours `hours`.
fn rp_records(hours: std::ops::RangeInclusive<i64>) -> BTreeSet<String> {
    hours
        .map(|h| format!("sched-rp-{}.json", at_hour(h).strftime("%Y-%m-%d-%H-00-00")))
        .collect()
}

fn scheduled(h: i64) -> String {
    format!("sched-{}", at_hour(h).strftime("%Y-%m-%d-%H-00-00"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_schedule_over_a_day_keeps_seven_with_their_wal_and_the_oldest_restores() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("now");
    let set_clock = |t: Timestamp| std::fs::write(&clock, t.to_string()).unwrap();
    set_clock(at_hour(0));
    let minutes = |h: i64, m: i64| {
        at_hour(h)
            .checked_add(SignedDuration::from_mins(m))
            .unwrap()
    };
    // SAFETY: set before any thread of this test process reads the environment; the daemon
    // (a child process) inherits it. Other tests run in their own processes under nextest and
    // configure no schedule.
    unsafe { std::env::set_var(shardvault_control::clock::CLOCK_FILE_ENV, &clock) };
    let mut d = Daemon::start();
    let objects = d.state().join("objects");
    apply(&d, &storage("hourly", &objects));
    let entry = "  configurations:\n    backups:\n      - sgObjectStorage: hourly\n        cronSchedule: '0 * * * *'\n        retention: 7\n";
    apply(&d, &sched_cluster(entry));
    d.wait_until("sgshardedcluster", "sched", 30, |o| {
        o.pointer("/metadata/annotations/shardvault.io~1backup-schedule")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("2030-01-01T01:00:00Z"))
    });

    // Hour 1 falls while the cluster is still starting: the backup waits (Pending), so the
    // hour-2 run finds it going and is skipped (concurrency Forbid).
    set_clock(at_hour(1));
    let first = d.wait_until("sgshardedbackup", &scheduled(1), 30, |o| {
        o["kind"] == "SGShardedBackup"
    });
    assert_eq!(first["spec"]["managedLifecycle"], true, "{first:#}");
    assert_eq!(
        first["metadata"]["labels"]["stackgres.io/cluster-name"],
        "sched"
    );
    assert_eq!(
        first["metadata"]["labels"]["shardvault.io/backup-entry"],
        "0"
    );
    assert_eq!(
        first["metadata"]["annotations"]["shardvault.io/backup-entry"],
        "0"
    );
    let still_going = d.json(&["get", "sgshardedbackup", &scheduled(1)]);
    assert_ne!(
        phase(&still_going),
        "Completed",
        "hour 1 must still be going"
    );
    set_clock(at_hour(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !d
        .ok(&["describe", "sgshardedcluster", "sched"])
        .contains("ScheduleSkipped")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no ScheduleSkipped Event"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !exists(&d, &scheduled(2)),
        "a skipped run creates no backup"
    );

    d.wait_until("sgshardedcluster", "sched", 120, ready);
    let source = d.observed("sched");
    let coord = source.primary_conninfo(0).unwrap();
    sql(
        &coord,
        "SELECT ddp_create_distributed_table('events', 'id bigint primary key, hour int not null', 'id');",
    )
    .await;
    completed(&d, &scheduled(1));

    // Hours 3..=25: 23 more runs, 24 backups in all; an unmanaged one after hour 12.
    let started = std::time::Instant::now();
    let mut at_oldest_kept = Vec::new();
    let (mut target, mut at_target, mut at_rp20) = (None, Vec::new(), Vec::new());
    for h in 3..=25 {
        sql(
            &coord,
            &format!("INSERT INTO events SELECT i, {h} FROM generate_series({h} * 100, {h} * 100 + 49) i;"),
        )
        .await;
        set_clock(at_hour(h));
        completed(&d, &scheduled(h));
        if h == 12 {
            apply(
                &d,
                "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata:\n  name: keep-me\nspec:\n  sgShardedCluster: sched\n  managedLifecycle: false\n",
            );
            completed(&d, "keep-me");
        }
        if h == 19 {
            at_oldest_kept = fingerprint::members(&source).await.expect("fingerprint");
        }
        if h == 20 {
            // Nothing was written since the hour-20 tick: this is the content at the
            // hour-20 cluster-wide restore point.
            at_rp20 = fingerprint::members(&source).await.expect("fingerprint");
            // A time inside the retained window, after a later backup: reached from the
            // oldest kept backup through the retained WAL.
            sql(&coord, "UPDATE events SET hour = -1 WHERE id % 3 = 0;").await;
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            target = Some(Timestamp::now());
            at_target = fingerprint::members(&source).await.expect("fingerprint");
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }
    eprintln!("23 scheduled backups in {:?}", started.elapsed());
    let annotation = d.json(&["get", "sgshardedcluster", "sched"])["metadata"]["annotations"]
        ["shardvault.io/backup-schedule"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        annotation.contains("\"lastScheduleTime\":\"2030-01-02T01:00:00Z\"")
            && annotation.contains("\"nextScheduleTime\":\"2030-01-02T02:00:00Z\""),
        "{annotation}"
    );

    // Every hour with the cluster Ready also got a cluster-wide restore point, recorded in
    // storage and on the cluster, its WAL archived.
    let rp_state = |o: &Value| -> Value {
        o.pointer("/metadata/annotations/shardvault.io~1restore-point-state")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null)
    };
    let cluster_obj = d.wait_until("sgshardedcluster", "sched", 60, |o| {
        rp_state(o)["lastRestorePoint"]["name"] == "sched-rp-2030-01-02-01-00-00"
    });
    let state = rp_state(&cluster_obj);
    let last = &state["lastRestorePoint"];
    for m in last["members"].as_array().unwrap() {
        let member = m["name"].as_str().unwrap();
        let wal = m["walFile"].as_str().unwrap();
        assert!(
            objects
                .join("shardvault/default/sched")
                .join(member)
                .join("wal")
                .join(wal)
                .exists(),
            "{member}: the restore point's segment {wal} is archived"
        );
    }
    let events = d.ok(&["describe", "sgshardedcluster", "sched"]);
    assert!(events.contains("RestorePointCreated"), "{events}");

    let wide = d.ok(&["get", "sgshardedcluster", "sched", "-o", "wide"]);
    assert!(
        wide.contains("NEXT BACKUP") && wide.contains("backups[0] 2030-01-02T02:00:00Z"),
        "{wide}"
    );

    // Retention: exactly the 7 newest managed backups remain, with their objects.
    let kept: BTreeSet<String> = (19..=25).map(scheduled).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let managed = loop {
        let list = d.json(&[
            "get",
            "sgshardedbackup",
            "-l",
            "stackgres.io/cluster-name=sched",
        ]);
        let names: BTreeSet<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        if names == kept {
            break names;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not settle on hours 19..25: {names:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        exists(&d, "keep-me"),
        "an unmanaged backup is never deleted"
    );
    // Restore point records stay from the oldest counted backup on (the unmanaged one,
    // after hour 12), beside the sharded backup records and the coordinator's backups.
    for dir in ["restorepoints", "sched-coord/restorepoints"] {
        assert_eq!(
            entries(&objects.join("shardvault/default/sched").join(dir)),
            rp_records(13..=25),
            "{dir}"
        );
    }
    let listed = d.ok(&["get", "restorepoints", "sched"]);
    assert!(
        listed.starts_with("CLUSTER   NAME")
            && listed.lines().count() == 14
            && listed.contains("sched-rp-2030-01-01-13-00-00")
            && listed.contains("sched-rp-2030-01-02-01-00-00"),
        "{listed}"
    );
    let prefix = objects.join("shardvault/default/sched");
    for member in ["sched-coord", "sched-shard0"] {
        let suffix = member.trim_start_matches("sched-");
        let want: BTreeSet<String> = managed
            .iter()
            .map(|b| format!("{b}-{suffix}"))
            .chain([format!("keep-me-{suffix}")])
            .collect();
        assert_eq!(
            stored_backups(&prefix.join(member)),
            want,
            "{member}: the objects of deleted backups are gone, the kept ones stay"
        );
        // The unmanaged backup (hour 12) keeps its WAL: nothing from its start on is gone,
        // everything before it is.
        let segments = wal_segments(&prefix.join(member));
        let keep_from = start_wal_file(&d, &format!("keep-me-{suffix}"));
        assert_eq!(
            segments.first(),
            Some(&keep_from),
            "{member}: WAL starts at the unmanaged backup's start segment"
        );
    }
    // Let the pass that follows the last removal finish before storage is touched by hand.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let listed = d.ok(&["describe", "sgshardedcluster", "sched"]);
    assert!(
        listed.contains("RetentionDeleted") && listed.contains("WalDeleted"),
        "{listed}"
    );

    // `retention plan` shows what the next pass would delete, and deletes nothing: a stray
    // old segment appears in storage (the controller rescans only when resources change).
    let stray = prefix.join("sched-coord/wal/000000010000000000000001");
    std::fs::write(&stray, b"stray").unwrap();
    let plan = d.ok(&["retention", "plan", "sched"]);
    assert!(
        plan.contains("backups[0] (retention 7): keep 7 managed backup(s)")
            && plan.contains("delete WAL of sched-coord: 1 file(s), 000000010000000000000001 .. 000000010000000000000001")
            && plan.contains("keep all WAL of sched-shard0"),
        "{plan}"
    );
    assert!(stray.exists(), "retention plan deletes nothing");

    // Without retainWalsForUnmanagedLifecycle, WAL before the oldest kept managed backup goes;
    // the unmanaged backup itself stays.
    apply(
        &d,
        &sched_cluster(&format!(
            "{entry}        retainWalsForUnmanagedLifecycle: false\n"
        )),
    );
    for member in ["sched-coord", "sched-shard0"] {
        let suffix = member.trim_start_matches("sched-");
        let oldest = start_wal_file(&d, &format!("{}-{suffix}", scheduled(19)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wal_segments(&prefix.join(member)).first() != Some(&oldest) {
            assert!(
                std::time::Instant::now() < deadline,
                "{member}: WAL before {oldest} not deleted: {:?}",
                wal_segments(&prefix.join(member)).first()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(
            stored_backups(&prefix.join(member)).contains(&format!("keep-me-{suffix}")),
            "{member}: the unmanaged backup stays"
        );
    }
    assert!(!stray.exists());
    for dir in ["restorepoints", "sched-coord/restorepoints"] {
        assert_eq!(
            entries(&objects.join("shardvault/default/sched").join(dir)),
            rp_records(20..=25),
            "{dir}: only restore points the kept backups reach"
        );
    }

    // The oldest kept backup still restores, to its restore point and to a later time.
    apply(&d, &cluster("oldest", &restore_from(&scheduled(19))));
    let target = target.expect("hour 20 recorded a time");
    apply(
        &d,
        &cluster(
            "oldest-at-time",
            &format!(
                "{}        pointInTimeRecovery:\n          restoreToTimestamp: \"{target}\"\n",
                restore_from(&scheduled(19))
            ),
        ),
    );
    // With `consistent: true` the same time stops every member at the newest cluster-wide
    // restore point before it (hour 20's), not at the time member by member.
    apply(
        &d,
        &cluster(
            "oldest-consistent",
            &format!(
                "{}        pointInTimeRecovery:\n          restoreToTimestamp: \"{target}\"\n          consistent: true\n",
                restore_from(&scheduled(19))
            ),
        ),
    );
    d.wait_until("sgshardedcluster", "oldest", 180, ready);
    d.wait_until("sgshardedcluster", "oldest-at-time", 180, ready);
    let consistent = d.wait_until("sgshardedcluster", "oldest-consistent", 180, ready);
    assert_eq!(
        consistent["status"]["restore"]["target"], "restore point sched-rp-2030-01-01-20-00-00",
        "{consistent:#}"
    );
    assert_same_content(
        &at_rp20,
        &fingerprint::members(&d.observed("oldest-consistent"))
            .await
            .expect("fingerprint"),
        "consistent restore to the newest restore point before a time",
    );
    assert_same_content(
        &at_oldest_kept,
        &fingerprint::members(&d.observed("oldest"))
            .await
            .expect("fingerprint"),
        "restore of the oldest kept backup",
    );
    assert_same_content(
        &at_target,
        &fingerprint::members(&d.observed("oldest-at-time"))
            .await
            .expect("fingerprint"),
        "restore of the oldest kept backup to a time after the next backup",
    );

    // The daemon is down over three runs: on restart, one catch-up run (the latest, 2 min
    // late), not three.
    d.signal("TERM");
    set_clock(minutes(28, 2));
    d.restart();
    completed(&d, &scheduled(28));
    assert!(!exists(&d, &scheduled(26)) && !exists(&d, &scheduled(27)));
    // Down past the starting deadline (6 min late): the run is missed, with an Event.
    d.signal("TERM");
    set_clock(minutes(29, 6));
    d.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !d
        .ok(&["describe", "sgshardedcluster", "sched"])
        .contains("ScheduleMissed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no ScheduleMissed Event"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!exists(&d, &scheduled(29)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_storage_restores_after_the_first_is_lost_and_metrics_show_it() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let d = Daemon::start_with(&["--metrics-listen", &addr]);
    let (a, b) = (d.state().join("objects-a"), d.state().join("objects-b"));
    apply(&d, &storage("primary", &a));
    apply(&d, &storage("offsite", &b));
    apply(
        &d,
        &cluster(
            "dual",
            "  configurations:\n    backups:\n      - sgObjectStorage: primary\n      - sgObjectStorage: offsite\n        path: /dr\n        compression: zstd\n",
        ),
    );
    d.wait_until("sgshardedcluster", "dual", 120, ready);
    let source = d.observed("dual");
    sql(
        &source.primary_conninfo(0).unwrap(),
        "SELECT ddp_create_distributed_table('items', 'id bigint primary key, v text not null', 'id');
         INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, 500) i;",
    )
    .await;
    apply(
        &d,
        "apiVersion: stackgres.io/v1\nkind: SGShardedBackup\nmetadata:\n  name: to-offsite\n  annotations:\n    shardvault.io/backup-entry: '1'\nspec:\n  sgShardedCluster: dual\n",
    );
    completed(&d, "to-offsite");
    let want = fingerprint::members(&source).await.expect("fingerprint");
    assert_eq!(
        stored_backups(&b.join("dr/dual-coord")),
        BTreeSet::from(["to-offsite-coord".to_string()])
    );
    assert!(
        stored_backups(&a.join("shardvault/default/dual/dual-coord")).is_empty(),
        "entry 1's backup goes only to entry 1's storage"
    );
    assert!(
        !wal_segments(&a.join("shardvault/default/dual/dual-coord")).is_empty(),
        "WAL is archived to every entry's storage"
    );

    let text = scrape(&addr);
    let entry = |e: &str| format!("{{namespace=\"default\",cluster=\"dual\",entry=\"{e}\"}}");
    let member = "{namespace=\"default\",cluster=\"dual\",member=\"dual-coord\"}";
    let backup = d.json(&["get", "sgshardedbackup", "to-offsite"]);
    let end: Timestamp = backup["status"]["process"]["timing"]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let last = sample(
        &text,
        &format!(
            "shardvault_backup_last_success_timestamp_seconds{}",
            entry("1")
        ),
    );
    assert!(
        (last - end.as_millisecond() as f64 / 1000.0).abs() < 0.01,
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "shardvault_backup_last_success_timestamp_seconds{}",
            entry("0")
        )),
        "entry 0 has no backup: {text}"
    );
    assert!(
        sample(
            &text,
            &format!("shardvault_backup_last_duration_seconds{}", entry("1"))
        ) > 0.0
    );
    let compressed = sample(
        &text,
        "shardvault_backup_last_size_bytes{namespace=\"default\",cluster=\"dual\",entry=\"1\",size=\"compressed\"}",
    );
    assert_eq!(
        compressed,
        backup["status"]["backupInformation"]["size"]["compressed"]
            .as_u64()
            .unwrap() as f64
    );
    assert_eq!(
        sample(&text, &format!("shardvault_backup_failures{}", entry("1"))),
        0.0
    );
    assert_eq!(sample(&text, &format!("shardvault_member_up{member}")), 1.0);
    assert!(
        sample(&text, &format!("shardvault_wal_archived_total{member}")) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("shardvault_wal_archive_failures_total{member}")
        ),
        0.0
    );
    let lag = sample(&text, &format!("shardvault_wal_archive_lag_bytes{member}"));
    assert!(
        (0.0..16.0 * 1024.0 * 1024.0).contains(&lag),
        "lag within a segment: {text}"
    );

    // Storage 1 is lost; the restore reads storage 2 only.
    for entry in std::fs::read_dir(&a).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    apply(&d, &cluster("from-offsite", &restore_from("to-offsite")));
    d.wait_until("sgshardedcluster", "from-offsite", 180, ready);
    assert_same_content(
        &want,
        &fingerprint::members(&d.observed("from-offsite"))
            .await
            .expect("fingerprint"),
        "restore from the second storage",
    );
}
