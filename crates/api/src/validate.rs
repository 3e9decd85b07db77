//! Validation of whole manifests: the field path and value of every problem, nothing stored.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Kind;
use crate::backup::{BackupSpec, BackupType};
use crate::meta::ObjectMeta;
use crate::objectstorage::ObjectStorageSpec;
use crate::quantity::{Timeout, parse_quantity};
use crate::shardedbackup::{BACKUP_TYPE_ANNOTATION, ShardedBackupSpec};
use crate::shardedcluster::{BackupConfiguration, ShardedClusterSpec};
use crate::storage_path::check_key_prefix;

/// One problem in a manifest: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `spec.configurations.backups[0].cronSchedule`.
    pub path: String,
    /// What is wrong, usually starting with the bad value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A manifest that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} is invalid: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ValidationError {
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn parse_at<T: DeserializeOwned>(prefix: &str, value: &Value, errs: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{inner}")
            };
            errs.push(path, e.into_inner().to_string());
            None
        }
    }
}

/// Checks a Kubernetes object name (RFC 1123 label).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: must be at most 63 characters of a-z, 0-9 and '-', start with a letter and end with a letter or digit"
        ))
    }
}

fn check_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    name_ok && prefix_ok
}

fn check_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// Checks a 5-field cron expression.
pub fn check_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{expr:?}: expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    croner::Cron::from_str(expr).map_err(|e| format!("{expr:?}: {e}"))
}

/// Validates a manifest (or a stored object): returns its kind, or every problem found.
pub fn validate(doc: &Value) -> Result<Kind, ValidationError> {
    let mut errs = Errors(Vec::new());
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fail = |errs: Errors, kind: &str| ValidationError {
        kind: kind.to_string(),
        name: name.clone(),
        errors: errs.0,
    };
    if !doc.is_object() {
        errs.push(
            "",
            "a manifest must be a mapping with apiVersion, kind and metadata",
        );
        return Err(fail(errs, "object"));
    }
    let kind = match Kind::from_manifest(api_version, kind_name) {
        Ok(k) => k,
        Err(msg) => {
            let path = if kind_name.is_empty() || !Kind::ALL.iter().any(|k| k.name() == kind_name) {
                "kind"
            } else {
                "apiVersion"
            };
            errs.push(path, msg);
            return Err(fail(
                errs,
                if kind_name.is_empty() {
                    "object"
                } else {
                    kind_name
                },
            ));
        }
    };
    let allowed: &[&str] = match kind {
        Kind::Secret => &[
            "apiVersion",
            "kind",
            "metadata",
            "type",
            "data",
            "stringData",
        ],
        Kind::Event => &[
            "apiVersion",
            "kind",
            "metadata",
            "involvedObject",
            "reason",
            "message",
            "type",
            "count",
            "firstTimestamp",
            "lastTimestamp",
        ],
        _ => &["apiVersion", "kind", "metadata", "spec", "status"],
    };
    for key in doc.as_object().expect("checked above").keys() {
        if !allowed.contains(&key.as_str()) {
            errs.push(key.clone(), format!("unknown field {key:?}"));
        }
    }
    match doc.get("metadata") {
        None => errs.push("metadata", "required: give at least metadata.name"),
        Some(m) => {
            if let Some(meta) = parse_at::<ObjectMeta>("metadata", m, &mut errs) {
                if let Err(e) = check_name(&meta.name) {
                    errs.push("metadata.name", e);
                }
                if let Some(ns) = &meta.namespace
                    && let Err(e) = check_name(ns)
                {
                    errs.push("metadata.namespace", e);
                }
                for (k, v) in &meta.labels {
                    if !check_label_key(k) {
                        errs.push(
                            format!("metadata.labels[{k:?}]"),
                            format!("{k:?}: not a valid label key"),
                        );
                    } else if !check_label_value(v) {
                        errs.push(
                            format!("metadata.labels[{k:?}]"),
                            format!("{v:?}: not a valid label value"),
                        );
                    }
                }
            }
        }
    }
    let spec = doc.get("spec");
    let need_spec = |errs: &mut Errors| {
        if spec.is_none() {
            errs.push("spec", "required");
        }
    };
    match kind {
        Kind::SGObjectStorage => {
            need_spec(&mut errs);
            if let Some(s) = spec.and_then(|s| parse_at::<ObjectStorageSpec>("spec", s, &mut errs))
            {
                for (p, m) in s.check() {
                    errs.push(p, m);
                }
            }
        }
        Kind::SGShardedCluster => {
            need_spec(&mut errs);
            if let Some(s) = spec.and_then(|s| parse_at::<ShardedClusterSpec>("spec", s, &mut errs))
            {
                check_sharded_cluster(&s, &mut errs);
            }
        }
        Kind::SGShardedBackup => {
            need_spec(&mut errs);
            if let Some(s) = spec.and_then(|s| parse_at::<ShardedBackupSpec>("spec", s, &mut errs))
            {
                if let Err(e) = check_name(&s.sg_sharded_cluster) {
                    errs.push("spec.sgShardedCluster", e);
                }
                check_timeout("spec.timeout", s.timeout.as_ref(), &mut errs);
                check_timeout(
                    "spec.reconciliationTimeout",
                    s.reconciliation_timeout.as_ref(),
                    &mut errs,
                );
                check_min("spec.maxRetries", s.max_retries, 0, &mut errs);
            }
            let annotations = doc.pointer("/metadata/annotations");
            if let Some(v) = annotations.and_then(|a| a.get(BACKUP_TYPE_ANNOTATION))
                && let Err(e) = v.as_str().unwrap_or_default().parse::<BackupType>()
            {
                errs.push(
                    format!("metadata.annotations[{BACKUP_TYPE_ANNOTATION:?}]"),
                    e,
                );
            }
        }
        Kind::SGBackup => {
            need_spec(&mut errs);
            if let Some(s) = spec.and_then(|s| parse_at::<BackupSpec>("spec", s, &mut errs)) {
                check_timeout("spec.timeout", s.timeout.as_ref(), &mut errs);
                check_min("spec.maxRetries", s.max_retries, 0, &mut errs);
            }
        }
        Kind::Secret => {
            if let Some(data) = doc.get("data") {
                match data.as_object() {
                    None => errs.push("data", "must be a mapping of key to base64 value"),
                    Some(map) => {
                        for (k, v) in map {
                            if v.as_str().and_then(crate::secret::base64_decode).is_none() {
                                errs.push(
                                    format!("data.{k}"),
                                    "not valid base64: use stringData for plain text",
                                );
                            }
                        }
                    }
                }
            }
            if let Some(sd) = doc.get("stringData")
                && !sd
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string))
            {
                errs.push("stringData", "must be a mapping of key to string");
            }
        }
        Kind::Event => {}
    }
    if errs.0.is_empty() {
        Ok(kind)
    } else {
        Err(fail(errs, kind.name()))
    }
}

