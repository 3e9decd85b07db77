//! Where node commands (`node ...`, `wal-push`, `wal-fetch`, `backups ls/delete/retain`,
//! `wal-verify`) get their settings: `SHARDVAULT_*` and libpq's `PG*` environment variables,
//! a settings file of the same names (YAML or JSON), or a node config written by the runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use shardvault_api::objectstorage::BucketKind;
use shardvault_pg::config::NodeConfig;
use shardvault_storage::{
    Compression, Destination, Encryption, GcsCredentials, KeyTransform, Performance, StorageConfig,
};

/// Every setting's name (the README's table says what each maps to).
pub const SETTINGS: &[&str] = &[
    "SHARDVAULT_STORAGE_PREFIX",
    "SHARDVAULT_S3_REGION",
    "SHARDVAULT_S3_ENDPOINT",
    "SHARDVAULT_S3_PATH_STYLE",
    "SHARDVAULT_S3_STORAGE_CLASS",
    "SHARDVAULT_S3_ACCESS_KEY_ID",
    "SHARDVAULT_S3_SECRET_ACCESS_KEY",
    "SHARDVAULT_S3_CA_CERTIFICATE_FILE",
    "SHARDVAULT_GCS_SERVICE_ACCOUNT_FILE",
    "SHARDVAULT_AZURE_STORAGE_ACCOUNT",
    "SHARDVAULT_AZURE_ACCESS_KEY",
    "SHARDVAULT_COMPRESSION",
    "SHARDVAULT_SODIUM_KEY",
    "SHARDVAULT_SODIUM_KEY_TRANSFORM",
    "SHARDVAULT_OPENPGP_KEY_FILE",
    "SHARDVAULT_OPENPGP_KEY_PASSPHRASE",
    "SHARDVAULT_UPLOAD_CONCURRENCY",
    "SHARDVAULT_UPLOAD_DISK_CONCURRENCY",
    "SHARDVAULT_DOWNLOAD_CONCURRENCY",
    "SHARDVAULT_MAX_NETWORK_BANDWIDTH",
    "SHARDVAULT_MAX_DISK_BANDWIDTH",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATA",
];

/// Where a command's settings come from.
#[derive(clap::Args, Clone)]
pub struct SettingsArgs {
    /// Settings file (YAML or JSON keyed by the variable names, e.g. SHARDVAULT_STORAGE_PREFIX;
    /// variables set in the environment win), or a node config written by the runtime.
    /// Without it, the settings come from the environment.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Settings resolved for one command.
pub struct Settings {
    /// The node config node work runs with.
    pub node: NodeConfig,
    /// The file they came from, if any (for the `restore_command` a restore writes).
    pub file: Option<PathBuf>,
    /// Where they came from, for messages.
    pub origin: String,
}

impl SettingsArgs {
    /// Reads the settings: the file given, else the environment.
    pub fn load(&self) -> anyhow::Result<Settings> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(path) = &self.config else {
            let values = SETTINGS
                .iter()
                .filter_map(|name| Some((name.to_string(), env(name)?)))
                .collect();
            return Ok(Settings {
                node: node_config(&values, "the environment")?,
                file: None,
                origin: "the environment".to_string(),
            });
        };
        let (text, mode) = read(path)?;
        let file = std::path::absolute(path)
            .with_context(|| format!("{}: cannot make the path absolute", path.display()))?;
        let origin = path.display().to_string();
        let node = match settings_file(&text, path)? {
            None => NodeConfig::load(path)?,
            Some(mut values) => {
                if let Some(warning) = others_can_read(path, mode, &values) {
                    tracing::warn!("{warning}");
                }
                for name in SETTINGS {
                    if let Some(v) = env(name) {
                        values.insert(name.to_string(), v);
                    }
                }
                node_config(&values, &origin)?
            }
        };
        Ok(Settings {
            node,
            file: Some(file),
            origin,
        })
    }
}

impl Settings {
    /// Where backups are read from: the restore source, else the first destination.
    pub fn source(&self) -> anyhow::Result<Destination> {
        self.node
            .restore_source
            .clone()
            .or_else(|| self.node.destinations.first().cloned())
            .with_context(|| {
                format!(
                    "{}: neither restoreSource nor destinations is set: add a destination",
                    self.origin
                )
            })
    }
}

/// Settings that are secrets: a file holding one should be readable by its owner only.
const SECRETS: &[&str] = &[
    "SHARDVAULT_S3_SECRET_ACCESS_KEY",
    "SHARDVAULT_AZURE_ACCESS_KEY",
    "SHARDVAULT_SODIUM_KEY",
    "SHARDVAULT_OPENPGP_KEY_PASSPHRASE",
];

