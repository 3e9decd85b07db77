//! The WAL-G-style node commands on a plain PostgreSQL 15 server, with settings from
//! environment variables only (no config file): archiving through `wal-push`, two backups,
//! `backups ls`, LATEST restored into a new data directory and compared by content,
//! `wal-verify` passing and then naming a deleted segment, `backups retain 1` deleting the
//! older backup and its WAL, `backups delete` by name. Every command runs as the server user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shardvault_pg::engine::{Repo, wal};
use shardvault_pg::runtime::instance::{Instance, SUPERUSER, free_ports};
use shardvault_pg::user;
use shardvault_storage::{Destination, StorageConfig};
use shardvault_testkit::{TempServer, TempStateDir, shardvault_bin};

/// A plain server whose node commands get their settings from the environment.
struct Node {
    server: TempServer,
    storage: PathBuf,
}

impl Node {
    /// The environment every command gets: the storage and the libpq variables.
    fn env(&self) -> Vec<(String, String)> {
        [
            (
                "SHARDVAULT_STORAGE_PREFIX",
                self.storage.display().to_string(),
            ),
            ("SHARDVAULT_COMPRESSION", "zstd".to_string()),
            ("PGHOST", self.server.socket_dir().display().to_string()),
            ("PGPORT", self.server.port().to_string()),
            ("PGUSER", SUPERUSER.to_string()),
            ("PGDATA", self.server.pgdata().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs the binary as the server user with [`Node::env`]; status, stdout and stderr.
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = user::command(shardvault_bin())
            .envs(self.env())
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

    /// Runs a command that must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args).await;
        assert_eq!(code, 0, "shardvault {args:?}: {out}{err}");
        out
    }

    /// The names and start WAL files of the backups `backups ls --json` lists.
    async fn backups(&self) -> Vec<(String, String)> {
        let list: Vec<Value> =
            serde_json::from_str(&self.ok(&["backups", "ls", "--json"]).await).unwrap();
        list.iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["startWalFile"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The archived WAL file names.
    fn archived(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.storage.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Switches WAL and waits until the finished segment is archived.
    async fn switch_wal(&self) {
        let seg: String = self
            .server
            .client("postgres")
            .await
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .unwrap()
            .get(0);
        let dest = Destination {
            storage: StorageConfig::Filesystem {
                path: self.storage.clone(),
            },
            prefix: String::new(),
            compression: Default::default(),
            performance: Default::default(),
            encryption: None,
        };
        let archived =
            wal::wait_archived(&Repo::open(&dest).unwrap(), &seg, Duration::from_secs(60)).await;
        if let Err(e) = archived {
            panic!("{e}\nserver log:\n{}", self.server.instance().log_tail(30));
        }
    }
}

/// `env VAR=... shardvault CMD`: how a server's archive_command or restore_command gets the
/// settings when its own environment does not have them (WAL-G's `envdir` pattern).
fn with_env(storage: &Path, command: &str) -> String {
    format!(
        "env SHARDVAULT_STORAGE_PREFIX={} {} {command}",
        storage.display(),
        shardvault_bin().display()
    )
}

/// Row count and md5 of the table `t`.
async fn content(client: &tokio_postgres::Client) -> (i64, String) {
    let row = client
        .query_one(
            "SELECT count(*), md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_server_is_archived_backed_up_restored_and_pruned_with_environment_variables() {
    // Servers below it (the restored one) are stopped when it is dropped, even on failure.
    let work = TempStateDir::new();
    let storage = work.path().join("storage");
    user::create_dir_all_for_server(&storage).unwrap();
    let archive_command = with_env(&storage, "wal-push %p");
    let server = TempServer::start(&[
        ("archive_mode", "on"),
        ("archive_command", &archive_command),
    ])
    .await;
    let node = Node { server, storage };
    let client = node.server.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    node.switch_wal().await;

    // Two backups, WAL switched between them so that whole segments lie in between.
    node.ok(&["node", "backup", "--name", "first", "--wal-timeout", "60"])
        .await;
    for batch in 0..2 {
        client
            .execute(
                "INSERT INTO t SELECT g, 'between' FROM generate_series($1::int, $1::int + 99) g",
                &[&(2000 + batch * 100)],
            )
            .await
            .unwrap();
        node.switch_wal().await;
    }
    node.ok(&["node", "backup", "--name", "second", "--wal-timeout", "60"])
        .await;
    let at_second = content(&client).await;
    client
        .execute(
            "INSERT INTO t VALUES (9999, 'after the second backup')",
            &[],
        )
        .await
        .unwrap();
    node.switch_wal().await;

    let listed = node.ok(&["backups", "ls"]).await;
    assert!(
        listed.starts_with("NAME") && listed.contains("first") && listed.contains("second"),
        "{listed}"
    );
    let backups = node.backups().await;
    let names: Vec<&str> = backups.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(names, ["first", "second"]);

    // LATEST is the second backup: restored to its consistent point, it has its content.
    let dir = work.path().join("restored");
    user::create_dir_all_for_server(&dir).unwrap();
    let restored = Instance {
        name: "restored".into(),
        pg_bin: node.server.instance().pg_bin.clone(),
        dir,
        socket_dir: node.server.socket_dir().to_path_buf(),
        port: free_ports(1, &[node.server.port()]).unwrap()[0],
        settings: vec![("fsync".into(), "off".into())],
    };
    let pgdata = restored.pgdata();
    let restore_command = with_env(&node.storage, "wal-fetch %f %p");
    node.ok(&[
        "node",
        "restore",
        "--backup",
        "LATEST",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target-immediate",
        "--restore-command",
        &restore_command,
    ])
    .await;
    restored.start().await.unwrap();
    restored.wait_promoted().await.unwrap();
    let restored_client = restored.connect("postgres").await.unwrap();
    assert_eq!(
        content(&restored_client).await,
        at_second,
        "LATEST is the second backup"
    );
    drop(restored_client);
    restored.stop_immediate_blocking();
    let verified = node.ok(&["node", "verify", "--backup", "LATEST"]).await;
    assert!(
        verified.starts_with("backup second is intact"),
        "{verified}"
    );

    // wal-verify: complete, then a deleted segment between the backups is named.
    let out = node.ok(&["wal-verify"]).await;
    assert!(out.starts_with("the WAL archive is complete"), "{out}");
    let (first_start, second_start) = (&backups[0].1, &backups[1].1);
    let victim = node
        .archived()
        .into_iter()
        .find(|f| f.len() == 24 && f > first_start && f < second_start)
        .expect("a whole segment between the two backups");
    std::fs::remove_file(node.storage.join("wal").join(&victim)).unwrap();
    let (code, out, err) = node.run(&["wal-verify"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(out, format!("missing WAL segment {victim}\n"));
    assert!(err.contains("misses 1 of"), "{err}");

    // retain 1: a dry run first, then the older backup and the WAL before the newer one go.
    let dry = node.ok(&["backups", "retain", "1"]).await;
    assert!(dry.contains("would delete backup first (full"), "{dry}");
    assert!(
        dry.contains("nothing deleted: run again with --confirm"),
        "{dry}"
    );
    assert_eq!(node.backups().await.len(), 2, "a dry run deletes nothing");
    let done = node.ok(&["backups", "retain", "1", "--confirm"]).await;
    assert!(done.contains("deleting backup first"), "{done}");
    assert_eq!(node.backups().await, [backups[1].clone()]);
    let older: Vec<String> = node
        .archived()
        .into_iter()
        .filter(|f| f.get(..24).is_some_and(|s| s < second_start.as_str()))
        .collect();
    assert!(
        older.is_empty(),
        "WAL before the kept backup is gone: {older:?}"
    );
    let out = node.ok(&["wal-verify"]).await;
    assert!(
        out.starts_with("the WAL archive is complete: ")
            && out.contains(&format!("from {second_start}")),
        "{out}"
    );

    // backups delete: unknown names are refused, LATEST and names are dry runs without --confirm.
    let (code, _, err) = node
        .run(&["backups", "delete", "nosuch", "--confirm"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("backup nosuch not found"), "{err}");
    let dry = node.ok(&["backups", "delete", "LATEST"]).await;
    assert!(dry.starts_with("would delete backup second"), "{dry}");
    node.ok(&["backups", "delete", "second", "--confirm"]).await;
    assert!(node.backups().await.is_empty());
    assert!(!node.storage.join("basebackups/second").exists());
}
