//! Field selectors (`fieldSelector=metadata.name=x,involvedObject.uid!=y`).

use serde_json::Value;
use shardvault_api::Kind;

/// One `field=value` or `field!=value` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    /// JSON pointer of the field (`/metadata/name`).
    pointer: String,
    value: String,
    equal: bool,
}

/// A parsed field selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<Requirement>,
}

/// The fields Kubernetes lets every kind select on.
const COMMON_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

/// The fields Kubernetes lets Events select on, beyond the common ones.
const EVENT_FIELDS: [&str; 11] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

impl FieldSelector {
    /// Parses a selector for `kind`; names the field that cannot be selected on.
    pub fn parse(text: &str, kind: Kind) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid field selector {term:?}: write field=value or field!=value"
                ));
            };
            let field = field.trim();
            let allowed = COMMON_FIELDS.contains(&field)
                || (kind == Kind::Event && EVENT_FIELDS.contains(&field));
            if !allowed {
                return Err(format!(
                    "field label not supported: {field} (select on {})",
                    COMMON_FIELDS.join(", ")
                ));
            }
            requirements.push(Requirement {
                pointer: format!("/{}", field.replace('.', "/")),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// True when `doc` meets every requirement (a missing field reads as empty).
    pub fn matches(&self, doc: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match doc.pointer(&r.pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == r.value) == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_and_involved_object_select() {
        let ev = json!({"metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"kind": "SGShardedBackup", "name": "b"}});
        let s = FieldSelector::parse("involvedObject.name=b,metadata.namespace==ns", Kind::Event)
            .unwrap();
        assert!(s.matches(&ev));
        let s = FieldSelector::parse("involvedObject.kind!=SGShardedBackup", Kind::Event).unwrap();
        assert!(!s.matches(&ev));
        assert!(FieldSelector::parse("", Kind::Secret).unwrap().matches(&ev));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = FieldSelector::parse("spec.type=citus", Kind::SGShardedCluster).unwrap_err();
        assert!(e.contains("spec.type"), "{e}");
        assert!(FieldSelector::parse("involvedObject.name=x", Kind::Secret).is_err());
        assert!(FieldSelector::parse("metadata.name", Kind::Secret).is_err());
    }
}
