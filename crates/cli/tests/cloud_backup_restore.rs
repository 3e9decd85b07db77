//! Sharded backup and restore through the daemon on the cloud object stores, each run by a
//! real server (fake-gcs-server for `gcs`, azurite for `azureBlob`), with client-side
//! encryption, a bucket written with a path, and every member compared by content.

use serde_json::{Value, json};
use shardvault_pg::fingerprint;
use shardvault_storage::testing::emulators::{self, BUCKET, Emulator};
use shardvault_storage::testing::gpg::Gpg;
use shardvault_storage::{Codec, Compression, StorageConfig, Store};
use shardvault_testkit::cluster::{assert_same_content, sql};
use shardvault_testkit::daemon::{Daemon, ready};
use shardvault_testkit::manifests::{DdpCluster, sharded_backup};

fn secret(data: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud-keys"},
           "stringData": data})
    .to_string()
}

/// Applies `secrets` and the SGObjectStorage `spec`, backs a sharded cluster up, restores it
/// into a new cluster and checks every member has the same content; returns the daemon.
async fn backup_and_restore(secrets: &str, spec: Value) -> Daemon {
    let d = Daemon::start();
    d.apply(secrets);
    d.apply(
        &json!({"apiVersion": "stackgres.io/v1beta1", "kind": "SGObjectStorage",
                "metadata": {"name": "cloud"}, "spec": spec})
        .to_string(),
    );
    d.apply(
        &DdpCluster::new("source")
            .backups_to("cloud")
            .compression("zstd")
            .yaml(),
    );
    d.wait_until("sgshardedcluster", "source", 120, ready);
    let source = d.observed("source");
    sql(
        &source.primary_conninfo(0).unwrap(),
        "SELECT ddp_create_distributed_table('accounts', 'id bigint primary key, balance bigint not null', 'id');
         INSERT INTO accounts SELECT i, i * 3 FROM generate_series(1, 800) i;",
    )
    .await;
    d.apply(&sharded_backup("cloud-backup", "source", &[]));
    let backup = d.wait_until("sgshardedbackup", "cloud-backup", 150, |o| {
        o.pointer("/status/process/status")
            .and_then(Value::as_str)
            .is_some_and(|s| s == "Completed" || s == "Failed")
    });
    assert_eq!(
        backup["status"]["process"]["status"], "Completed",
        "{backup:#}"
    );
    let at_backup = fingerprint::members(&source).await.expect("fingerprint");
    sql(
        &source.primary_conninfo(0).unwrap(),
        "UPDATE accounts SET balance = 0",
    )
    .await;
    d.apply(
        &DdpCluster::new("restored")
            .restored_from("cloud-backup")
            .yaml(),
    );
    d.wait_until("sgshardedcluster", "restored", 180, ready);
    let restored = fingerprint::members(&d.observed("restored"))
        .await
        .expect("fingerprint");
    assert_same_content(&at_backup, &restored, "restore from the cloud store");
    d
}

/// Every object of the bucket sits under `path`; returns the keys under it.
async fn keys_under(server: &Emulator, path: &str) -> Vec<String> {
    let whole = Store::open(&server.config, "").unwrap();
    let keys = whole.list("").await.unwrap();
    assert!(!keys.is_empty(), "nothing stored in {}", server.endpoint);
    for key in &keys {
        assert!(
            key.starts_with(&format!("{path}/")),
            "{key} is outside {path}"
        );
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_backup_restores_from_gcs_with_openpgp_encryption() {
    let server = emulators::start_fake_gcs().await;
    let gpg = Gpg::new();
    let passphrase = "gcs backups passphrase";
    let key = gpg.secret_key("gcs backups <gcs@example.invalid>", passphrase);
    let secrets = secret(json!({"pgp-key": key, "pgp-pass": passphrase}));
    let spec = json!({
        "type": "gcs",
        "gcs": {
            "bucket": format!("gs://{BUCKET}/team/pg"),
            "endpoint": server.endpoint,
            "gcpCredentials": {},
        },
        "encryption": {"method": "openpgp", "openpgp": {
            "key": {"name": "cloud-keys", "key": "pgp-key"},
            "keyPassphrase": {"name": "cloud-keys", "key": "pgp-pass"},
        }},
    });
    let _d = backup_and_restore(&secrets, spec).await;

    let keys = keys_under(&server, "team/pg").await;
    let part = keys
        .iter()
        .find(|k| k.contains("/parts/"))
        .expect("a base backup part");
    let object = Store::open(&server.config, "")
        .unwrap()
        .get(part)
        .await
        .unwrap();
    // A standard OpenPGP tool opens what the daemon stored; a plain codec cannot.
    let opened = gpg.decrypt(&object, passphrase).unwrap();
    shardvault_storage::codec::decode(part, &opened).unwrap();
    let err = Codec::new(Compression::Zstd, None)
        .decode(part, &object)
        .unwrap_err();
    assert!(err.to_string().contains("encryption.openpgp.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_backup_restores_from_azure_blob_with_sodium_encryption() {
    let server = emulators::start_azurite().await;
    let StorageConfig::AzureBlob {
        account,
        access_key,
        ..
    } = &server.config
    else {
        unreachable!("azurite serves Azure Blob")
    };
    let secrets = secret(json!({
        "account": account,
        "key": access_key,
        "sodium": "11".repeat(32),
    }));
    let spec = json!({
        "type": "azureBlob",
        "azureBlob": {
            "bucket": format!("azure://{BUCKET}/team/pg"),
            "endpoint": server.endpoint,
            "azureCredentials": {"secretKeySelectors": {
                "storageAccount": {"name": "cloud-keys", "key": "account"},
                "accessKey": {"name": "cloud-keys", "key": "key"},
            }},
        },
        "encryption": {"method": "sodium", "sodium": {
            "key": {"name": "cloud-keys", "key": "sodium"},
            "keyTransform": "hex",
        }},
    });
    let _d = backup_and_restore(&secrets, spec).await;

    let keys = keys_under(&server, "team/pg").await;
    let part = keys.iter().find(|k| k.contains("/parts/")).unwrap();
    let object = Store::open(&server.config, "")
        .unwrap()
        .get(part)
        .await
        .unwrap();
    let err = shardvault_storage::codec::decode(part, &object).unwrap_err();
    assert!(err.to_string().contains("wrong encryption key"), "{err}");
}
