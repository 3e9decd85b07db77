//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): what
//! `kubectl get` prints, with the printer columns of the kind's CRD.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use shardvault_api::Kind;

use crate::jsonpath;
use crate::schemas::{Column, Schemas};

/// Which object each row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// Its metadata, as PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// True when the client asked for a Table.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
        })
}

impl Include {
    /// Reads `includeObject`.
    pub fn parse(value: Option<&String>) -> Include {
        match value.map(String::as_str) {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Turns objects of one kind into Tables.
#[derive(Debug, Clone)]
pub struct Tables {
    columns: Vec<Column>,
    include: Include,
}

impl Tables {
    /// The table shape of `kind`: Name, then the CRD's printer columns (Age when it has none).
    pub fn new(kind: Kind, schemas: &Schemas, include: Include) -> Tables {
        let name = Column {
            name: "Name".into(),
            type_: "string".into(),
            format: "name".into(),
            description: "Name must be unique within a namespace.".into(),
            priority: 0,
            json_path: ".metadata.name".into(),
        };
        let mut columns = vec![name];
        let custom = schemas.columns(kind);
        if custom.is_empty() {
            columns.push(Column {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: "When the object was created.".into(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            });
        }
        columns.extend(custom);
        Tables { columns, include }
    }

    fn definitions(&self) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority})
            })
            .collect()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Value {
        let cells: Vec<Value> = self
            .columns
            .iter()
            .map(|c| {
                let v = jsonpath::first(obj, &c.json_path).unwrap_or(Value::Null);
                match (c.type_.as_str(), &v) {
                    ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
                        Ok(t) => json!(age(now.duration_since(t).as_secs())),
                        Err(_) => v,
                    },
                    _ => v,
                }
            })
            .collect();
        let mut row = json!({"cells": cells});
        match self.include {
            Include::None => {}
            Include::Metadata => {
                row["object"] = json!({"kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
            }
            Include::Object => row["object"] = obj.clone(),
        }
        row
    }

    /// A Table of `items` read at `version`.
    pub fn table(&self, items: &[Value], version: u64) -> Value {
        let now = jiff::Timestamp::now();
        json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": version.to_string()},
            "columnDefinitions": self.definitions(),
            "rows": items.iter().map(|o| self.row(o, now)).collect::<Vec<_>>(),
        })
    }

    /// Renders watch events as one-row Tables, column definitions on the first only.
    pub fn for_watch(self) -> crate::watch::Render {
        let first = AtomicBool::new(true);
        Arc::new(move |obj: Value| {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or_default();
            let mut t = json!({
                "kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv},
                "columnDefinitions": [],
                "rows": [self.row(&obj, jiff::Timestamp::now())],
            });
            if first.swap(false, Ordering::Relaxed) {
                t["columnDefinitions"] = json!(self.definitions());
            }
            t
        })
    }
}

/// A duration as kubectl prints ages: `45s`, `12m`, `5h3m`, `3d4h`, `400d`.
fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10800 => format!("{}m", s / 60),
        10800..172800 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h}h"),
            (h, m) if h < 8 => format!("{h}h{m}m"),
            (h, _) => format!("{h}h"),
        },
        172800..31536000 => match (s / 86400, s % 86400 / 3600) {
            (d, h) if d < 8 && h > 0 => format!("{d}d{h}h"),
            (d, _) => format!("{d}d"),
        },
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(150), "2m30s");
        assert_eq!(age(3600), "60m");
        assert_eq!(age(4 * 3600 + 60), "4h1m");
        assert_eq!(age(3 * 86400 + 7200), "3d2h");
    }

    #[test]
    fn rows_hold_name_and_age_without_columns() {
        let t = Tables::new(Kind::Secret, &Schemas::default(), Include::Metadata);
        let obj = json!({"metadata": {"name": "s1", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        let table = t.table(&[obj], 7);
        assert_eq!(table["rows"][0]["cells"][0], "s1");
        assert!(table["rows"][0]["cells"][1].as_str().unwrap().ends_with('d'));
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn table_is_asked_for_in_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(wanted(&h));
        assert!(!wanted(&HeaderMap::new()));
    }
}
