//! The temporary server and replica come up for real and go away on drop.

use shardvault_testkit::{TempServer, shardvault_bin};

#[tokio::test]
async fn a_temp_server_with_a_replica_streams_and_cleans_up() {
    let primary =
        TempServer::start(&[("archive_mode", "on"), ("archive_command", "/bin/true")]).await;
    let replica = primary.start_replica().await;
    let client = primary.client("postgres").await;
    client
        .execute("CREATE TABLE t (id int)", &[])
        .await
        .unwrap();
    client
        .execute("INSERT INTO t VALUES (1), (2)", &[])
        .await
        .unwrap();
    let row = client
        .query_one("SHOW max_prepared_transactions", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "20");

    // The replica streams and sees the rows.
    let standby = replica.client("postgres").await;
    let mut seen = 0;
    for _ in 0..100 {
        seen = standby
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if seen == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 2);
    let streaming: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(streaming, 1);

    let pid = primary.instance().running_pid().expect("running");
    let root = primary.root().to_path_buf();
    drop(replica);
    drop(primary);
    assert!(!shardvault_pg::runtime::instance::postgres_alive(pid));
    assert!(!root.exists());
}

#[tokio::test]
async fn stop_and_start_again_keep_the_data() {
    let mut server = TempServer::start(&[]).await;
    server
        .client("postgres")
        .await
        .execute("CREATE TABLE kept (x int)", &[])
        .await
        .unwrap();
    server.stop().await;
    assert!(server.instance().running_pid().is_none());
    server.start_again().await;
    server
        .client("postgres")
        .await
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap();
    assert!(
        server
            .conninfo("db")
            .contains(&format!("port={}", server.port()))
    );
    assert!(server.dir().is_dir());
}

#[test]
fn the_shardvault_binary_is_found_once_built() {
    // The test script builds the binaries before running tests.
    assert!(shardvault_bin().ends_with("shardvault"));
}
