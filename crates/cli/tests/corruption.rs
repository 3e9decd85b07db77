//! The corruption matrix, on one small sharded backup of real servers: every kind of stored
//! object with a byte flipped, truncated or deleted (and a WAL segment or manifest swapped
//! for another well-formed one) fails `verify` naming the object; a restore from a damaged
//! backup never becomes Ready with a Completed member; `backups ls` and `import` survive a
//! damaged record and name it; an import that fails half-way leaves nothing; and deleting a
//! backup after its cluster removes its record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;
use shardvault_storage::{Compression, codec};
use shardvault_testkit::cluster::sql;
use shardvault_testkit::daemon::{Daemon, phase, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

fn cluster() -> String {
    DdpCluster::new("c")
        .shards(1)
        .backups_to("store")
        .annotation("shardvault.io/restore-point-schedule", "0 * * * *")
        .yaml()
}

fn backup(name: &str) -> String {
    sharded_backup(name, "c", &[])
}

fn restore(name: &str) -> String {
    DdpCluster::new(name).shards(1).restored_from("b").yaml()
}

fn hour(h: i64) -> Timestamp {
    format!("2030-01-01T{h:02}:00:00Z").parse().unwrap()
}

/// A damage done to one stored file.
#[derive(Debug, Clone)]
enum Fault {
    Flip,
    Truncate,
    Delete,
    /// Replaced by another stored object, well-formed.
    SwapWith(PathBuf),
}

impl Fault {
    fn apply(&self, path: &Path, good: &[u8]) {
        match self {
            Fault::Flip => {
                let mut bad = good.to_vec();
                // Past the object header, inside the payload.
                let at = (good.len() * 2 / 3).max(good.len().min(30));
                bad[at.min(good.len() - 1)] ^= 0x5a;
                std::fs::write(path, bad).unwrap();
            }
            Fault::Truncate => std::fs::write(path, &good[..good.len() / 2]).unwrap(),
            Fault::Delete => std::fs::remove_file(path).unwrap(),
            Fault::SwapWith(other) => std::fs::write(path, std::fs::read(other).unwrap()).unwrap(),
        }
    }
}

/// A stored file as it was: its bytes, owner and mode (the server user wrote it).
struct Saved {
    path: PathBuf,
    bytes: Vec<u8>,
    meta: std::fs::Metadata,
}

impl Saved {
    fn of(path: &Path) -> Saved {
        Saved {
            path: path.to_path_buf(),
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            meta: std::fs::metadata(path).unwrap(),
        }
    }

    /// Puts the file back as it was, owned by whoever owned it.
    fn put_back(&self) {
        use std::os::unix::fs::MetadataExt;
        std::fs::write(&self.path, &self.bytes).unwrap();
        std::os::unix::fs::chown(&self.path, Some(self.meta.uid()), Some(self.meta.gid())).unwrap();
        std::fs::set_permissions(&self.path, self.meta.permissions()).unwrap();
    }
}

/// The one stored file of `dir` (a directory of one file, such as `restorepoints/`).
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Runs `verify sgshardedbackup b`: exit status and stdout.
fn verify(d: &Daemon) -> (bool, String) {
    let out = d.sv(&["verify", "sgshardedbackup", "b"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Decodes a stored JSON object, lets `edit` change it, and stores it re-encoded: a
/// well-formed object with other content.
fn reencode(path: &Path, edit: impl FnOnce(&mut Value)) {
    let bytes = codec::decode("test", &std::fs::read(path).unwrap()).unwrap();
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut doc);
    let json = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(path, codec::encode(&json, Compression::None)).unwrap();
}

/// Applies a restore from the damaged backup into a new cluster and checks that it never
/// becomes Ready and the restore of `damaged` (a member; None: the backup as a whole, so
/// every member) is never Completed, until `names` (the damaged object) shows in its
/// description, and a little after; then removes it.
fn restore_refused(d: &Daemon, case: &str, damaged: Option<&str>, names: &str) {
    let name = "r";
    d.apply(&restore(name));
    let deadline = Instant::now() + Duration::from_secs(120);
    let check = |o: &Value| {
        assert!(
            !ready(o),
            "{case}: a damaged backup restored as Ready: {o:#}"
        );
        let completed = o
            .pointer("/status/restore/members")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["phase"] == "Completed" && damaged.is_none_or(|d| m["name"] == d))
            });
        assert!(
            !completed,
            "{case}: a member restore claims Completed: {o:#}"
        );
    };
    loop {
        let o = d.json(&["get", "sgshardedcluster", name]);
        check(&o);
        if d.ok(&["describe", "sgshardedcluster", name])
            .contains(names)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: the restore never named {names}: {o:#}\n{}",
            d.ok(&["describe", "sgshardedcluster", name])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    check(&d.json(&["get", "sgshardedcluster", name]));
    d.ok(&["delete", "sgshardedcluster", name, "--wait"]);
}

#[test]
fn every_damaged_object_is_named_by_verify_and_refused_by_restore_and_import() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("now");
    std::fs::write(&clock, hour(0).to_string()).unwrap();
    // SAFETY: set before this test starts any thread; the daemon (a child process) inherits
    // it. Under nextest every test runs in its own process.
    unsafe { std::env::set_var(shardvault_control::clock::CLOCK_FILE_ENV, &clock) };
    let d = Daemon::start();
    let objects = d.state().join("objects");
    d.apply(&filesystem_storage("store", &objects));
    d.apply(&cluster());
    d.wait_until("sgshardedcluster", "c", 120, ready);
    let source = d.observed("c");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sql(
        &source.primary_conninfo(0).unwrap(),
        "SELECT ddp_create_distributed_table('t', 'id bigint primary key, v text', 'id');
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 200) i;",
    ));
    for name in ["b", "b2"] {
        d.apply(&backup(name));
        let done = d.wait_until("sgshardedbackup", name, 120, |o| {
            matches!(phase(o), "Completed" | "Failed")
        });
        assert_eq!(phase(&done), "Completed", "{done:#}");
    }
    // One scheduled restore point after the backups, recorded beside them.
    std::fs::write(&clock, hour(1).to_string()).unwrap();
    let cluster_dir = objects.join("shardvault/default/c");
    let coord_dir = cluster_dir.join("c-coord");
    let shard_dir = cluster_dir.join("c-shard0");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !coord_dir.join("restorepoints").is_dir()
        || std::fs::read_dir(coord_dir.join("restorepoints"))
            .unwrap()
            .count()
            == 0
    {
        assert!(Instant::now() < deadline, "no restore point was recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The driven clock stays at hour 1: no other restore point is taken while storage is
    // damaged.
    let b = d.json(&["get", "sgshardedbackup", "b"]);
    assert!(
        b.pointer("/status/shardedRecordConfig/prefix").is_some(),
        "the record's location is kept in status: {b:#}"
    );
    let (ok, text) = verify(&d);
    assert!(ok, "the undamaged backup verifies: {text}");
    assert!(
        text.contains("record sharded/b.json: ok") && text.contains("restore point records: ok (1"),
        "{text}"
    );

    let rp_wal = b["status"]["restorePoint"]["members"][1]["walFile"]
        .as_str()
        .unwrap()
        .to_string();
    let shard_backup = shard_dir.join("basebackups/b-shard0");
    let matrix: Vec<(&str, PathBuf, String)> = vec![
        (
            "member manifest",
            shard_backup.join("manifest.json"),
            "basebackups/b-shard0/manifest.json".into(),
        ),
        (
            "part",
            coord_dir.join("basebackups/b-coord/parts/000000"),
            "basebackups/b-coord/parts/000000".into(),
        ),
        (
            "last part (pg_control)",
            only_last_part(&shard_backup.join("parts")),
            "basebackups/b-shard0/parts/".into(),
        ),
        (
            "backup label",
            shard_backup.join("backup_label"),
            "basebackups/b-shard0/backup_label".into(),
        ),
        (
            "WAL segment of the restore point",
            shard_dir.join("wal").join(&rp_wal),
            rp_wal.clone(),
        ),
        (
            "sharded record",
            cluster_dir.join("sharded/b.json"),
            "sharded/b.json".into(),
        ),
        (
            "restore point record (cluster copy)",
            only_file(&cluster_dir.join("restorepoints")),
            "restorepoints/".into(),
        ),
        (
            "restore point record (coordinator copy)",
            only_file(&coord_dir.join("restorepoints")),
            "restorepoints/".into(),
        ),
    ];
    let mut tried = 0;
    for (kind, path, names) in &matrix {
        let good = Saved::of(path);
        for fault in [Fault::Flip, Fault::Truncate, Fault::Delete] {
            fault.apply(path, &good.bytes);
            let (ok, text) = verify(&d);
            good.put_back();
            assert!(!ok, "{kind} {fault:?}: verify passed:\n{text}");
            assert!(
                text.contains("FAILED") && text.contains(names.as_str()),
                "{kind} {fault:?}: verify does not name {names}:\n{text}"
            );
            tried += 1;
        }
    }
    assert_eq!(tried, 24);

    // Well-formed objects with other content: a WAL segment swapped for another archived
    // one, a label copied from the other backup, a manifest re-encoded without one file, a
    // record re-encoded with another restore point.
    let start_wal =
        d.json(&["get", "sgbackup", "b-shard0"])["status"]["backupInformation"]["startWalFile"]
            .as_str()
            .unwrap()
            .to_string();
    let swaps = [
        (
            "WAL segment swapped",
            shard_dir.join("wal").join(&rp_wal),
            shard_dir.join("wal").join(&start_wal),
            "is not WAL segment",
        ),
        (
            "backup label of another backup",
            shard_backup.join("backup_label"),
            shard_dir.join("basebackups/b2-shard0/backup_label"),
            "backup_label",
        ),
    ];
    assert_ne!(rp_wal, start_wal, "the swap needs two segments");
    for (case, path, other, names) in swaps {
        let good = Saved::of(&path);
        Fault::SwapWith(other).apply(&path, &good.bytes);
        let (ok, text) = verify(&d);
        good.put_back();
        assert!(!ok && text.contains(names), "{case}: {text}");
    }
    let manifest = shard_backup.join("manifest.json");
    let good_manifest = Saved::of(&manifest);
    reencode(&manifest, |m| {
        let files = m["files"].as_array_mut().unwrap();
        let i = files
            .iter()
            .position(|f| f["path"] != "global/pg_control" && f["size"].as_u64() > Some(0))
            .unwrap();
        files.remove(i);
    });
    let (ok, text) = verify(&d);
    assert!(
        !ok && text.contains("manifest.json") && text.contains("SHA-256"),
        "manifest without one file: {text}"
    );
    restore_refused(&d, "manifest without one file", None, "SHA-256");
    good_manifest.put_back();

    let record = cluster_dir.join("sharded/b.json");
    let good_record = Saved::of(&record);
    reencode(&record, |r| r["restorePoint"]["name"] = "b2".into());
    let (ok, text) = verify(&d);
    assert!(
        !ok && text.contains("sharded/b.json") && text.contains("restore point"),
        "record of another restore point: {text}"
    );
    good_record.put_back();

    // Restores from damaged backups: refused before anything is created when the damage is in
    // what a restore reads first; otherwise the damaged member's restore fails (an undamaged
    // member may complete) and the cluster is never Ready.
    for (case, path, fault, damaged, names) in [
        (
            "sharded record flipped",
            record.clone(),
            Fault::Flip,
            None,
            "sharded/b.json",
        ),
        (
            "manifest deleted",
            manifest.clone(),
            Fault::Delete,
            None,
            "b-shard0",
        ),
        (
            "WAL segment of the restore point swapped",
            shard_dir.join("wal").join(&rp_wal),
            Fault::SwapWith(shard_dir.join("wal").join(&start_wal)),
            Some("r-shard0"),
            "is not WAL segment",
        ),
        (
            "part flipped",
            coord_dir.join("basebackups/b-coord/parts/000000"),
            Fault::Flip,
            Some("r-coord"),
            "parts/000000",
        ),
    ] {
        let good = Saved::of(&path);
        fault.apply(&path, &good.bytes);
        restore_refused(&d, case, damaged, names);
        good.put_back();
    }
    let (ok, text) = verify(&d);
    assert!(ok, "every object is back as it was: {text}");

    // From storage alone: one damaged record hides no other backup, is named, and cannot be
    // imported; a good one imports, owned by its SGShardedBackup; an import that fails
    // half-way leaves nothing behind.
    let dr = Daemon::start();
    dr.apply(&filesystem_storage("store", &objects));
    let record2 = cluster_dir.join("sharded/b2.json");
    let good2 = Saved::of(&record2);
    Fault::Flip.apply(&record2, &good2.bytes);
    let out = dr.sv(&["backups", "ls", "--storage", "store"]);
    let (listed, warned) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{warned}");
    assert!(
        listed.contains("\nb ") && !listed.contains("b2"),
        "{listed}"
    );
    assert!(
        warned.contains("b2") && warned.contains("sharded/b2.json"),
        "{warned}"
    );
    let out = dr.sv(&["backups", "import", "--storage", "store", "b2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sharded/b2.json"),
        "{err}"
    );
    assert!(!dr.sv(&["get", "sgshardedbackup", "b2"]).status.success());
    good2.put_back();

    let half = cluster_dir.join("sharded/half.json");
    std::fs::copy(&record, &half).unwrap();
    reencode(&half, |r| {
        r["name"] = "half".into();
        r["members"][1]["sgBackup"] = "Not_A_Name".into();
    });
    let out = dr.sv(&["backups", "import", "--storage", "store", "half"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("/half imported"),
        "the import fails after creating the SGShardedBackup: {said}"
    );
    std::fs::remove_file(&half).unwrap();
    assert!(
        !dr.sv(&["get", "sgshardedbackup", "half"]).status.success(),
        "a failed import is rolled back"
    );
    for child in ["b-coord", "Not_A_Name"] {
        assert!(
            !dr.sv(&["get", "sgbackup", child]).status.success(),
            "{child}: a failed import is rolled back"
        );
    }

    dr.ok(&["backups", "import", "--storage", "store", "b"]);
    let imported = dr.json(&["get", "sgbackup", "b-shard0"]);
    assert_eq!(
        imported["metadata"]["ownerReferences"][0]["name"], "b",
        "{imported:#}"
    );
    dr.ok(&["delete", "sgshardedbackup", "b", "--wait"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dr.sv(&["get", "sgbackup", "b-shard0"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the imported SGBackups go with their SGShardedBackup"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        record.exists(),
        "an imported backup's objects are not ours to delete"
    );

    // Deleting a backup after its cluster is gone removes its record too.
    d.ok(&["delete", "sgshardedcluster", "c", "--wait"]);
    d.ok(&["delete", "sgshardedbackup", "b2", "--wait"]);
    assert!(
        !record2.exists(),
        "the record of a deleted backup stays in storage"
    );
    assert!(
        !shard_dir
            .join("basebackups/b2-shard0/manifest.json")
            .exists()
    );
    let listed = dr.ok(&["backups", "ls", "--storage", "store"]);
    assert!(
        listed.contains("\nb ") && !listed.contains("b2"),
        "{listed}"
    );
}

/// The highest-numbered part of a backup (it holds only `global/pg_control`).
fn only_last_part(parts: &Path) -> PathBuf {
    let mut all: Vec<_> = std::fs::read_dir(parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    all.pop().unwrap()
}
