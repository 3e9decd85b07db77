//! A restore never touches its source (ddp, on plain PostgreSQL): see `common/isolation.rs`.
//! The same scenario runs for citus in `citus.rs`.

#[path = "common/isolation.rs"]
mod isolation;

use shardvault_pg::runtime::cluster::Sharding;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddp_restore_never_touches_its_source_and_verify_finds_a_missing_restore_point_segment() {
    isolation::restore_never_touches_its_source(Sharding::Ddp).await;
}
