//! Operators of the HTTP object stores besides S3: Google Cloud Storage and Azure Blob
//! Storage, and the HTTP client that trusts a configured CA.

use base64::Engine as _;
use opendal::{HttpTransporter, OperationContext, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use crate::{GcsCredentials, StorageConfig, StorageError};

/// Where a GCS or Azure store points, for messages (never credentials).
pub(crate) struct Opened {
    pub op: Operator,
    pub bucket: String,
    pub endpoint: String,
}

/// `endpoint` without its trailing slash, refused unless it is an `http(s)://` URL.
pub(crate) fn endpoint_url(field: &str, endpoint: &str) -> Result<String, StorageError> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(StorageError::Config(format!(
            "{field} {endpoint:?} must start with http:// or https://"
        )));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// `op` sending its requests through a client that also trusts the CAs in `pem`.
pub(crate) fn trusting(op: Operator, field: &str, pem: &str) -> Result<Operator, StorageError> {
    let bad = |e: String| StorageError::Config(format!("{field}: {e}"));
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    let client = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| bad(format!("unusable as a CA certificate ({e})")))?;
    let transport = HttpTransporter::new(ReqwestTransport::new(client));
    Ok(op.with_context(OperationContext::new().with_http_transport(transport)))
}

/// Checks a service account key is the JSON GCP gives, naming the field when it is not.
fn service_account_base64(json: &str) -> Result<String, StorageError> {
    const FIELD: &str = "gcs.gcpCredentials.secretKeySelectors.serviceAccountJSON";
    let bad = |what: &str| {
        StorageError::Config(format!(
            "{FIELD} {what}: give the key file downloaded from the GCP console (type \
             service_account)"
        ))
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad("is not JSON"))?;
    if value["type"] != "service_account" {
        return Err(bad("is not a service account key"));
    }
    for key in ["client_email", "private_key"] {
        if !value[key].is_string() {
            return Err(bad(&format!("has no {key}")));
        }
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}

/// Builds the GCS operator.
pub(crate) fn open_gcs(config: &StorageConfig) -> Result<Opened, StorageError> {
    let StorageConfig::Gcs {
        bucket,
        endpoint,
        credentials,
        ..
    } = config
    else {
        unreachable!("open_gcs is only called with a GCS config");
    };
    if bucket.is_empty() {
        return Err(StorageError::Config("gcs bucket is empty".into()));
    }
    opendal::install_default();
    let mut b = opendal::services::Gcs::default()
        .bucket(bucket)
        .disable_config_load();
    let shown = match endpoint {
        Some(e) => {
            let e = endpoint_url("gcs.endpoint", e)?;
            b = b.endpoint(&e);
            e
        }
        None => "https://storage.googleapis.com".to_string(),
    };
    b = match credentials {
        GcsCredentials::ServiceAccount { json } => b
            .credential(&service_account_base64(json)?)
            .disable_vm_metadata(),
        GcsCredentials::MetadataService => b,
        GcsCredentials::Unsigned => b.skip_signature().disable_vm_metadata(),
    };
    let op =
        Operator::new(b).map_err(|e| StorageError::Config(format!("gcs bucket {bucket}: {e}")))?;
    Ok(Opened {
        op,
        bucket: bucket.clone(),
        endpoint: shown,
    })
}

/// Builds the Azure Blob operator, signed with the account's shared key.
pub(crate) fn open_azure(config: &StorageConfig) -> Result<Opened, StorageError> {
    let StorageConfig::AzureBlob {
        container,
        account,
        access_key,
        endpoint,
        ..
    } = config
    else {
        unreachable!("open_azure is only called with an Azure config");
    };
    if container.is_empty() {
        return Err(StorageError::Config("azureBlob bucket is empty".into()));
    }
    if account.is_empty() {
        return Err(StorageError::Config(
            "azureBlob.azureCredentials.secretKeySelectors.storageAccount is empty".into(),
        ));
    }
    if base64::engine::general_purpose::STANDARD
        .decode(access_key.trim())
        .is_err()
    {
        return Err(StorageError::Config(
            "azureBlob.azureCredentials.secretKeySelectors.accessKey is not base64: give the \
             storage account's access key as the portal shows it"
                .into(),
        ));
    }
    opendal::install_default();
    let shown = match endpoint {
        Some(e) => endpoint_url("azureBlob.endpoint", e)?,
        None => format!("https://{account}.blob.core.windows.net"),
    };
    let b = opendal::services::Azblob::default()
        .container(container)
        .endpoint(&shown)
        .account_name(account)
        .account_key(access_key.trim());
    let op = Operator::new(b)
        .map_err(|e| StorageError::Config(format!("azureBlob bucket {container}: {e}")))?;
    Ok(Opened {
        op,
        bucket: container.clone(),
        endpoint: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_keys_are_checked_before_use() {
        for (json, want) in [
            ("{", "is not JSON"),
            (
                r#"{"type":"authorized_user"}"#,
                "is not a service account key",
            ),
            (
                r#"{"type":"service_account","private_key":"k"}"#,
                "has no client_email",
            ),
        ] {
            let err = service_account_base64(json).unwrap_err().to_string();
            assert!(
                err.contains("serviceAccountJSON") && err.contains(want),
                "{err}"
            );
            assert!(!err.contains("private_key\":"), "{err}");
        }
        let ok = r#"{"type":"service_account","client_email":"a@b","private_key":"k"}"#;
        assert!(service_account_base64(ok).is_ok());
    }

    #[test]
    fn a_ca_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fs = opendal::services::Fs::default().root(dir.path().to_str().unwrap());
        let op = Operator::new(fs).unwrap();
        let err = trusting(op, "caCertificate", "junk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("caCertificate"), "{err}");
    }
}
