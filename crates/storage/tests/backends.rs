//! What differs between backends, against real servers: a bucket written with a path keeps
//! every object under it, a missing bucket is named (never listed as empty), refused
//! credentials name the field to fix, and a TLS endpoint signed by a custom CA is reached
//! through `caCertificate` (and refused, clearly, without it).

use shardvault_storage::testing::emulators::{self, BUCKET, Emulator};
use shardvault_storage::testing::start_s3_server;
use shardvault_storage::{StorageConfig, StorageError, Store};

/// Objects of a store on `under` (the path of `bucket/path`) sit under that path of the bucket.
async fn objects_go_under_the_bucket_path(name: &str, root: StorageConfig, under: StorageConfig) {
    let store = Store::open(&under, "shardvault/ns/c").unwrap();
    store.put("wal/1", b"one".to_vec()).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), vec!["wal/1"], "{name}");
    assert!(
        store
            .describe()
            .ends_with(&format!("{BUCKET}/some/path/shardvault/ns/c")),
        "{name}: {}",
        store.describe()
    );
    let whole = Store::open(&root, "").unwrap();
    assert_eq!(
        whole.list("").await.unwrap(),
        vec!["some/path/shardvault/ns/c/wal/1"],
        "{name}"
    );
    store.delete_all("").await.unwrap();
    assert!(whole.list("").await.unwrap().is_empty(), "{name}");
}

async fn on_emulator(name: &str, server: Emulator) {
    let root = server.config.clone();
    objects_go_under_the_bucket_path(name, root, server.config_under("some/path")).await;
}

#[tokio::test]
async fn bucket_paths_on_s3s() {
    let server = start_s3_server().await;
    let mut config = server.config_for(BUCKET, &server.access_key, &server.secret_key);
    server.create_bucket(BUCKET);
    let root = config.clone();
    if let StorageConfig::S3 { path, .. } = &mut config {
        *path = "some/path".into();
    }
    objects_go_under_the_bucket_path("s3s", root, config).await;
}

#[tokio::test]
async fn bucket_paths_on_moto() {
    on_emulator("moto", emulators::start_moto().await).await;
}

#[tokio::test]
async fn bucket_paths_on_gcs() {
    on_emulator("gcs", emulators::start_fake_gcs().await).await;
}

#[tokio::test]
async fn bucket_paths_on_azurite() {
    on_emulator("azurite", emulators::start_azurite().await).await;
}

/// `config` with its bucket (or container) renamed to one that does not exist.
fn missing_bucket(config: &StorageConfig) -> StorageConfig {
    let mut config = config.clone();
    match &mut config {
        StorageConfig::S3 { bucket, .. } | StorageConfig::Gcs { bucket, .. } => {
            *bucket = "no-such-bucket".into()
        }
        StorageConfig::AzureBlob { container, .. } => *container = "no-such-bucket".into(),
        StorageConfig::Filesystem { .. } => unreachable!(),
    }
    config
}

#[tokio::test]
async fn a_missing_bucket_is_named_on_every_http_backend() {
    let (moto, gcs, azurite) = tokio::join!(
        emulators::start_moto(),
        emulators::start_fake_gcs(),
        emulators::start_azurite()
    );
    for server in [&moto, &gcs, &azurite] {
        let store = Store::open(&missing_bucket(&server.config), "p").unwrap();
        let check = store.check().await;
        let list = store.list("").await;
        for err in [check.unwrap_err(), list.unwrap_err()] {
            assert!(
                matches!(err, StorageError::BucketMissing { .. }),
                "{}: {err:?}",
                server.endpoint
            );
            assert!(err.to_string().contains("no-such-bucket"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_wrong_azure_key_names_the_credentials_field() {
    let server = emulators::start_azurite().await;
    let mut config = server.config.clone();
    if let StorageConfig::AzureBlob { access_key, .. } = &mut config {
        *access_key = "d3Jvbmcta2V5".into();
    }
    let store = Store::open(&config, "p").unwrap();
    for err in [
        store.check().await.unwrap_err(),
        store.put("k", vec![1]).await.unwrap_err(),
    ] {
        assert!(matches!(err, StorageError::AccessDenied { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("azureBlob.azureCredentials.secretKeySelectors"),
            "{err}"
        );
    }
    let mut bad = server.config.clone();
    if let StorageConfig::AzureBlob { access_key, .. } = &mut bad {
        *access_key = "not base64!".into();
    }
    let err = Store::open(&bad, "p").unwrap_err().to_string();
    assert!(err.contains("accessKey is not base64"), "{err}");
}

/// A CA, and a certificate for `localhost` and 127.0.0.1 it signed: (ca, cert, key) as PEM.
fn tls_material() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "shardvault test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_tls_endpoint_signed_by_a_custom_ca_needs_ca_certificate() {
    let (ca, cert, key) = tls_material();
    let server = emulators::start_moto_tls(&cert, &key, &ca).await;
    assert!(server.endpoint.starts_with("https://localhost:"));
    let with_ca = |ca_pem: Option<&str>| {
        let mut config = server.config.clone();
        if let StorageConfig::S3 { ca_certificate, .. } = &mut config {
            *ca_certificate = ca_pem.map(Into::into);
        }
        config
    };

    let store = Store::open(&with_ca(Some(&ca)), "tls").unwrap();
    store.check().await.unwrap();
    store.put("k", b"over tls".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), b"over tls");

    let untrusted = Store::open(&with_ca(None), "tls").unwrap();
    for err in [
        untrusted.check().await.unwrap_err(),
        untrusted.get("k").await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("TLS certificate of https://localhost:")
                && text.contains("not trusted")
                && text.contains("caCertificate"),
            "{text}"
        );
    }
    let (other_ca, _, _) = tls_material();
    let wrong = Store::open(&with_ca(Some(&other_ca)), "tls").unwrap();
    let err = wrong.check().await.unwrap_err().to_string();
    assert!(err.contains("not trusted"), "{err}");
    let err = Store::open(&with_ca(Some("not a pem")), "tls")
        .unwrap_err()
        .to_string();
    assert!(err.contains("caCertificate"), "{err}");
}