fn check_min(path: &str, v: Option<i64>, min: i64, errs: &mut Errors) {
    if let Some(v) = v
        && v < min
    {
        errs.push(path, format!("{v}: must be at least {min}"));
    }
}

/// Most shard clusters a sharded cluster may have.
const MAX_SHARDS: i64 = 64;
/// Most servers a member may have.
const MAX_INSTANCES: i64 = 16;
/// Most parallel transfers a backup or restore may ask for.
const MAX_CONCURRENCY: i64 = 256;
/// Largest `incremental.maxChainSizePercent`: a chain ten times its full backup.
const MAX_CHAIN_PERCENT: i64 = 1000;

fn check_range(path: &str, v: i64, min: i64, max: i64, errs: &mut Errors) {
    if v < min || v > max {
        errs.push(path, format!("{v}: must be between {min} and {max}"));
    }
}

fn check_timeout(path: &str, t: Option<&Timeout>, errs: &mut Errors) {
    if let Some(t) = t
        && let Err(e) = t.seconds()
    {
        let shown = match t {
            Timeout::Seconds(s) => s.to_string(),
            Timeout::Iso(s) => format!("{s:?}"),
        };
        errs.push(path, format!("{shown}: {e}"));
    }
}

fn check_sharded_cluster(s: &ShardedClusterSpec, errs: &mut Errors) {
    match &s.postgres {
        None => errs.push("spec.postgres.version", "required, e.g. '15'"),
        Some(p) => {
            let major = p.version.split('.').next().unwrap_or("");
            if major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
                errs.push(
                    "spec.postgres.version",
                    format!("{:?}: expected a major version such as '15'", p.version),
                );
            }
        }
    }
    if let Some(db) = &s.database
        && (db.is_empty() || db.len() > 63 || db.contains(['"', '\0']))
    {
        errs.push(
            "spec.database",
            format!("{db:?}: not a usable database name"),
        );
    }
    match &s.coordinator {
        None => errs.push("spec.coordinator", "required: give coordinator.instances"),
        Some(c) => {
            check_range(
                "spec.coordinator.instances",
                c.instances,
                1,
                MAX_INSTANCES,
                errs,
            );
            if let Some(p) = &c.pods
                && let Err(e) = parse_quantity(&p.persistent_volume.size)
            {
                errs.push(
                    "spec.coordinator.pods.persistentVolume.size",
                    format!("{:?}: {e}", p.persistent_volume.size),
                );
            }
        }
    }
    match &s.shards {
        None => errs.push(
            "spec.shards",
            "required: give shards.clusters and shards.instancesPerCluster",
        ),
        Some(sh) => {
            check_range("spec.shards.clusters", sh.clusters, 1, MAX_SHARDS, errs);
            check_range(
                "spec.shards.instancesPerCluster",
                sh.instances_per_cluster,
                1,
                MAX_INSTANCES,
                errs,
            );
            if let Some(p) = &sh.pods
                && let Err(e) = parse_quantity(&p.persistent_volume.size)
            {
                errs.push(
                    "spec.shards.pods.persistentVolume.size",
                    format!("{:?}: {e}", p.persistent_volume.size),
                );
            }
        }
    }
    let members = s.member_names("x").len();
    for (i, b) in s.backups().iter().enumerate() {
        check_backup_entry(
            &format!("spec.configurations.backups[{i}]"),
            b,
            members,
            errs,
        );
    }
    if let Some(r) = s.initial_data.as_ref().and_then(|d| d.restore.as_ref()) {
        if let Err(e) = check_name(&r.from_backup.name) {
            errs.push("spec.initialData.restore.fromBackup.name", e);
        }
        if let Some(v) = r.download_disk_concurrency {
            check_range(
                "spec.initialData.restore.downloadDiskConcurrency",
                v,
                1,
                MAX_CONCURRENCY,
                errs,
            );
        }
        if let Some(p) = &r.from_backup.point_in_time_recovery
            && p.restore_to_timestamp.parse::<jiff::Timestamp>().is_err()
        {
            errs.push(
                "spec.initialData.restore.fromBackup.pointInTimeRecovery.restoreToTimestamp",
                format!(
                    "{:?}: expected an RFC 3339 time such as 2024-01-15T10:30:00Z",
                    p.restore_to_timestamp
                ),
            );
        }
    }
}

