//! Explicit credentials win over the AWS environment (alone in its binary: it sets variables).

use shardvault_storage::Store;
use shardvault_storage::testing::start_s3_server;

#[tokio::test]
async fn explicit_credentials_ignore_the_environment() {
    // SAFETY: this is the only test of its binary, and no other thread runs yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "from-env");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "from-env");
        std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    }
    let server = start_s3_server().await;
    let store = Store::open(&server.config, "env").unwrap();
    store.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), b"v");
}
