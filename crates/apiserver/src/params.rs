//! Query parameters of list, watch and write requests.

use std::collections::HashMap;
use std::time::Duration;

use shardvault_api::Kind;
use shardvault_store::Selector;

use crate::fields::FieldSelector;
use crate::status::Failure;

/// Where a list or watch starts, from `resourceVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Unset or `0`: the current state (a watch first sends every object as ADDED).
    Current,
    /// A watch from this version on (exclusive).
    After(u64),
}

/// The options of a list or watch.
#[derive(Debug, Clone)]
pub struct ReadParams {
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `watch=true`.
    pub watch: bool,
    /// `resourceVersion`.
    pub start: Start,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: a watch from the current state ends its initial ADDED
    /// events with a bookmark annotated `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    /// `timeoutSeconds`: a watch ends after this long.
    pub timeout: Option<Duration>,
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

impl ReadParams {
    /// Reads the parameters of a list or watch of `kind`.
    pub fn parse(query: &HashMap<String, String>, kind: Kind) -> Result<ReadParams, Failure> {
        let labels = Selector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| Failure::bad_request(format!("labelSelector: {e}")))?;
        let fields =
            FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), kind)
                .map_err(|e| Failure::bad_request(format!("fieldSelector: {e}")))?;
        let start = match query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => Start::Current,
            Some(v) => Start::After(v.parse().map_err(|_| {
                Failure::bad_request(format!(
                    "resourceVersion {v:?} is not a number: pass one read from a list or an object"
                ))
            })?),
        };
        let timeout = match query.get("timeoutSeconds") {
            None => None,
            Some(v) => Some(Duration::from_secs(v.parse().map_err(|_| {
                Failure::bad_request(format!("timeoutSeconds {v:?} is not a whole number"))
            })?)),
        };
        Ok(ReadParams {
            labels,
            fields,
            watch: flag(query, "watch"),
            start,
            bookmarks: flag(query, "allowWatchBookmarks"),
            initial_events_end: flag(query, "sendInitialEvents"),
            timeout,
        })
    }

    /// True when an object passes both selectors.
    pub fn selects(&self, doc: &serde_json::Value) -> bool {
        self.labels.matches(&shardvault_store::labels_of(doc)) && self.fields.matches(doc)
    }
}

/// The options of a create, update, patch or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteParams {
    /// `dryRun=All`: check and answer, store nothing.
    pub dry_run: bool,
}

impl WriteParams {
    /// Reads `dryRun` (and accepts `fieldManager`, `fieldValidation`: fields unknown to a
    /// kind are always refused with their path, as `Strict` does).
    pub fn parse(query: &HashMap<String, String>) -> Result<WriteParams, Failure> {
        let dry_run = match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(Failure::bad_request(format!(
                    "dryRun {other:?} is not supported: the only value is All"
                )));
            }
        };
        if let Some(v) = query.get("fieldValidation")
            && !["Strict", "Warn", "Ignore", ""].contains(&v.as_str())
        {
            return Err(Failure::bad_request(format!(
                "fieldValidation {v:?} is not one of Strict, Warn, Ignore"
            )));
        }
        Ok(WriteParams { dry_run })
    }
}