fn check_backup_entry(path: &str, b: &BackupConfiguration, members: usize, errs: &mut Errors) {
    if let Err(e) = check_name(&b.sg_object_storage) {
        errs.push(format!("{path}.sgObjectStorage"), e);
    }
    if let Some(c) = &b.cron_schedule
        && let Err(e) = check_cron(c)
    {
        errs.push(format!("{path}.cronSchedule"), e);
    }
    check_min(&format!("{path}.retention"), b.retention, 1, errs);
    check_min(&format!("{path}.maxRetries"), b.max_retries, 0, errs);
    if let Some(c) = &b.compression
        && !["lz4", "lzma", "zstd", "brotli"].contains(&c.as_str())
    {
        errs.push(
            format!("{path}.compression"),
            format!("{c:?}: must be one of lz4, lzma, zstd, brotli"),
        );
    }
    if b.path.is_some() && b.paths.is_some() {
        errs.push(
            format!("{path}.paths"),
            "give either path or paths, not both",
        );
    }
    if let Some(p) = &b.path
        && let Err(e) = check_key_prefix(p)
    {
        errs.push(format!("{path}.path"), e);
    }
    for (i, p) in b.paths.iter().flatten().enumerate() {
        if let Err(e) = check_key_prefix(p) {
            errs.push(format!("{path}.paths[{i}]"), e);
        }
    }
    if let Some(paths) = &b.paths
        && paths.len() != members
    {
        errs.push(
            format!("{path}.paths"),
            format!(
                "{} paths for {members} members: give one per member, coordinator first",
                paths.len()
            ),
        );
    }
    if let Some(i) = &b.incremental {
        check_min(
            &format!("{path}.incremental.fullEvery"),
            i.full_every,
            1,
            errs,
        );
        if let Some(p) = i.max_chain_size_percent {
            check_range(
                &format!("{path}.incremental.maxChainSizePercent"),
                p,
                1,
                MAX_CHAIN_PERCENT,
                errs,
            );
        }
    }
    check_timeout(&format!("{path}.timeout"), b.timeout.as_ref(), errs);
    check_timeout(
        &format!("{path}.reconciliationTimeout"),
        b.reconciliation_timeout.as_ref(),
        errs,
    );
    if let Some(p) = &b.performance {
        let bandwidth = [
            ("maxNetworkBandwidth", p.max_network_bandwidth),
            ("maxDiskBandwidth", p.max_disk_bandwidth),
        ];
        for (f, v) in bandwidth {
            check_min(&format!("{path}.performance.{f}"), v, 1, errs);
        }
        let concurrency = [
            ("uploadDiskConcurrency", p.upload_disk_concurrency),
            ("uploadConcurrency", p.upload_concurrency),
            ("downloadConcurrency", p.download_concurrency),
        ];
        for (f, v) in concurrency {
            if let Some(v) = v {
                check_range(
                    &format!("{path}.performance.{f}"),
                    v,
                    1,
                    MAX_CONCURRENCY,
                    errs,
                );
            }
        }
    }
}

