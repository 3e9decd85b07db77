//! What the CustomResourceDefinitions say about the served kinds: categories, status
//! subresource, printer columns, OpenAPI v3 schemas.

use serde_json::Value;
use shardvault_api::Kind;

/// The CRDs the server was given (as JSON documents); kinds without one get defaults.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    crds: Vec<Value>,
}

/// One printer column (`additionalPrinterColumns` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// `format`, if any.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0 in the default output, higher only with `-o wide`.
    pub priority: i64,
    /// Simple JSONPath of the value (`.status.process.status`).
    pub json_path: String,
}

impl Schemas {
    /// Schemas from CRD documents (`apiextensions.k8s.io/v1` CustomResourceDefinition).
    pub fn new(crds: Vec<Value>) -> Schemas {
        Schemas { crds }
    }

    fn crd(&self, kind: Kind) -> Option<&Value> {
        self.crds.iter().find(|c| {
            c.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind.name())
                && c.pointer("/spec/group").and_then(Value::as_str) == Some(kind.group())
        })
    }

    fn version(&self, kind: Kind) -> Option<&Value> {
        self.crd(kind)?
            .pointer("/spec/versions")?
            .as_array()?
            .iter()
            .find(|v| v["name"] == kind.version())
    }

    /// The categories of a kind (`kubectl get stackgres`).
    pub fn categories(&self, kind: Kind) -> Vec<String> {
        self.crd(kind)
            .and_then(|c| c.pointer("/spec/names/categories"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True when the kind has a `status` subresource (every custom kind without a CRD).
    pub fn has_status(&self, kind: Kind) -> bool {
        match self.version(kind) {
            Some(v) => v.pointer("/subresources/status").is_some(),
            None => !kind.group().is_empty(),
        }
    }

    /// The printer columns of a kind, without Name and Age (every kind has those).
    pub fn columns(&self, kind: Kind) -> Vec<Column> {
        let Some(cols) = self
            .version(kind)
            .and_then(|v| v.get("additionalPrinterColumns"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let text = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        cols.iter()
            .map(|c| Column {
                name: text(c, "name"),
                type_: text(c, "type"),
                format: text(c, "format"),
                description: text(c, "description"),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: text(c, "jsonPath"),
            })
            .collect()
    }

    /// The OpenAPI v3 schema of a kind's served version.
    pub fn schema(&self, kind: Kind) -> Option<&Value> {
        self.version(kind)?.pointer("/schema/openAPIV3Schema")
    }
}