/// Reads a settings or node config file (never through a link at its last component);
/// returns its text and permission bits.
fn read(path: &Path) -> anyhow::Result<(String, u32)> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut text = String::new();
    let mode = shardvault_pg::statefile::open_nofollow(path)
        .and_then(|mut f| {
            f.read_to_string(&mut text)?;
            Ok(f.metadata()?.permissions().mode())
        })
        .with_context(|| format!("cannot read settings file {}", path.display()))?;
    Ok((text, mode))
}

/// The warning, as libpq gives for a `.pgpass`, when a settings file holding a secret can be
/// read by other users.
fn others_can_read(path: &Path, mode: u32, values: &BTreeMap<String, String>) -> Option<String> {
    let secret = SECRETS.iter().find(|s| values.contains_key(**s))?;
    (mode & 0o077 != 0).then(|| {
        format!(
            "settings file {} holds {secret} and other users can read it (mode {:o}): chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// The settings of a settings file, or None when the file is a node config (its keys are
/// not setting names).
fn settings_file(text: &str, path: &Path) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let Ok(map) = yaml_serde::from_str::<BTreeMap<String, serde_json::Value>>(text) else {
        return Ok(None);
    };
    let is_setting = |k: &str| k.starts_with("SHARDVAULT_") || k.starts_with("PG");
    if !map.keys().any(|k| is_setting(k)) {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        if !SETTINGS.contains(&key.as_str()) {
            bail!(
                "{}: {key} is not a setting: the settings are {}",
                path.display(),
                SETTINGS.join(", ")
            );
        }
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => bail!(
                "{}: {key} is {other}: write a string, number or true/false",
                path.display()
            ),
        };
        out.insert(key, text);
    }
    Ok(Some(out))
}

/// The node config the settings `values` describe (`origin` names where they came from).
fn node_config(values: &BTreeMap<String, String>, origin: &str) -> anyhow::Result<NodeConfig> {
    let get = |name: &str| values.get(name).map(String::as_str);
    let bad = |name: &str, why: String| anyhow::anyhow!("{name} (from {origin}): {why}");
    let port = match get("PGPORT") {
        None => 5432,
        Some(p) => p
            .parse()
            .map_err(|_| bad("PGPORT", format!("{p:?} is not a port number")))?,
    };
    let user = match get("PGUSER") {
        Some(u) => u.to_string(),
        None => nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .context("PGUSER is not set and the OS user has no name: set PGUSER")?,
    };
    let host = get("PGHOST").unwrap_or("/var/run/postgresql");
    Ok(NodeConfig {
        member: format!("the server at {host} port {port}"),
        // Node commands run no PostgreSQL binaries.
        pg_bin: PathBuf::new(),
        pgdata: get("PGDATA").map(PathBuf::from).unwrap_or_default(),
        host: host.into(),
        port,
        user,
        destinations: vec![destination(values, origin)?],
        restore_source: None,
    })
}

/// The destination the settings `values` describe.
fn destination(values: &BTreeMap<String, String>, origin: &str) -> anyhow::Result<Destination> {
    let get = |name: &str| values.get(name).cloned();
    let bad = |name: &str, why: String| anyhow::anyhow!("{name} (from {origin}): {why}");
    let file = |name: &str| -> anyhow::Result<Option<String>> {
        get(name)
            .map(|p| {
                std::fs::read_to_string(&p).map_err(|e| bad(name, format!("cannot read {p}: {e}")))
            })
            .transpose()
    };
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        get(name)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, format!("{v:?} is not a positive whole number")))
            })
            .transpose()
    };
    let prefix = get("SHARDVAULT_STORAGE_PREFIX").ok_or_else(|| {
        anyhow::anyhow!(
            "SHARDVAULT_STORAGE_PREFIX is not set in {origin}: set it to where backups and WAL go (/var/backups/pg, s3://bucket/path, gs://bucket/path or azure://container/path), or give --config FILE"
        )
    })?;
    let split = |kind: BucketKind| {
        kind.split(&prefix)
            .map_err(|e| bad("SHARDVAULT_STORAGE_PREFIX", e))
    };
    let (storage, path) = if let Some(dir) = prefix
        .strip_prefix("file://")
        .or_else(|| prefix.starts_with('/').then_some(prefix.as_str()))
    {
        if !dir.starts_with('/') {
            return Err(bad(
                "SHARDVAULT_STORAGE_PREFIX",
                format!("{prefix:?}: a directory must be an absolute path"),
            ));
        }
        (
            StorageConfig::Filesystem { path: dir.into() },
            String::new(),
        )
    } else if prefix.starts_with("s3://") {
        let (bucket, path) = split(BucketKind::S3)?;
        let keys = (
            get("SHARDVAULT_S3_ACCESS_KEY_ID"),
            get("SHARDVAULT_S3_SECRET_ACCESS_KEY"),
        );
        if keys.0.is_some() != keys.1.is_some() {
            return Err(bad("SHARDVAULT_S3_SECRET_ACCESS_KEY", "set both SHARDVAULT_S3_ACCESS_KEY_ID and SHARDVAULT_S3_SECRET_ACCESS_KEY, or neither".into()));
        }
        let path_style = match get("SHARDVAULT_S3_PATH_STYLE").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(bad(
                    "SHARDVAULT_S3_PATH_STYLE",
                    format!("{v:?}: write true or false"),
                ));
            }
        };
        let storage = StorageConfig::S3 {
            bucket,
            path: String::new(),
            region: get("SHARDVAULT_S3_REGION"),
            endpoint: get("SHARDVAULT_S3_ENDPOINT"),
            path_style,
            access_key_id: keys.0,
            secret_access_key: keys.1,
            storage_class: get("SHARDVAULT_S3_STORAGE_CLASS"),
            ca_certificate: file("SHARDVAULT_S3_CA_CERTIFICATE_FILE")?,
        };
        (storage, path)
    } else if prefix.starts_with("gs://") {
        let (bucket, path) = split(BucketKind::Gcs)?;
        let credentials = match file("SHARDVAULT_GCS_SERVICE_ACCOUNT_FILE")? {
            Some(json) => GcsCredentials::ServiceAccount { json },
            None => GcsCredentials::MetadataService,
        };
        (
            StorageConfig::Gcs {
                bucket,
                path: String::new(),
                endpoint: None,
                credentials,
            },
            path,
        )
    } else if prefix.starts_with("azure://") {
        let (container, path) = split(BucketKind::Azure)?;
        let need = |name: &str| {
            get(name).ok_or_else(|| bad(name, "is needed with an azure:// prefix".into()))
        };
        let storage = StorageConfig::AzureBlob {
            container,
            path: String::new(),
            account: need("SHARDVAULT_AZURE_STORAGE_ACCOUNT")?,
            access_key: need("SHARDVAULT_AZURE_ACCESS_KEY")?,
            endpoint: None,
        };
        (storage, path)
    } else {
        return Err(bad(
            "SHARDVAULT_STORAGE_PREFIX",
            format!(
                "{prefix:?}: write /dir, file:///dir, s3://bucket/path, gs://bucket/path or azure://container/path"
            ),
        ));
    };
    let compression = match get("SHARDVAULT_COMPRESSION") {
        None => Compression::default(),
        Some(c) => {
            serde_json::from_value(serde_json::Value::String(c.to_lowercase())).map_err(|_| {
                bad(
                    "SHARDVAULT_COMPRESSION",
                    format!("{c:?}: write lz4, zstd, lzma, brotli or none"),
                )
            })?
        }
    };
    let encryption = match (
        get("SHARDVAULT_SODIUM_KEY"),
        file("SHARDVAULT_OPENPGP_KEY_FILE")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "SHARDVAULT_OPENPGP_KEY_FILE",
                "set SHARDVAULT_SODIUM_KEY or SHARDVAULT_OPENPGP_KEY_FILE, not both".into(),
            ));
        }
        (Some(key), None) => Some(Encryption::Sodium {
            key,
            key_transform: match get("SHARDVAULT_SODIUM_KEY_TRANSFORM") {
                None => KeyTransform::default(),
                Some(t) => serde_json::from_value(serde_json::Value::String(t.to_lowercase()))
                    .map_err(|_| {
                        bad(
                            "SHARDVAULT_SODIUM_KEY_TRANSFORM",
                            format!("{t:?}: write base64, hex or none"),
                        )
                    })?,
            },
        }),
        (None, Some(key)) => Some(Encryption::Openpgp {
            key,
            key_passphrase: get("SHARDVAULT_OPENPGP_KEY_PASSPHRASE"),
        }),
        (None, None) => None,
    };
    let defaults = Performance::default();
    let count = |name: &str, default: usize| -> anyhow::Result<usize> {
        Ok(number(name)?.map_or(default, |n| n as usize))
    };
    let performance = Performance {
        max_network_bandwidth: number("SHARDVAULT_MAX_NETWORK_BANDWIDTH")?,
        max_disk_bandwidth: number("SHARDVAULT_MAX_DISK_BANDWIDTH")?,
        upload_disk_concurrency: count(
            "SHARDVAULT_UPLOAD_DISK_CONCURRENCY",
            defaults.upload_disk_concurrency,
        )?,
        upload_concurrency: count("SHARDVAULT_UPLOAD_CONCURRENCY", defaults.upload_concurrency)?,
        download_concurrency: count(
            "SHARDVAULT_DOWNLOAD_CONCURRENCY",
            defaults.download_concurrency,
        )?,
    };
    let dest = Destination {
        storage,
        prefix: path,
        compression,
        performance,
        encryption,
    };
    // A bad key is said now, not at the first object.
    dest.codec().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_map_to_the_storage_codec_and_server() {
        let cfg = node_config(
            &values(&[
                ("SHARDVAULT_STORAGE_PREFIX", "s3://bk/pg/main/"),
                ("SHARDVAULT_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("SHARDVAULT_S3_PATH_STYLE", "true"),
                ("SHARDVAULT_COMPRESSION", "ZSTD"),
                ("SHARDVAULT_SODIUM_KEY", &"ab".repeat(32)),
                ("SHARDVAULT_SODIUM_KEY_TRANSFORM", "hex"),
                ("SHARDVAULT_UPLOAD_CONCURRENCY", "4"),
                ("PGHOST", "/run/pg"),
                ("PGPORT", "5433"),
                ("PGUSER", "backup"),
                ("PGDATA", "/srv/pg"),
            ]),
            "test",
        )
        .unwrap();
        assert_eq!(
            cfg.conninfo("postgres"),
            "host=/run/pg port=5433 user=backup dbname=postgres"
        );
        assert_eq!(cfg.pgdata, Path::new("/srv/pg"));
        let d = &cfg.destinations[0];
        assert_eq!(d.prefix, "pg/main");
        assert_eq!(d.compression, Compression::Zstd);
        assert_eq!(d.performance.upload_concurrency, 4);
        assert!(
            matches!(&d.storage, StorageConfig::S3 { bucket, path_style: true, endpoint: Some(_), .. } if bucket == "bk")
        );
        assert!(d.codec().unwrap().key.is_some());
        let fs = node_config(
            &values(&[("SHARDVAULT_STORAGE_PREFIX", "file:///var/b")]),
            "t",
        )
        .unwrap();
        assert_eq!(
            fs.destinations[0].storage,
            StorageConfig::Filesystem {
                path: "/var/b".into()
            }
        );
    }

    #[test]
    fn a_bad_setting_is_named_with_what_to_write() {
        let err =
            |pairs: &[(&str, &str)]| node_config(&values(pairs), "env").unwrap_err().to_string();
        assert!(err(&[]).starts_with("SHARDVAULT_STORAGE_PREFIX is not set in env"));
        let e = err(&[("SHARDVAULT_STORAGE_PREFIX", "ftp://x")]);
        assert!(
            e.contains("SHARDVAULT_STORAGE_PREFIX (from env)") && e.contains("s3://"),
            "{e}"
        );
        let e = err(&[
            ("SHARDVAULT_STORAGE_PREFIX", "/b"),
            ("SHARDVAULT_COMPRESSION", "gzip"),
        ]);
        assert!(
            e.starts_with("SHARDVAULT_COMPRESSION (from env): \"gzip\""),
            "{e}"
        );
        let e = err(&[("SHARDVAULT_STORAGE_PREFIX", "/b"), ("PGPORT", "x")]);
        assert!(e.starts_with("PGPORT"), "{e}");
        let e = err(&[
            ("SHARDVAULT_STORAGE_PREFIX", "/b"),
            ("SHARDVAULT_SODIUM_KEY", "short"),
        ]);
        assert!(e.contains("encryption.sodium.key"), "{e}");
    }

    #[test]
    fn a_settings_file_is_told_from_a_node_config() {
        let p = Path::new("s.yaml");
        let s = settings_file("SHARDVAULT_STORAGE_PREFIX: /b\nPGPORT: 5433\n", p)
            .unwrap()
            .unwrap();
        assert_eq!(s["PGPORT"], "5433");
        assert!(
            settings_file(r#"{"member": "m", "port": 1}"#, p)
                .unwrap()
                .is_none()
        );
        let e = settings_file("SHARDVAULT_STORAGE_PREFX: /b\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("s.yaml: SHARDVAULT_STORAGE_PREFX is not a setting"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_in_a_file_others_can_read_is_warned_about() {
        let p = Path::new("s.yaml");
        let secret = BTreeMap::from([("SHARDVAULT_SODIUM_KEY".to_string(), "k".to_string())]);
        let w = others_can_read(p, 0o100644, &secret).expect("a warning");
        assert!(
            w.contains("SHARDVAULT_SODIUM_KEY") && w.contains("chmod 600 s.yaml"),
            "{w}"
        );
        assert_eq!(others_can_read(p, 0o100600, &secret), None);
        let plain = BTreeMap::from([("PGPORT".to_string(), "5433".to_string())]);
        assert_eq!(others_can_read(p, 0o100644, &plain), None);
    }
}