/// Checks an update of `old` into `new`: the immutable fields must not change.
pub fn validate_update(old: &Value, new: &Value) -> Result<(), ValidationError> {
    let kind = new.get("kind").and_then(Value::as_str).unwrap_or("");
    let immutable: &[&str] = match kind {
        "SGShardedCluster" => &["/spec/initialData"],
        "SGShardedBackup" => &["/spec/sgShardedCluster"],
        "SGBackup" => &["/spec/sgCluster"],
        _ => &[],
    };
    let mut errs = Errors(Vec::new());
    for ptr in immutable {
        let (a, b) = (old.pointer(ptr), new.pointer(ptr));
        if a != b {
            let path = ptr.trim_start_matches('/').replace('/', ".");
            let shown = b.map_or("(removed)".to_string(), |v| v.to_string());
            errs.push(
                path,
                format!("{shown}: cannot be changed after creation; create a new object instead"),
            );
        }
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            kind: kind.to_string(),
            name: new
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            errors: errs.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(doc: &Value) -> Vec<String> {
        validate(doc)
            .err()
            .map(|e| e.errors.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn cluster_with_entry(entry: Value) -> Value {
        json!({
            "apiVersion": "stackgres.io/v1alpha1", "kind": "SGShardedCluster",
            "metadata": {"name": "c"},
            "spec": {
                "type": "ddp", "postgres": {"version": "15"},
                "coordinator": {"instances": 1},
                "shards": {"clusters": 1, "instancesPerCluster": 1},
                "configurations": {"backups": [entry]}
            }
        })
    }

    #[test]
    fn an_incremental_policy_is_checked_field_by_field() {
        let good = json!({"sgObjectStorage": "s",
            "incremental": {"fullEvery": 7, "maxChainSizePercent": 50}});
        assert_eq!(paths(&cluster_with_entry(good)), Vec::<String>::new());
        let bad = json!({"sgObjectStorage": "s",
            "incremental": {"fullEvery": 0, "maxChainSizePercent": 5000}});
        assert_eq!(
            paths(&cluster_with_entry(bad)),
            [
                "spec.configurations.backups[0].incremental.fullEvery: 0: must be at least 1",
                "spec.configurations.backups[0].incremental.maxChainSizePercent: 5000: must be between 1 and 1000",
            ]
        );
        let unknown = json!({"sgObjectStorage": "s", "incremental": {"every": 3}});
        assert_eq!(
            paths(&cluster_with_entry(unknown)),
            [
                "spec.configurations.backups[0].incremental.every: unknown field `every`, expected `fullEvery` or `maxChainSizePercent`"
            ]
        );
    }

    #[test]
    fn the_backup_type_annotation_is_full_or_incremental() {
        let backup = |value: &str| {
            json!({
                "apiVersion": "stackgres.io/v1", "kind": "SGShardedBackup",
                "metadata": {"name": "b", "annotations": {BACKUP_TYPE_ANNOTATION: value}},
                "spec": {"sgShardedCluster": "c"}
            })
        };
        assert!(paths(&backup("full")).is_empty());
        assert!(paths(&backup("incremental")).is_empty());
        assert_eq!(
            paths(&backup("delta")),
            [
                r#"metadata.annotations["shardvault.io/backup-type"]: "delta": must be full or incremental"#
            ]
        );
    }
}
