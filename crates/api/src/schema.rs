//! Schema pieces the derive cannot infer: subtrees kept as written.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object whose fields are kept as written (`x-kubernetes-preserve-unknown-fields`).
pub fn preserved_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
