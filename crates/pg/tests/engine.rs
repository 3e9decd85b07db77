//! The node engine against real PostgreSQL 15 servers and filesystem storage: backups
//! during writes, restores compared by content, point-in-time targets, replicas,
//! corruption, interrupted backups and WAL conflicts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardvault_pg::config::NodeConfig;
use shardvault_pg::engine::{
    self, BackupOptions, EngineError, RecoveryTarget, Repo, RestoreOptions, layout, wal,
};
use shardvault_pg::runtime::instance::{Instance, archive_settings, free_ports};
use shardvault_pg::user;
use shardvault_storage::{Compression, Destination, Performance, StorageConfig};
use shardvault_testkit::{TempServer, shardvault_bin};

/// A directory for storage and node configs, owned by the server user.
struct Work {
    tmp: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let tmp = tempfile::Builder::new()
            .prefix("sv-engine-")
            .tempdir()
            .unwrap();
        user::chown_to_server_user(tmp.path()).unwrap();
        Work { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A filesystem destination under this directory.
    fn destination(&self, prefix: &str, compression: Compression) -> Destination {
        let storage = self.path().join("storage");
        // The filesystem store's atomic-write directory is created by its first writer; the
        // test (root) and archive_command (postgres) share it, so postgres must own it.
        user::create_dir_all_for_server(&storage.join(".shardvault-tmp")).unwrap();
        Destination {
            storage: StorageConfig::Filesystem { path: storage },
            prefix: prefix.to_string(),
            compression,
            performance: Performance::default(),
            encryption: None,
        }
    }

    /// Where the object `key` of `dest` lives on disk.
    fn object_path(&self, dest: &Destination, key: &str) -> PathBuf {
        self.path().join("storage").join(&dest.prefix).join(key)
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.path().join(format!("{name}.json"))
    }
}

/// A primary that archives with `shardvault wal-push` to `dests`, its config saved.
async fn archiving_server(
    work: &Work,
    name: &str,
    dests: Vec<Destination>,
) -> (TempServer, NodeConfig) {
    let cfg_path = work.config_path(name);
    let mut settings = archive_settings(&shardvault_bin(), &cfg_path);
    settings.push(("wal_keep_size".into(), "64MB".into()));
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let server = TempServer::start(&settings).await;
    let cfg = server.node_config(dests);
    cfg.save(&cfg_path).unwrap();
    // The first archived segment: the server user creates the storage's directories.
    let client = server.client("postgres").await;
    client
        .batch_execute("CREATE TABLE warmup (x int); INSERT INTO warmup VALUES (1)")
        .await
        .unwrap();
    switch_and_wait(&server, &cfg.destinations[0]).await;
    (server, cfg)
}

/// Switches to a new WAL segment and waits until the finished one is archived.
async fn switch_and_wait(server: &TempServer, dest: &Destination) {
    let client = server.client("postgres").await;
    let seg: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let archived =
        wal::wait_archived(&Repo::open(dest).unwrap(), &seg, Duration::from_secs(60)).await;
    if let Err(e) = archived {
        panic!("{e}\nserver log:\n{}", server.instance().log_tail(30));
    }
}

/// Tables of mixed columns with an index, a few MB in all.
async fn load_data(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, n numeric, t text, at timestamptz);
             INSERT INTO items SELECT g, g * 1.5, md5(g::text) || repeat('x', g % 200), now()
               FROM generate_series(1, 20000) g;
             CREATE INDEX ON items (t);
             CREATE TABLE small (k text PRIMARY KEY, v jsonb);
             INSERT INTO small SELECT 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 500) g;
             CREATE TABLE w (id bigserial PRIMARY KEY, payload text);",
        )
        .await
        .unwrap();
}

/// Row count and content checksum of every table in `public`, by name.
async fn contents(client: &tokio_postgres::Client) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((t, row.get(0), row.get(1)));
    }
    out
}

/// A fresh instance (not yet created) whose data directory a restore fills.
fn restored_instance(server: &TempServer, name: &str) -> Instance {
    let dir = server.root().join(name);
    user::create_dir_all_for_server(&dir).unwrap();
    Instance {
        name: name.to_string(),
        pg_bin: server.instance().pg_bin.clone(),
        dir,
        socket_dir: server.socket_dir().to_path_buf(),
        port: free_ports(1, &[server.port()]).unwrap()[0],
        settings: vec![("fsync".into(), "off".into())],
    }
}

/// Restores `backup` into `instance` in-process, starts it and waits for promotion.
async fn restore_and_start(
    dest: &Destination,
    cfg_path: &Path,
    backup: &str,
    instance: &Instance,
    target: RecoveryTarget,
) -> tokio_postgres::Client {
    let opts = RestoreOptions {
        backup: backup.to_string(),
        pgdata: instance.pgdata(),
        target,
        concurrency: 2,
        restore_command: wal::restore_command(&shardvault_bin(), cfg_path),
        tablespace_dir: None,
        progress: None,
    };
    engine::restore(dest, &opts).await.unwrap();
    start_restored(instance).await
}

