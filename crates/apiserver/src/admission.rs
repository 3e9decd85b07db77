//! The admission hook: checks that need other objects, run before a create, update, patch
//! or apply is stored (the controllers' crate provides them; this crate does not know them).

use serde_json::Value;
use shardvault_store::{Store, StoreError};

/// Admits or refuses a document about to be written; a refusal is a [`StoreError`] (as
/// `Invalid`, with the field paths) and nothing is stored.
pub trait Admission: Send + Sync {
    /// Checks `doc` against the objects of `store`.
    fn admit(&self, store: &Store, doc: &Value) -> Result<(), StoreError>;
}

impl<F> Admission for F
where
    F: Fn(&Store, &Value) -> Result<(), StoreError> + Send + Sync,
{
    fn admit(&self, store: &Store, doc: &Value) -> Result<(), StoreError> {
        self(store, doc)
    }
}
