//! Embedded crash-safe resource store for shardvault.
//!
//! Objects are Kubernetes-shaped JSON documents, validated by `shardvault_api::validate`,
//! kept in one SQLite database (`store.db`) with a change log for watches.
//!
//! Why SQLite, in WAL mode with `synchronous=FULL`: every write is one transaction, so a
//! cascade (an owner and everything it owns, a finalizer removal that deletes, an object and
//! its change-log entry) is all or nothing; a committed transaction is on disk before the
//! call returns, and a `kill -9` at any moment leaves exactly a prefix of the commits. The
//! JSON functions of SQLite find dependents by owner uid without a second index to keep in
//! step.

pub mod merge;
pub mod selector;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};
use shardvault_api::{Kind, ValidationError, validate, validate_update};

pub use selector::{Requirement, Selector, SelectorError};

/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Annotation holding the configuration last given to `apply`.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How many change-log entries are kept for watchers.
const CHANGE_LOG_KEEP: u64 = 100_000;

/// Everything that can go wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object failed validation; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No such object.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// Create of an object that exists.
    #[error("{kind} {namespace}/{name} already exists: use apply to change it, or delete it first")]
    AlreadyExists {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// A write carried a resourceVersion that is no longer current.
    #[error(
        "{kind} {namespace}/{name} was changed by someone else (resourceVersion {given} given, {current} current): read it again and retry"
    )]
    Conflict {
        kind: Kind,
        namespace: String,
        name: String,
        given: String,
        current: String,
    },
    /// A malformed label selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A watch from a version older than the change log keeps.
    #[error(
        "resourceVersion {from} is too old (changes up to {compacted} were compacted): list again and watch from the list's resourceVersion"
    )]
    Gone { from: u64, compacted: u64 },
    /// A request that cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// The database could not be opened.
    #[error(
        "cannot open the store {path}: {cause}; check the state directory's permissions and free space"
    )]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    /// The database failed.
    #[error("store database error: {0}")]
    Db(#[from] rusqlite::Error),
}

impl StoreError {
    /// The HTTP status code Kubernetes uses for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            StoreError::Invalid(_) => 422,
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Selector(_) | StoreError::BadRequest(_) => 400,
            StoreError::Gone { .. } => 410,
            StoreError::Open { .. } | StoreError::Db(_) => 500,
        }
    }

    /// The Kubernetes `Status.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Invalid(_) => "Invalid",
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Selector(_) | StoreError::BadRequest(_) => "BadRequest",
            StoreError::Gone { .. } => "Expired",
            StoreError::Open { .. } | StoreError::Db(_) => "InternalError",
        }
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyOutcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and was changed.
    Configured,
    /// The object already matched.
    Unchanged,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// The object (and what it owned) is gone; this was its last state.
    Deleted(Value),
    /// Finalizers remain: the object is marked with `deletionTimestamp` and waits for them.
    Pending(Value),
}

/// Kind of change in the change log, as in a Kubernetes watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl ChangeType {
    fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }

    fn parse(s: &str) -> ChangeType {
        match s {
            "ADDED" => ChangeType::Added,
            "DELETED" => ChangeType::Deleted,
            _ => ChangeType::Modified,
        }
    }
}

/// One entry of the change log, shaped as a Kubernetes watch event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The store version this change created.
    #[serde(skip)]
    pub version: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub change_type: ChangeType,
    /// The object after the change (its last state for deletions).
    pub object: Value,
}