async fn start_restored(instance: &Instance) -> tokio_postgres::Client {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(instance.pgdata())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "restored data directory mode");
    instance.start().await.unwrap();
    instance.wait_promoted().await.unwrap();
    instance.connect("postgres").await.unwrap()
}

/// Runs the built binary with `args`; returns status, stdout and stderr.
async fn shardvault(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(shardvault_bin())
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_during_writes_restores_the_same_content_and_corruption_is_named() {
    let work = Work::new();
    let dest = work.destination("m0", Compression::Lz4);
    let (server, cfg) = archiving_server(&work, "m0", vec![dest.clone()]).await;
    let client = server.client("postgres").await;
    load_data(&client).await;

    // Writes keep committing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let c = server.client("postgres").await;
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.execute("INSERT INTO w (payload) VALUES (repeat('w', 500))", &[])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Small parts: relation files split over several parts, read by parallel workers.
    let opts = BackupOptions {
        part_size: 256 * 1024,
        ..BackupOptions::named("b1")
    };
    let manifest = engine::backup(&cfg, &dest, &opts).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let written: i64 = writer.await.unwrap();
    assert!(written > 0);
    assert!(manifest.files.iter().any(|f| f.path == "global/pg_control"));
    assert!(manifest.parts > 5, "{} parts", manifest.parts);
    assert!(
        manifest.files.iter().any(|f| f.chunks.len() > 2),
        "a file split over parts"
    );
    assert!(!manifest.files.iter().any(|f| f.path.starts_with("pg_wal/")));
    assert!(manifest.size.compressed > 0 && manifest.size.uncompressed > manifest.size.compressed);
    assert_eq!(manifest.postgres_version_num / 10000, 15);

    // The same name twice is refused; the listing shows the backup.
    let err = engine::backup(&cfg, &dest, &BackupOptions::named("b1"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::BackupExists { .. }), "{err}");
    let listed = engine::list_backups(&Repo::open(&dest).unwrap())
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["b1"]
    );

    let report = engine::verify(&dest, "b1").await.unwrap();
    assert_eq!(report.parts, manifest.parts);
    assert!(report.wal_segments >= 1);

    let source = contents(&client).await;
    let instance = restored_instance(&server, "r1");
    let restored = restore_and_start(
        &dest,
        &work.config_path("m0"),
        "b1",
        &instance,
        RecoveryTarget::Immediate,
    )
    .await;
    let got = contents(&restored).await;
    // Tables not written during the backup match exactly; `w` holds a prefix of what was written.
    for ((name, count, sum), (rname, rcount, rsum)) in source.iter().zip(&got) {
        assert_eq!(name, rname);
        if name == "w" {
            assert!(
                *rcount > 0 && rcount <= count,
                "w: {rcount} of {count} rows"
            );
            let max: i64 = restored
                .query_one("SELECT max(id) FROM w", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(max, *rcount, "w has no gaps");
        } else {
            assert_eq!((count, sum), (rcount, rsum), "table {name}");
        }
    }
    assert_eq!(source.len(), got.len());
    drop(restored);
    instance.stop().await.unwrap();

    // A non-empty target is refused and left alone.
    let opts = RestoreOptions {
        backup: "b1".into(),
        pgdata: instance.pgdata(),
        target: RecoveryTarget::Latest,
        concurrency: 2,
        restore_command: "false".into(),
        tablespace_dir: None,
        progress: None,
    };
    let err = engine::restore(&dest, &opts).await.unwrap_err();
    assert!(matches!(err, EngineError::NotEmpty { .. }), "{err}");

    // A changed byte in a stored part fails verify and restore, naming the part.
    let part = layout::part_key("b1", 0);
    let path = work.object_path(&dest, &part);
    let good = std::fs::read(&path).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = engine::verify(&dest, "b1").await.unwrap_err();
    assert!(err.to_string().contains(&part), "{err}");
    let opts = RestoreOptions {
        pgdata: server.root().join("r2"),
        ..opts
    };
    let err = engine::restore(&dest, &opts).await.unwrap_err();
    assert!(err.to_string().contains(&part), "{err}");
    assert!(
        !opts.pgdata.join("global/pg_control").exists(),
        "a failed restore never gets pg_control"
    );
    std::fs::write(&path, good).unwrap();

    // A part no file refers to (its files all vanished while the backup read them) is still
    // read by verify: a changed byte in it is named.
    let repo = Repo::open(&dest).unwrap();
    let mut m = engine::manifest::load_manifest(&repo, "b1").await.unwrap();
    let last = m.parts - 1;
    for f in &mut m.files {
        f.chunks.retain(|c| c.part != last);
    }
    m.files.retain(|f| !f.chunks.is_empty() || f.size == 0);
    repo.put(
        &layout::manifest_key("b1"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .await
    .unwrap();
    engine::verify(&dest, "b1").await.unwrap();
    let part = layout::part_key("b1", last);
    let path = work.object_path(&dest, &part);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = engine::verify(&dest, "b1").await.unwrap_err();
    assert!(err.to_string().contains(&part), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_restores_stop_at_a_timestamp_and_at_a_restore_point() {
    let work = Work::new();
    let dest = work.destination("pitr", Compression::Zstd);
    let (server, cfg) = archiving_server(&work, "pitr", vec![dest.clone()]).await;
    let cfg_path = work.config_path("pitr");
    let client = server.client("postgres").await;
    client
        .batch_execute("CREATE TABLE events (id int, label text)")
        .await
        .unwrap();
    let (code, out, err) = shardvault(&[
        "node",
        "backup",
        "--config",
        cfg_path.to_str().unwrap(),
        "--name",
        "base",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["name"], "base");

    client
        .execute("INSERT INTO events VALUES (1, 'before')", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between: String = client
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .execute("INSERT INTO events VALUES (2, 'after')", &[])
        .await
        .unwrap();
    client
        .execute("SELECT pg_create_restore_point('rp1')", &[])
        .await
        .unwrap();
    client
        .execute("INSERT INTO events VALUES (3, 'past rp1')", &[])
        .await
        .unwrap();
    switch_and_wait(&server, &cfg.destinations[0]).await;

    // Restores through the CLI, WAL through wal-fetch (with prefetch).
    let at_time = restored_instance(&server, "at-time");
    let at_name = restored_instance(&server, "at-name");
    let cfg_arg = cfg_path.to_str().unwrap();
    for (inst, target) in [
        (&at_time, vec!["--target-time", between.as_str()]),
        (&at_name, vec!["--target-name", "rp1"]),
    ] {
        let pgdata = inst.pgdata();
        let mut args = vec![
            "node",
            "restore",
            "--config",
            cfg_arg,
            "--backup",
            "base",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ];
        args.extend(target);
        let (code, _, err) = shardvault(&args).await;
        assert_eq!(code, 0, "{err}");
    }
    let (c1, c2) = tokio::join!(start_restored(&at_time), start_restored(&at_name));
    let ids = |c: tokio_postgres::Client| async move {
        c.query("SELECT id FROM events ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(c1).await, [1], "restore to {between}");
    assert_eq!(ids(c2).await, [1, 2], "restore to rp1");

    let (code, out, err) = shardvault(&["backups", "ls", "--config", cfg_arg]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(out.contains("base"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_from_a_replica_restores() {
    let work = Work::new();
    let dest = work.destination("rep", Compression::Lz4);
    let (primary, _) = archiving_server(&work, "rep", vec![dest.clone()]).await;
    let replica = primary.start_replica().await;
    let client = primary.client("postgres").await;
    load_data(&client).await;
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let standby = replica.client("postgres").await;
    for _ in 0..200 {
        let caught_up: bool = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .unwrap()
            .get(0);
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A standby cannot switch WAL: the primary's segment is finished from outside meanwhile.
    let switching = Arc::new(AtomicBool::new(true));
    let switcher = {
        let on = switching.clone();
        let c = primary.client("postgres").await;
        tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                c.batch_execute("INSERT INTO warmup VALUES (2); SELECT pg_switch_wal()")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let cfg = replica.node_config(vec![dest.clone()]);
    let manifest = engine::backup(&cfg, &dest, &BackupOptions::named("from-replica"))
        .await
        .unwrap();
    switching.store(false, Ordering::Relaxed);
    switcher.await.unwrap();
    assert!(manifest.from_replica);

    let source = contents(&client).await;
    let instance = restored_instance(&primary, "r-rep");
    let restored = restore_and_start(
        &dest,
        &work.config_path("rep"),
        "from-replica",
        &instance,
        RecoveryTarget::Immediate,
    )
    .await;
    let got = contents(&restored).await;
    let stable = |v: &[(String, i64, String)]| {
        v.iter()
            .filter(|t| t.0 != "warmup")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&got), stable(&source));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_round_trips_and_wal_goes_to_every_destination() {
    let work = Work::new();
    let all = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Lzma,
        Compression::Brotli,
    ];
    let dests: Vec<Destination> = all
        .iter()
        .map(|c| work.destination(&format!("{c:?}").to_lowercase(), *c))
        .collect();
    let (server, cfg) = archiving_server(&work, "multi", dests.clone()).await;
    let client = server.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 3000) g",
        )
        .await
        .unwrap();
    let source = contents(&client).await;
    let mut instances = Vec::new();
    for (c, dest) in all.iter().zip(&dests) {
        let m = engine::backup(&cfg, dest, &BackupOptions::named("b"))
            .await
            .unwrap();
        assert_eq!(m.compression, *c);
        engine::verify(dest, "b").await.unwrap();
        let inst = restored_instance(&server, &format!("r-{c:?}").to_lowercase());
        let opts = RestoreOptions {
            backup: "b".into(),
            pgdata: inst.pgdata(),
            target: RecoveryTarget::Immediate,
            concurrency: 3,
            restore_command: wal::restore_command(&shardvault_bin(), &work.config_path("multi")),
            tablespace_dir: None,
            progress: None,
        };
        // wal-fetch reads destinations[0]; each backup's WAL is in every destination anyway.
        engine::restore(dest, &opts).await.unwrap();
        instances.push(inst);
    }
    let clients = futures::future::join_all(instances.iter().map(start_restored)).await;
    for (c, restored) in all.iter().zip(&clients) {
        let got = contents(restored).await;
        let t = |v: &[(String, i64, String)]| v.iter().find(|x| x.0 == "t").cloned();
        assert_eq!(t(&got), t(&source), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_leaves_no_manifest_and_the_next_one_succeeds() {
    let work = Work::new();
    let mut dest = work.destination("kill", Compression::Lz4);
    let (server, mut cfg) = archiving_server(&work, "kill", vec![dest.clone()]).await;
    let client = server.client("postgres").await;
    load_data(&client).await;
    // Slow reads, so the kill lands midway.
    dest.performance.max_disk_bandwidth = Some(2 * 1024 * 1024);
    cfg.destinations = vec![dest.clone()];
    let slow = work.config_path("kill-slow");
    cfg.save(&slow).unwrap();
    let mut child = tokio::process::Command::new(shardvault_bin())
        .args([
            "node",
            "backup",
            "--config",
            slow.to_str().unwrap(),
            "--name",
            "k",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the server is in backup mode (the session's last statements are the
    // backup start and the control data read), while parts are being read.
    let mut in_backup = false;
    for _ in 0..300 {
        in_backup = client
            .query_one(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND (query LIKE '%pg_backup_start%' OR query LIKE '%pg_control_checkpoint%')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if in_backup {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_backup, "the backup never started");
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    assert!(!work.object_path(&dest, &layout::manifest_key("k")).exists());
    let err = engine::verify(&dest, "k").await.unwrap_err();
    assert!(matches!(err, EngineError::BackupNotFound { .. }), "{err}");

    // The server's backup ended with the killed session; the same name works now.
    let (code, _, err) = shardvault(&[
        "node",
        "backup",
        "--config",
        work.config_path("kill").to_str().unwrap(),
        "--name",
        "k",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    engine::verify(&dest, "k").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_push_refuses_different_content_and_fetch_reports_missing_files() {
    let work = Work::new();
    let dests = vec![
        work.destination("a", Compression::Lz4),
        work.destination("b", Compression::Brotli),
    ];
    let cfg = NodeConfig {
        member: "m".into(),
        pg_bin: PathBuf::from("/usr/lib/postgresql/15/bin"),
        pgdata: work.path().join("pgdata"),
        host: work.path().to_path_buf(),
        port: 5432,
        user: "postgres".into(),
        destinations: dests.clone(),
        restore_source: None,
    };
    let cfg_path = work.config_path("w");
    cfg.save(&cfg_path).unwrap();
    let pg_wal = work.path().join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let seg = |i: u8| format!("0000000100000000000000{i:02X}");
    // Filler behind a first page header that says which segment it is (fetch checks it).
    let segment_bytes = |i: u8| -> Vec<u8> {
        let mut d: Vec<u8> = (0..1024 * 1024u32).map(|x| (x % 251) as u8 ^ i).collect();
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&2u16.to_le_bytes());
        d[4..8].copy_from_slice(&1u32.to_le_bytes());
        d[8..16].copy_from_slice(&(u64::from(i) * 16 * 1024 * 1024).to_le_bytes());
        d[32..36].copy_from_slice(&(16u32 * 1024 * 1024).to_le_bytes());
        d
    };
    for i in 1..=4 {
        std::fs::write(pg_wal.join(seg(i)), segment_bytes(i)).unwrap();
        let pushed = wal::push(&cfg, &pg_wal.join(seg(i))).await.unwrap();
        assert_eq!(pushed, [wal::Pushed::Stored, wal::Pushed::Stored]);
    }
    std::fs::write(
        pg_wal.join("00000002.history"),
        b"1\t0/3000000\tno recovery target specified\n",
    )
    .unwrap();
    wal::push(&cfg, &pg_wal.join("00000002.history"))
        .await
        .unwrap();

    // Again with the same content: fine; with different content: refused, stored copy kept.
    let again = wal::push(&cfg, &pg_wal.join(seg(1))).await.unwrap();
    assert_eq!(
        again,
        [wal::Pushed::AlreadyArchived, wal::Pushed::AlreadyArchived]
    );
    std::fs::write(pg_wal.join(seg(1)), segment_bytes(9)).unwrap();
    let err = wal::push(&cfg, &pg_wal.join(seg(1))).await.unwrap_err();
    assert!(
        matches!(err, EngineError::WalConflict { .. }) && err.to_string().contains(&seg(1)),
        "{err}"
    );
    let (code, _, err) = shardvault(&[
        "wal-push",
        pg_wal.join(seg(1)).to_str().unwrap(),
        "--config",
        cfg_path.to_str().unwrap(),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("different content"), "{err}");

    // Fetch: the right bytes, atomically; a missing file is WalNotFound / exit 1.
    let restore_dir = work.path().join("restore_wal");
    std::fs::create_dir(&restore_dir).unwrap();
    let dest_file = restore_dir.join("RECOVERYXLOG");
    let got = wal::fetch(&dests[1], &seg(2), &dest_file).await.unwrap();
    assert_eq!(got, wal::Fetched::Downloaded);
    assert_eq!(std::fs::read(&dest_file).unwrap(), segment_bytes(2));
    let err = wal::fetch(&dests[0], &seg(7), &dest_file)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WalNotFound { .. }), "{err}");

    // Prefetch fills the directory beside the destination; the next fetch uses it.
    let dir = wal::prefetch_dir(&dest_file);
    let n = wal::prefetch(&dests[0], &seg(2), 5, 16 * 1024 * 1024, &dir)
        .await
        .unwrap();
    assert_eq!(n, 2, "segments 3 and 4 exist, 5 does not");
    let got = wal::fetch(&dests[0], &seg(3), &dest_file).await.unwrap();
    assert_eq!(got, wal::Fetched::Prefetched);
    assert_eq!(std::fs::read(&dest_file).unwrap(), segment_bytes(3));

    // Through the CLI: exit 0 found, 1 missing, 2 on a broken config.
    let cfg_arg = cfg_path.to_str().unwrap();
    let history = restore_dir.join("h");
    let (code, _, err) = shardvault(&[
        "wal-fetch",
        "00000002.history",
        history.to_str().unwrap(),
        "--config",
        cfg_arg,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(&history)
            .unwrap()
            .starts_with("1\t0/3000000")
    );
    let (code, _, _) = shardvault(&[
        "wal-fetch",
        &seg(8),
        dest_file.to_str().unwrap(),
        "--config",
        cfg_arg,
    ])
    .await;
    assert_eq!(code, 1);
    let (code, _, err) = shardvault(&[
        "wal-fetch",
        &seg(8),
        dest_file.to_str().unwrap(),
        "--config",
        "/nonexistent.json",
    ])
    .await;
    // Above 125: PostgreSQL aborts recovery rather than ending it early.
    assert_eq!(code, 128, "{err}");

    // A fetch through the CLI starts a background prefetcher for the following segments.
    let _ = std::fs::remove_dir_all(&dir);
    let (code, _, err) = shardvault(&[
        "wal-fetch",
        &seg(1),
        dest_file.to_str().unwrap(),
        "--config",
        cfg_arg,
        "--prefetch",
        "2",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let mut prefetched = false;
    for _ in 0..250 {
        prefetched = dir.join(seg(2)).is_file() && dir.join(seg(3)).is_file();
        if prefetched {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(prefetched, "segments 2 and 3 were not prefetched");
    assert_eq!(std::fs::read(dir.join(seg(3))).unwrap(), segment_bytes(3));

    // A corrupt archived object is named when fetched.
    let key = layout::wal_key(&seg(4));
    let path = work.object_path(&dests[0], &key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = wal::fetch(&dests[0], &seg(4), &dest_file)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&key), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tablespaces_are_restored_where_asked() {
    let work = Work::new();
    let dest = work.destination("ts", Compression::Lz4);
    let (server, cfg) = archiving_server(&work, "ts", vec![dest.clone()]).await;
    let location = work.path().join("ts1");
    user::create_dir_all_for_server(&location).unwrap();
    let client = server.client("postgres").await;
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE ts1 LOCATION '{}'",
            location.display()
        ))
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE tt TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 2000) g",
        )
        .await
        .unwrap();
    let manifest = engine::backup(&cfg, &dest, &BackupOptions::named("with-ts"))
        .await
        .unwrap();
    assert_eq!(manifest.tablespaces.len(), 1);
    assert!(manifest.has_tablespace_map);
    let oid = manifest.tablespaces[0].oid.clone();
    engine::verify(&dest, "with-ts").await.unwrap();

    // A tablespace map flipped, truncated or deleted fails verify by name.
    let store = dest.store().unwrap();
    let key = "basebackups/with-ts/tablespace_map";
    let good = store.get(key).await.unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x5a;
    for bad in [Some(flipped), Some(good[..good.len() / 2].to_vec()), None] {
        match bad {
            Some(b) => store.put(key, b).await.unwrap(),
            None => store.delete(key).await.unwrap(),
        }
        let err = engine::verify(&dest, "with-ts").await.unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
    store.put(key, good).await.unwrap();
    engine::verify(&dest, "with-ts").await.unwrap();

    // The original location is in use: refused, and nothing is created.
    let instance = restored_instance(&server, "r-ts");
    let mut opts = RestoreOptions {
        backup: "with-ts".into(),
        pgdata: instance.pgdata(),
        target: RecoveryTarget::Immediate,
        concurrency: 2,
        restore_command: wal::restore_command(&shardvault_bin(), &work.config_path("ts")),
        tablespace_dir: None,
        progress: None,
    };
    let err = engine::restore(&dest, &opts).await.unwrap_err();
    assert!(matches!(err, EngineError::NotEmpty { .. }), "{err}");
    assert!(!instance.pgdata().exists());

    let elsewhere = server.root().join("ts-restored");
    opts.tablespace_dir = Some(elsewhere.clone());
    engine::restore(&dest, &opts).await.unwrap();
    let link = std::fs::read_link(instance.pgdata().join("pg_tblspc").join(&oid)).unwrap();
    assert_eq!(link, elsewhere.join(&oid));
    let restored = start_restored(&instance).await;
    assert_eq!(contents(&restored).await, contents(&client).await);
    let spc: String = restored
        .query_one(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(spc, elsewhere.join(&oid).display().to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_verify_and_restore_work_against_an_s3_server() {
    let s3 = shardvault_storage::testing::start_s3_server().await;
    let work = Work::new();
    let dest = Destination {
        storage: s3.config.clone(),
        prefix: "s3m".into(),
        compression: Compression::Zstd,
        performance: Performance::default(),
        encryption: None,
    };
    let (server, cfg) = archiving_server(&work, "s3m", vec![dest.clone()]).await;
    let client = server.client("postgres").await;
    load_data(&client).await;
    engine::backup(&cfg, &dest, &BackupOptions::named("s1"))
        .await
        .unwrap();
    engine::verify(&dest, "s1").await.unwrap();
    let source = contents(&client).await;
    let instance = restored_instance(&server, "r-s3");
    let restored = restore_and_start(
        &dest,
        &work.config_path("s3m"),
        "s1",
        &instance,
        RecoveryTarget::Immediate,
    )
    .await;
    assert_eq!(contents(&restored).await, source);

    // A damaged object and wrong credentials are both reported clearly.
    let part = layout::part_key("s1", 0);
    let path = s3.object_path(&s3.bucket, &format!("s3m/{part}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = engine::verify(&dest, "s1").await.unwrap_err();
    assert!(err.to_string().contains(&part), "{err}");
    let wrong = Destination {
        storage: s3.config_for(&s3.bucket, &s3.access_key, "not-the-secret"),
        ..dest.clone()
    };
    let err = engine::verify(&wrong, "s1").await.unwrap_err();
    assert!(err.to_string().contains("access denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crafted_manifest_restores_nothing_outside_where_it_belongs() {
    use shardvault_pg::engine::manifest::{DirEntry, Manifest, Tablespace, load_manifest};
    let work = Work::new();
    let dest = work.destination("crafted", Compression::Lz4);
    let (server, cfg) = archiving_server(&work, "crafted", vec![dest.clone()]).await;
    engine::backup(&cfg, &dest, &BackupOptions::named("b1"))
        .await
        .unwrap();
    let repo = Repo::open(&dest).unwrap();
    let original = load_manifest(&repo, "b1").await.unwrap();
    let outside = work.path().join("outside");
    let craft = |name: &str, change: &dyn Fn(&mut Manifest)| {
        let mut m = original.clone();
        m.name = name.to_string();
        change(&mut m);
        m
    };
    let with_tablespace = |location: PathBuf| {
        move |m: &mut Manifest| {
            m.tablespaces.push(Tablespace {
                oid: "99999".into(),
                location: location.clone(),
            });
            m.directories.push(DirEntry {
                path: "pg_tblspc/99999".into(),
                mode: 0o700,
            });
        }
    };
    let cases = [
        (
            craft("dotdot-file", &|m| m.files[0].path = "../../escape".into()),
            None,
            "file \"../../escape\" escapes the data directory",
        ),
        (
            craft("dotdot-dir", &|m| {
                m.directories.push(DirEntry {
                    path: "base/../../escape".into(),
                    mode: 0o700,
                })
            }),
            None,
            "escapes the data directory",
        ),
        (
            craft("dotdot-space", &with_tablespace(outside.join("../escape"))),
            None,
            "is not a plain absolute path",
        ),
        (
            craft("inside-space", &with_tablespace(PathBuf::from("/"))),
            None,
            "overlaps the data directory",
        ),
    ];
    for (manifest, tablespace_dir, message) in cases {
        // Copy the backup's objects under the crafted name, then replace its manifest.
        for key in repo.store.list(&layout::backup_dir("b1")).await.unwrap() {
            let bytes = repo.store.get(&key).await.unwrap();
            let renamed = key.replacen(
                &layout::backup_dir("b1"),
                &layout::backup_dir(&manifest.name),
                1,
            );
            repo.store.put(&renamed, bytes).await.unwrap();
        }
        repo.put(
            &layout::manifest_key(&manifest.name),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
        let instance = restored_instance(&server, &manifest.name);
        let opts = RestoreOptions {
            backup: manifest.name.clone(),
            pgdata: instance.pgdata(),
            target: RecoveryTarget::Immediate,
            concurrency: 2,
            restore_command: wal::restore_command(&shardvault_bin(), &work.config_path("crafted")),
            tablespace_dir,
            progress: None,
        };
        let err = engine::restore(&dest, &opts).await.unwrap_err();
        assert!(
            matches!(err, EngineError::BadManifest { .. }) && err.to_string().contains(message),
            "{}: {err}",
            manifest.name
        );
        assert!(!instance.pgdata().exists(), "{}", manifest.name);
        assert!(!work.path().join("escape").exists());
        assert!(!server.root().join("escape").exists());
    }

    // A tablespace placed elsewhere by the manifest is recreated under --tablespace-dir only.
    let manifest = craft("elsewhere", &with_tablespace(outside.clone()));
    for key in repo.store.list(&layout::backup_dir("b1")).await.unwrap() {
        let bytes = repo.store.get(&key).await.unwrap();
        repo.store
            .put(
                &key.replacen(
                    &layout::backup_dir("b1"),
                    &layout::backup_dir("elsewhere"),
                    1,
                ),
                bytes,
            )
            .await
            .unwrap();
    }
    repo.put(
        &layout::manifest_key("elsewhere"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .unwrap();
    let instance = restored_instance(&server, "elsewhere");
    let spaces = instance.dir.join("tablespaces");
    let opts = RestoreOptions {
        backup: "elsewhere".into(),
        pgdata: instance.pgdata(),
        target: RecoveryTarget::Immediate,
        concurrency: 2,
        restore_command: wal::restore_command(&shardvault_bin(), &work.config_path("crafted")),
        tablespace_dir: Some(spaces.clone()),
        progress: None,
    };
    engine::restore(&dest, &opts).await.unwrap();
    assert!(spaces.join("99999").is_dir());
    assert!(!outside.exists(), "{} was created", outside.display());
}

/// Pages in the main fork of `table`.
async fn pages(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT pg_relation_size('{table}') / 8192"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Restores `backup` (recovery to its consistent point) into a fresh instance, compares the
/// content with `want`, and stops it.
async fn restore_compare(
    work: &Work,
    server: &TempServer,
    dest: &Destination,
    backup: &str,
    want: &[(String, i64, String)],
) {
    let instance = restored_instance(server, &format!("r-{backup}"));
    let restored = restore_and_start(
        dest,
        &work.config_path("inc"),
        backup,
        &instance,
        RecoveryTarget::Immediate,
    )
    .await;
    assert_eq!(
        contents(&restored).await,
        want,
        "content of backup {backup}"
    );
    drop(restored);
    instance.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_stores_changed_pages_and_restores_created_dropped_truncated_and_grown_tables()
 {
    let work = Work::new();
    let dest = work.destination("inc", Compression::Lz4);
    let (server, cfg) = archiving_server(&work, "inc", vec![dest.clone()]).await;
    let client = server.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text) WITH (fillfactor = 80);
             INSERT INTO big SELECT g, md5(g::text) || repeat('b', 150) FROM generate_series(1, 40000) g;
             CREATE TABLE dropped (id int, v text);
             INSERT INTO dropped SELECT g, repeat('d', 100) FROM generate_series(1, 3000) g;
             CREATE TABLE shrunk (id int, v text);
             INSERT INTO shrunk SELECT g, repeat('s', 100) FROM generate_series(1, 6000) g;
             CREATE TABLE grown (id int, v text);
             INSERT INTO grown SELECT g, repeat('g', 100) FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    client.batch_execute("VACUUM").await.unwrap();
    let full = engine::backup(&cfg, &dest, &BackupOptions::named("full"))
        .await
        .unwrap();
    assert_eq!(full.backup_type, engine::BackupType::Full);

    // 1% of big's pages change (HOT updates stay on their page), and the other tables are
    // created, dropped, truncated at their end by VACUUM, and grown.
    let big_pages = pages(&client, "big").await;
    assert!(big_pages > 900, "big has {big_pages} pages");
    client
        .batch_execute(
            "UPDATE big SET v = upper(v) WHERE (ctid::text::point)[0]::bigint % 100 = 7
               AND (ctid::text::point)[1] = 1;
             CREATE TABLE created (id int, v text);
             INSERT INTO created SELECT g, repeat('c', 80) FROM generate_series(1, 2000) g;
             DROP TABLE dropped;
             DELETE FROM shrunk WHERE id > 1000;
             INSERT INTO grown SELECT g, repeat('G', 100) FROM generate_series(1001, 9000) g;",
        )
        .await
        .unwrap();
    client.batch_execute("VACUUM shrunk").await.unwrap();
    assert!(
        pages(&client, "shrunk").await < 40,
        "VACUUM truncated shrunk"
    );
    let want = contents(&client).await;

    // The parent is the newest backup of this member in the destination.
    let opts = BackupOptions {
        parent: engine::ParentChoice::Newest,
        ..BackupOptions::named("inc1")
    };
    let inc = engine::backup(&cfg, &dest, &opts).await.unwrap();
    assert_eq!(inc.backup_type, engine::BackupType::Incremental);
    assert_eq!(inc.parent.as_deref(), Some("full"));
    assert_eq!(inc.chain.len(), 1);
    assert_eq!(inc.chain[0].manifest_sha256, full.sha256());
    assert!(
        inc.size.compressed * 4 < full.size.compressed,
        "incremental stored {} of the full backup's {}",
        inc.size.compressed,
        full.size.compressed
    );
    assert!(inc.size.restore > full.size.compressed / 2);
    let refers = inc
        .files
        .iter()
        .flat_map(|f| &f.chunks)
        .filter(|c| c.source == Some(0))
        .count();
    assert!(refers > 0, "blocks are read from the full backup");
    assert_eq!(inc.summary().chain, ["full"]);

    let report = engine::verify(&dest, "inc1").await.unwrap();
    assert_eq!(report.chain, 1);
    restore_compare(&work, &server, &dest, "inc1", &want).await;

    // A parent of another cluster is refused by name when asked for, and a full backup
    // is taken instead when the newest one is asked for.
    let other = work.destination("other", Compression::Lz4);
    let (other_server, other_cfg) = archiving_server(&work, "other", vec![other.clone()]).await;
    engine::backup(&other_cfg, &other, &BackupOptions::named("o1"))
        .await
        .unwrap();
    drop(other_server);
    let foreign = Destination {
        prefix: "other".into(),
        ..dest.clone()
    };
    let opts = BackupOptions {
        parent: engine::ParentChoice::Named("o1".into()),
        ..BackupOptions::named("wrong")
    };
    let err = engine::backup(&cfg, &foreign, &opts).await.unwrap_err();
    assert!(
        matches!(err, EngineError::ParentUnusable { .. })
            && err.to_string().contains("another cluster"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_eight_restores_its_newest_and_a_middle_backup_and_a_broken_chain_restores_nothing()
 {
    let work = Work::new();
    let dest = work.destination("inc", Compression::Zstd);
    let (server, cfg) = archiving_server(&work, "inc", vec![dest.clone()]).await;
    let client = server.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, round int, v text) WITH (fillfactor = 70);
             INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let mut wants = Vec::new();
    let mut names = Vec::new();
    for round in 0..8 {
        if round > 0 {
            client
                .batch_execute(&format!(
                    "UPDATE t SET round = {round} WHERE id % 97 = {round};
                     CREATE TABLE r{round} AS SELECT g FROM generate_series(1, {round} * 100) g;
                     DELETE FROM t WHERE id > 20000 - {round} * 50;"
                ))
                .await
                .unwrap();
        }
        wants.push(contents(&client).await);
        let name = format!("b{round}");
        if round == 3 {
            // Through the command line: `--incremental --json` prints the typed summary.
            let cfg_path = work.config_path("inc");
            let (code, out, err) = shardvault(&[
                "node",
                "backup",
                "--config",
                cfg_path.to_str().unwrap(),
                "--name",
                &name,
                "--incremental",
                "--json",
            ])
            .await;
            assert_eq!(code, 0, "{err}");
            let summary: engine::BackupSummary = serde_json::from_str(&out).unwrap();
            assert_eq!(summary.backup_type, engine::BackupType::Incremental);
            assert_eq!(summary.parent.as_deref(), Some("b2"));
            assert_eq!(summary.chain, ["b0", "b1", "b2"]);
            assert!(summary.size.restore > summary.size.compressed);
        } else {
            let parent = match round {
                0 => engine::ParentChoice::Full,
                _ => engine::ParentChoice::Named(format!("b{}", round - 1)),
            };
            let opts = BackupOptions {
                parent,
                part_size: 512 * 1024,
                ..BackupOptions::named(name.clone())
            };
            engine::backup(&cfg, &dest, &opts).await.unwrap();
        }
        names.push(name);
    }
    let repo = Repo::open(&dest).unwrap();
    let newest = engine::load_manifest(&repo, "b7").await.unwrap();
    assert_eq!(
        newest
            .chain
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["b0", "b1", "b2", "b3", "b4", "b5", "b6"]
    );
    let sources: std::collections::BTreeSet<Option<u32>> = newest
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| c.source))
        .collect();
    assert!(
        sources.len() > 2,
        "blocks come from several backups: {sources:?}"
    );
    assert_eq!(engine::verify(&dest, "b7").await.unwrap().chain, 7);

    restore_compare(&work, &server, &dest, "b7", &wants[7]).await;
    restore_compare(&work, &server, &dest, "b4", &wants[4]).await;

    // Retention keeps what a kept incremental needs.
    let summaries: Vec<_> = engine::list_backups(&repo)
        .await
        .unwrap()
        .iter()
        .map(|m| m.summary())
        .collect();
    let kept = ["b7".to_string()].into();
    let needed = engine::chain::needed_by_kept(&summaries, &kept);
    assert_eq!(needed.len(), 7);
    assert_eq!(needed["b0"], ["b7"]);

    // A middle backup gone: verify and restore of the newest name it, and nothing is written.
    std::fs::remove_file(work.object_path(&dest, &layout::manifest_key("b2"))).unwrap();
    let err = engine::verify(&dest, "b7").await.unwrap_err();
    assert!(
        matches!(&err, EngineError::ChainBroken(link) if link.missing == "b2"),
        "{err}"
    );
    let pgdata = server.root().join("broken");
    let opts = RestoreOptions {
        backup: "b7".into(),
        pgdata: pgdata.clone(),
        target: RecoveryTarget::Immediate,
        concurrency: 2,
        restore_command: "false".into(),
        tablespace_dir: None,
        progress: None,
    };
    let err = engine::restore(&dest, &opts).await.unwrap_err();
    assert!(err.to_string().contains("needs backup b2"), "{err}");
    assert!(
        !pgdata.exists(),
        "a restore that cannot restore writes nothing"
    );
}
