//! A prefixed view of one object storage, with whole-object get and put.

use opendal::{ErrorKind, Operator};

use crate::{StorageConfig, StorageError};

/// Objects under one prefix of one storage.
#[derive(Clone, Debug)]
pub struct Store {
    op: Operator,
    prefix: String,
    location: String,
}

impl Store {
    /// Opens the storage described by `config`, rooted at `prefix`.
    pub fn open(config: &StorageConfig, prefix: &str) -> Result<Store, StorageError> {
        let (op, location) = match config {
            StorageConfig::Filesystem { path } => {
                let root = path
                    .to_str()
                    .ok_or_else(|| StorageError::Config(format!("path {path:?} is not UTF-8")))?;
                let builder = opendal::services::Fs::default().root(root);
                let op = Operator::new(builder)
                    .map_err(|e| StorageError::Config(format!("filesystem.path {root}: {e}")))?
                    .finish();
                (op, format!("filesystem {root}"))
            }
            StorageConfig::S3 {
                bucket,
                region,
                endpoint,
                path_style,
                access_key_id,
                secret_access_key,
                storage_class,
            } => {
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .region(region.as_deref().unwrap_or("us-east-1"));
                if let Some(e) = endpoint {
                    b = b.endpoint(e);
                }
                if !path_style {
                    b = b.enable_virtual_host_style();
                }
                if let Some(k) = access_key_id {
                    b = b.access_key_id(k);
                }
                if let Some(s) = secret_access_key {
                    b = b.secret_access_key(s);
                }
                if let Some(c) = storage_class {
                    b = b.default_storage_class(c);
                }
                let op = Operator::new(b)
                    .map_err(|e| StorageError::Config(format!("s3 bucket {bucket}: {e}")))?
                    .finish();
                (op, format!("s3 bucket {bucket}"))
            }
        };
        Ok(Store {
            op,
            prefix: clean(prefix),
            location,
        })
    }

    /// A view of the sub-prefix `sub` of this store.
    pub fn child(&self, sub: &str) -> Store {
        Store {
            op: self.op.clone(),
            prefix: self.full(sub),
            location: self.location.clone(),
        }
    }

    fn full(&self, key: &str) -> String {
        let key = clean(key);
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key,
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, key),
        }
    }

    fn backend(op: &'static str, key: String) -> impl FnOnce(opendal::Error) -> StorageError {
        move |source| StorageError::Backend { op, key, source }
    }

    /// Writes `data` as object `key`, replacing any existing object.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let full = self.full(key);
        self.op
            .write(&full, data)
            .await
            .map(|_| ())
            .map_err(Self::backend("put", full))
    }

    /// Reads object `key` whole.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let full = self.full(key);
        match self.op.read(&full).await {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound {
                key: full,
                location: self.location.clone(),
            }),
            Err(e) => Err(Self::backend("get", full)(e)),
        }
    }

    /// Tells whether object `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let full = self.full(key);
        self.op.exists(&full).await.map_err(Self::backend("stat", full))
    }

    /// Lists keys under `dir` (recursively), relative to this store's prefix, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let mut full = self.full(dir);
        if !full.is_empty() {
            full.push('/');
        }
        let entries = match self.op.list_with(&full).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::backend("list", full)(e)),
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut keys: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.metadata().is_dir())
            .map(|e| e.path()[strip..].to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes object `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full(key);
        self.op.delete(&full).await.map_err(Self::backend("delete", full))
    }

    /// Deletes every object under `dir`.
    pub async fn delete_all(&self, dir: &str) -> Result<(), StorageError> {
        for key in self.list(dir).await? {
            self.delete(&key).await?;
        }
        Ok(())
    }

    /// Where this store points, for messages (never includes credentials).
    pub fn describe(&self) -> String {
        format!("{}/{}", self.location, self.prefix)
    }
}

fn clean(p: &str) -> String {
    p.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_on_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig::Filesystem {
            path: dir.path().to_path_buf(),
        };
        let store = Store::open(&cfg, "/a/b/").unwrap();
        store.put("x/1", b"one".to_vec()).await.unwrap();
        store.child("x").put("2", b"two".to_vec()).await.unwrap();
        assert_eq!(store.get("x/2").await.unwrap(), b"two");
        assert_eq!(store.list("x").await.unwrap(), vec!["x/1", "x/2"]);
        assert!(store.exists("x/1").await.unwrap());
        store.delete_all("x").await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        let err = store.get("x/1").await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    }
}