/// `Normal` or `Warning`, as Kubernetes Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The name written in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Identifies one object: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Reads the reference of an object document (namespace `default` when unset).
    pub fn of(doc: &Value) -> Result<ObjectRef> {
        let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind_name = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = Kind::from_manifest(api, kind_name).map_err(StoreError::BadRequest)?;
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                StoreError::BadRequest(format!(
                    "{kind} without metadata.name: give the object a name"
                ))
            })?;
        Ok(ObjectRef::new(kind, namespace_of(doc), name))
    }

    fn not_found(&self) -> StoreError {
        StoreError::NotFound {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// `metadata.namespace` of a document, `default` when unset.
pub fn namespace_of(doc: &Value) -> &str {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// `metadata.labels` of a document.
pub fn labels_of(doc: &Value) -> BTreeMap<String, String> {
    doc.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.resourceVersion` of a document as a number.
pub fn resource_version_of(doc: &Value) -> Option<u64> {
    doc.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// The embedded resource store. Cheap to share behind an `Arc`; calls are synchronous
/// (wrap them in `spawn_blocking` from async code that must not block).
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    version: Arc<tokio::sync::watch::Sender<u64>>,
    /// Writes are checked in full, then rolled back (see [`Store::dry_run`]).
    dry_run: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store database at `path`, readable by its owner only.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            cause: source,
        };
        create_private(path);
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                uid TEXT NOT NULL, rv INTEGER NOT NULL, doc TEXT NOT NULL,
                PRIMARY KEY (kind, namespace, name));
             CREATE TABLE IF NOT EXISTS changes (
                rv INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT NULL,
                name TEXT NOT NULL, type TEXT NOT NULL, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('version', 0), ('compacted', 0), ('schema', 1);",
        )
        .map_err(open_err)?;
        restrict_permissions(path);
        let version: u64 = conn
            .query_row("SELECT value FROM meta WHERE key='version'", [], |r| {
                r.get(0)
            })
            .map_err(open_err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            version: Arc::new(tokio::sync::watch::channel(version).0),
            dry_run: false,
        })
    }

    /// A view of the same store whose writes run every check (validation, conflicts,
    /// cascades) and answer as they would, then roll back: Kubernetes's `dryRun=All`.
    pub fn dry_run(&self) -> Store {
        Store {
            conn: self.conn.clone(),
            path: self.path.clone(),
            version: self.version.clone(),
            dry_run: true,
        }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest resourceVersion of the whole store.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver that changes whenever the store version moves on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn write<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: u64 = tx.query_row("SELECT value FROM meta WHERE key='version'", [], |r| {
            r.get(0)
        })?;
        let mut t = Tx {
            tx,
            version,
            start: version,
        };
        let out = f(&mut t)?;
        let (tx, version, start) = (t.tx, t.version, t.start);
        if self.dry_run {
            tx.rollback()?;
            return Ok(out);
        }
        if version != start {
            tx.execute(
                "UPDATE meta SET value=?1 WHERE key='version'",
                params![version],
            )?;
            if version > CHANGE_LOG_KEEP && version / 1000 != start / 1000 {
                let cut = version - CHANGE_LOG_KEEP;
                tx.execute("DELETE FROM changes WHERE rv <= ?1", params![cut])?;
                tx.execute(
                    "UPDATE meta SET value=?1 WHERE key='compacted'",
                    params![cut],
                )?;
            }
        }
        tx.commit()?;
        if version != start {
            self.version.send_replace(version);
        }
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// Creates an object; refuses one that exists. `status` from the caller is ignored.
    pub fn create(&self, doc: &Value) -> Result<Value> {
        let kind = validate(doc)?;
        let obj = normalize(doc, kind);
        let r = ObjectRef::of(&obj)?;
        self.write(|t| {
            if t.load(&r)?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: r.kind,
                    namespace: r.namespace,
                    name: r.name,
                });
            }
            t.insert(obj)
        })
    }

    /// `kubectl apply`: creates the object, or three-way merges the manifest into it against
    /// the last applied configuration. A manifest that is not a complete object by itself
    /// (such as one that sets only `spec.configurations.backups`) is merged as a patch that
    /// adds and changes fields and removes none.
    pub fn apply(&self, doc: &Value) -> Result<(Value, ApplyOutcome)> {
        let r = ObjectRef::of(doc)?;
        let complete = validate(doc);
        let mut applied = normalize(doc, r.kind);
        if let Some(a) = applied
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
            if a.is_empty() {
                applied["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("annotations"));
            }
        }
        self.write(|t| {
            let Some(live) = t.load(&r)? else {
                complete?;
                let mut obj = applied.clone();
                set_last_applied(&mut obj, &applied);
                return Ok((t.insert(obj)?, ApplyOutcome::Created));
            };
            let last: Option<Value> = live
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(LAST_APPLIED))
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok());
            check_version(&r, doc, &live)?;
            let (mut merged, record) = if complete.is_ok() {
                (
                    merge::three_way(&live, last.as_ref(), &applied),
                    applied.clone(),
                )
            } else {
                let record = merge::merge_patch(last.as_ref().unwrap_or(&json!({})), &applied);
                (merge::merge_patch(&live, &applied), record)
            };
            set_last_applied(&mut merged, &record);
            validate(&merged)?;
            match t.update_from(&live, merged)? {
                Some(obj) => Ok((obj, ApplyOutcome::Configured)),
                None => Ok((live, ApplyOutcome::Unchanged)),
            }
        })
    }

    /// Reads one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value> {
        let r = ObjectRef::new(kind, namespace, name);
        self.read(|c| load(c, &r)?.ok_or_else(|| r.not_found()))
    }

    /// Lists objects of a kind in one namespace (or all when `None`) matching the selector,
    /// with the store version they were read at.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<(Vec<Value>, u64)> {
        self.read(|c| {
            let version: u64 = c.query_row("SELECT value FROM meta WHERE key='version'", [], |r| r.get(0))?;
            let mut stmt = c.prepare(
                "SELECT doc FROM objects WHERE kind=?1 AND (?2 IS NULL OR namespace=?2) ORDER BY namespace, name",
            )?;
            let rows = stmt.query_map(params![kind.name(), namespace], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                let doc = parse_doc(&row?)?;
                if selector.matches(&labels_of(&doc)) {
                    out.push(doc);
                }
            }
            Ok((out, version))
        })
    }

    /// Replaces an object's spec and metadata (status is kept as stored). A stale
    /// `metadata.resourceVersion` is a conflict; removing the last finalizer of an object
    /// being deleted deletes it.
    pub fn update(&self, doc: &Value) -> Result<Value> {
        let kind = validate(doc)?;
        let obj = normalize(doc, kind);
        let r = ObjectRef::of(&obj)?;
        self.write(|t| {
            let live = t.load(&r)?.ok_or_else(|| r.not_found())?;
            check_version(&r, &obj, &live)?;
            Ok(t.update_from(&live, obj)?.unwrap_or(live))
        })
    }

    /// Replaces an object's `status` (everything else is kept as stored). A stale
    /// `metadata.resourceVersion` is a conflict.
    pub fn update_status(&self, doc: &Value) -> Result<Value> {
        let r = ObjectRef::of(doc)?;
        self.write(|t| {
            let mut live = t.load(&r)?.ok_or_else(|| r.not_found())?;
            check_version(&r, doc, &live)?;
            let before = live.clone();
            match doc.get("status") {
                Some(s) => live["status"] = s.clone(),
                None => {
                    live.as_object_mut().map(|m| m.remove("status"));
                }
            }
            if live == before {
                return Ok(live);
            }
            t.put(live, ChangeType::Modified)
        })
    }

    /// Deletes an object and, in the same transaction, everything it owns (recursively).
    /// Objects with finalizers are only marked (`deletionTimestamp`) until they are removed.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Deletion> {
        let r = ObjectRef::new(kind, namespace, name);
        self.write(|t| {
            let live = t.load(&r)?.ok_or_else(|| r.not_found())?;
            t.delete_object(live)
        })
    }

    /// Deletes an object like [`Store::delete`], but first frees what it owns: their
    /// `ownerReferences` to it are removed, so they stay (`propagationPolicy: Orphan`).
    pub fn delete_orphaning(&self, kind: Kind, namespace: &str, name: &str) -> Result<Deletion> {
        let r = ObjectRef::new(kind, namespace, name);
        self.write(|t| {
            let live = t.load(&r)?.ok_or_else(|| r.not_found())?;
            let uid = live["metadata"]["uid"].as_str().unwrap_or("").to_string();
            for mut dep in t.owned_by(&r.namespace, &uid)? {
                if let Some(refs) = dep
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|o| o["uid"] != uid.as_str());
                }
                t.put(dep, ChangeType::Modified)?;
            }
            t.delete_object(live)
        })
    }

    /// Records an Event about `involved`; a repeat of the same type, reason and message
    /// increments `count` of the existing Event.
    pub fn add_event(
        &self,
        involved: &Value,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Value> {
        let r = ObjectRef::of(involved)?;
        let uid = involved
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let involved_object = json!({
            "apiVersion": r.kind.api_version(),
            "kind": r.kind.name(),
            "name": r.name,
            "namespace": r.namespace,
            "uid": uid,
        });
        self.write(|t| {
            let existing = t.events_of(&r.namespace, &uid)?.into_iter().find(|e| {
                e["type"] == event_type.as_str() && e["reason"] == reason && e["message"] == message
            });
            let now = now();
            if let Some(mut e) = existing {
                e["count"] = json!(e["count"].as_u64().unwrap_or(1) + 1);
                e["lastTimestamp"] = json!(now);
                return t.put(e, ChangeType::Modified);
            }
            let base: String = r.name.chars().take(45).collect();
            let name = format!("{}-{:x}", base.trim_end_matches('-'), t.version + 1);
            let event = json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": r.namespace},
                "involvedObject": involved_object,
                "type": event_type.as_str(),
                "reason": reason,
                "message": message,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
            });
            validate(&event)?;
            t.insert(event)
        })
    }

    /// The Events about an object, oldest first.
    pub fn events_for(&self, involved: &Value) -> Result<Vec<Value>> {
        let ns = namespace_of(involved).to_string();
        let uid = involved
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.read(|c| events_of(c, &ns, uid))
    }

    /// Changes after `from` (exclusive), oldest first, optionally only of one kind and
    /// namespace. An error when `from` is older than the kept change log.
    pub fn changes_since(
        &self,
        from: u64,
        kind: Option<Kind>,
        namespace: Option<&str>,
    ) -> Result<Vec<Change>> {
        self.read(|c| {
            let compacted: u64 =
                c.query_row("SELECT value FROM meta WHERE key='compacted'", [], |r| {
                    r.get(0)
                })?;
            if from < compacted {
                return Err(StoreError::Gone { from, compacted });
            }
            let mut stmt = c.prepare(
                "SELECT rv, type, doc FROM changes WHERE rv > ?1 AND (?2 IS NULL OR kind=?2)
                 AND (?3 IS NULL OR namespace=?3) ORDER BY rv",
            )?;
            let rows = stmt.query_map(params![from, kind.map(Kind::name), namespace], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (version, ty, doc) = row?;
                out.push(Change {
                    version,
                    change_type: ChangeType::parse(&ty),
                    object: parse_doc(&doc)?,
                });
            }
            Ok(out)
        })
    }
}

/// Creates the database file readable by its owner only, so that SQLite gives its `-wal`
/// and `-shm` files the same mode (the store holds Secrets).
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // An existing file is left as is here; failures surface when SQLite opens it.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Owner only, also for stores made before the mode was set at creation.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

fn parse_doc(text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::BadRequest(format!("stored document is not JSON: {e}")))
}

fn load(c: &Connection, r: &ObjectRef) -> Result<Option<Value>> {
    c.query_row(
        "SELECT doc FROM objects WHERE kind=?1 AND namespace=?2 AND name=?3",
        params![r.kind.name(), r.namespace, r.name],
        |row| row.get::<_, String>(0),
    )
    .optional()?
    .map(|s| parse_doc(&s))
    .transpose()
}

fn events_of(c: &Connection, namespace: &str, uid: &str) -> Result<Vec<Value>> {
    let mut stmt = c.prepare(
        "SELECT doc FROM objects WHERE kind='Event' AND namespace=?1
         AND json_extract(doc, '$.involvedObject.uid') = ?2 ORDER BY rv",
    )?;
    let rows = stmt.query_map(params![namespace, uid], |r| r.get::<_, String>(0))?;
    rows.map(|r| parse_doc(&r?)).collect()
}

fn check_version(r: &ObjectRef, doc: &Value, live: &Value) -> Result<()> {
    let given = doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    let current = live
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    match given {
        Some(g) if !g.is_empty() && g != current => Err(StoreError::Conflict {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            given: g.to_string(),
            current: current.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Puts a user's document in stored form: namespace filled in, Secret `stringData` folded
/// into base64 `data`, server-owned fields (status, uid, timestamps, generation) dropped.
/// `resourceVersion` is kept for the conflict check.
fn normalize(doc: &Value, kind: Kind) -> Value {
    let mut obj = doc.clone();
    let Some(m) = obj.as_object_mut() else {
        return obj;
    };
    m.remove("status");
    if kind == Kind::Secret
        && let Some(Value::Object(sd)) = m.remove("stringData")
    {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in sd {
                let plain = v.as_str().unwrap_or_default();
                data.insert(
                    k,
                    json!(shardvault_api::secret::base64_encode(plain.as_bytes())),
                );
            }
        }
    }
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            meta.remove(f);
        }
        meta.entry("namespace")
            .or_insert_with(|| json!(DEFAULT_NAMESPACE));
    }
    obj
}

fn set_last_applied(obj: &mut Value, applied: &Value) {
    let mut record = applied.clone();
    if let Some(meta) = record.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let text = serde_json::to_string(&record).unwrap_or_default();
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][LAST_APPLIED] = json!(text);
}

/// Everything but metadata and status: a change here bumps `generation`.
fn desired_state(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    d
}

struct Tx<'c> {
    tx: Transaction<'c>,
    version: u64,
    start: u64,
}

impl Tx<'_> {
    fn load(&self, r: &ObjectRef) -> Result<Option<Value>> {
        load(&self.tx, r)
    }

    fn events_of(&self, namespace: &str, uid: &str) -> Result<Vec<Value>> {
        events_of(&self.tx, namespace, uid)
    }

    /// Stores a new object with fresh uid, timestamps and generation 1.
    fn insert(&mut self, mut obj: Value) -> Result<Value> {
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(now());
        obj["metadata"]["generation"] = json!(1);
        self.put(obj, ChangeType::Added)
    }

    /// Writes `obj` with the next resourceVersion and logs the change.
    fn put(&mut self, mut obj: Value, change: ChangeType) -> Result<Value> {
        self.version += 1;
        obj["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let r = ObjectRef::of(&obj)?;
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let text = obj.to_string();
        self.tx.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, uid, rv, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.kind.name(), r.namespace, r.name, uid, self.version, text],
        )?;
        self.log(&r, change, &text)?;
        Ok(obj)
    }

    fn log(&self, r: &ObjectRef, change: ChangeType, text: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO changes (rv, kind, namespace, name, type, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.version, r.kind.name(), r.namespace, r.name, change.as_str(), text],
        )?;
        Ok(())
    }

    /// Turns `live` into `obj` (server-owned fields and status from `live`); `None` when
    /// nothing changes.
    fn update_from(&mut self, live: &Value, mut obj: Value) -> Result<Option<Value>> {
        validate_update(live, &obj)?;
        let meta = &live["metadata"];
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "resourceVersion",
        ] {
            match meta.get(f) {
                Some(v) => obj["metadata"][f] = v.clone(),
                None => {
                    obj["metadata"].as_object_mut().map(|m| m.remove(f));
                }
            }
        }
        if let Some(s) = live.get("status") {
            obj["status"] = s.clone();
        }
        let generation = meta["generation"].as_i64().unwrap_or(1);
        let bump = i64::from(desired_state(live) != desired_state(&obj));
        obj["metadata"]["generation"] = json!(generation + bump);
        if obj == *live {
            return Ok(None);
        }
        let finalizers_done = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if meta.get("deletionTimestamp").is_some() && finalizers_done {
            self.remove(obj.clone())?;
            return Ok(Some(obj));
        }
        self.put(obj, ChangeType::Modified).map(Some)
    }

    fn delete_object(&mut self, mut live: Value) -> Result<Deletion> {
        let has_finalizers = live
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            self.remove(live.clone())?;
            return Ok(Deletion::Deleted(live));
        }
        if live.pointer("/metadata/deletionTimestamp").is_none() {
            live["metadata"]["deletionTimestamp"] = json!(now());
            live = self.put(live, ChangeType::Modified)?;
        }
        Ok(Deletion::Pending(live))
    }

    /// Removes an object, its Events, and (recursively) the objects it owns.
    fn remove(&mut self, obj: Value) -> Result<()> {
        let r = ObjectRef::of(&obj)?;
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        self.tx.execute(
            "DELETE FROM objects WHERE kind=?1 AND namespace=?2 AND name=?3",
            params![r.kind.name(), r.namespace, r.name],
        )?;
        self.version += 1;
        self.log(&r, ChangeType::Deleted, &obj.to_string())?;
        if uid.is_empty() || r.kind == Kind::Event {
            return Ok(());
        }
        for dep in self.events_of(&r.namespace, &uid)? {
            self.delete_object(dep)?;
        }
        for dep in self.owned_by(&r.namespace, &uid)? {
            self.delete_object(dep)?;
        }
        Ok(())
    }

    /// The objects of `namespace` with an ownerReference to `uid` (Events excepted).
    fn owned_by(&self, namespace: &str, uid: &str) -> Result<Vec<Value>> {
        let mut stmt = self.tx.prepare(
            "SELECT doc FROM objects WHERE namespace=?1 AND kind != 'Event' AND EXISTS (
               SELECT 1 FROM json_each(doc, '$.metadata.ownerReferences') o
               WHERE json_extract(o.value, '$.uid') = ?2)",
        )?;
        let rows = stmt.query_map(params![namespace, uid], |row| row.get::<_, String>(0))?;
        rows.map(|r| parse_doc(&r?)).collect()
    }
}
