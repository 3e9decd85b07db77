//! The JSONPath subset printer columns use: `.a.b`, `.a[0].b`, `.a[*].b`, and filters
//! `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.field=="value")]`
    Filter(Vec<String>, String),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = f.split_once("==")?;
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                let fields = field.trim().split('.').map(str::to_string).collect();
                steps.push(Step::Filter(fields, value.to_string()));
            } else {
                steps.push(Step::Index(inner.trim().parse().ok()?));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(steps)
}

fn walk<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    match step {
        Step::Field(f) => {
            if let Some(next) = v.get(f) {
                walk(next, rest, out);
            }
        }
        Step::Index(i) => {
            if let Some(next) = v.get(*i) {
                walk(next, rest, out);
            }
        }
        Step::All => {
            for next in v.as_array().into_iter().flatten() {
                walk(next, rest, out);
            }
        }
        Step::Filter(fields, value) => {
            for next in v.as_array().into_iter().flatten() {
                let mut probe = next;
                let found = fields.iter().all(|f| match probe.get(f) {
                    Some(p) => {
                        probe = p;
                        true
                    }
                    None => false,
                });
                let text = match probe {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if found && text == *value {
                    walk(next, rest, out);
                }
            }
        }
    }
}

/// The first value `path` selects in `v`; `None` when nothing matches or the path is not
/// one this subset reads.
pub fn first(v: &Value, path: &str) -> Option<Value> {
    let steps = parse(path)?;
    let mut out = Vec::new();
    walk(v, &steps, &mut out);
    out.first().map(|v| (*v).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_indexes_and_filters() {
        let v = json!({"status": {"process": {"status": "Completed"},
            "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}],
            "sgBackups": ["b0", "b1"]}});
        assert_eq!(first(&v, ".status.process.status"), Some(json!("Completed")));
        assert_eq!(first(&v, ".status.sgBackups[1]"), Some(json!("b1")));
        assert_eq!(
            first(&v, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(first(&v, ".status.nothing"), None);
    }
}
