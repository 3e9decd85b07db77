//! S3-only behaviour against a real S3-protocol server: credentials, missing buckets, retries.

use shardvault_storage::testing::start_s3_server;
use shardvault_storage::{StorageConfig, StorageError, Store};

#[tokio::test]
async fn bad_credentials_are_named_with_the_fix() {
    let server = start_s3_server().await;
    let config = server.config_for(&server.bucket, &server.access_key, "not-the-secret");
    let store = Store::open(&config, "p").unwrap();
    for err in [
        store.check().await.unwrap_err(),
        store.put("k", vec![1]).await.unwrap_err(),
        store.get("k").await.unwrap_err(),
    ] {
        assert!(matches!(err, StorageError::AccessDenied { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "access denied by s3 bucket shardvault-test: check awsCredentials.secretKeySelectors"
        );
    }
    let unknown = server.config_for(&server.bucket, "nobody", &server.secret_key);
    let err = Store::open(&unknown, "p")
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AccessDenied { .. }), "{err}");
}

#[tokio::test]
async fn a_missing_bucket_is_named_with_its_endpoint() {
    let server = start_s3_server().await;
    let config = server.config_for("no-such-bucket", &server.access_key, &server.secret_key);
    let store = Store::open(&config, "p").unwrap();
    let want = format!(
        "bucket no-such-bucket does not exist at endpoint {}",
        server.endpoint
    );
    // (s3s-fs, unlike S3, creates a missing bucket on PUT and answers NoSuchKey to a GET in
    // it, so the bucket-level requests are checked.)
    for err in [
        store.check().await.unwrap_err(),
        store.list("").await.unwrap_err(),
    ] {
        assert!(matches!(err, StorageError::BucketMissing { .. }), "{err}");
        assert!(err.to_string().starts_with(&want), "{err}");
    }
    server.create_bucket("no-such-bucket");
    store.check().await.unwrap();
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let server = start_s3_server().await;
    let store = Store::open(&server.config, "retry").unwrap();
    server.fail_next_requests(2);
    store.put("k", b"v".to_vec()).await.unwrap();
    server.fail_next_requests(2);
    assert_eq!(store.get("k").await.unwrap(), b"v");
    server.fail_next_requests(2);
    assert_eq!(store.list("").await.unwrap(), vec!["k"]);
    assert_eq!(server.pending_failures(), 0);
}

#[tokio::test]
async fn persistent_failures_give_up_with_the_key() {
    let server = start_s3_server().await;
    let store = Store::open(&server.config, "retry").unwrap();
    server.fail_next_requests(100);
    let err = store.put("wal/seg", b"v".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("retry/wal/seg"), "{err}");
    assert!(server.pending_failures() < 100);
}

#[tokio::test]
async fn a_storage_class_is_accepted() {
    let server = start_s3_server().await;
    let with_class = |class: &str| {
        let mut config = server.config.clone();
        if let StorageConfig::S3 { storage_class, .. } = &mut config {
            *storage_class = Some(class.into());
        }
        config
    };
    let store = Store::open(&with_class("REDUCED_REDUNDANCY"), "sc").unwrap();
    store.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    // The class reaches the server: s3s-fs refuses the ones it does not know.
    let store = Store::open(&with_class("NO_SUCH_CLASS"), "sc").unwrap();
    let err = store.put("k", b"v".to_vec()).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("InvalidStorageClass"),
        "{err:?}"
    );
}
