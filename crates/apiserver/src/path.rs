//! Request paths: which kind, namespace, object and subresource a resource path names.

use shardvault_api::Kind;

/// The resource a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kind served at the path.
    pub kind: Kind,
    /// The namespace (`None`: every namespace, for lists and watches).
    pub namespace: Option<String>,
    /// The object's name (`None`: the collection).
    pub name: Option<String>,
    /// True for the `status` subresource.
    pub status: bool,
}

/// Decodes the `%XX` escapes of a path segment (a name given with a `/` stays one segment).
fn decode_segment(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` resource paths; `None` for any other.
pub fn parse(path: &str) -> Option<Target> {
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(decode_segment)
        .collect::<Option<_>>()?;
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, plural, name, sub) = match rest {
        [plural] => (None, *plural, None, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    if sub.is_some_and(|s| s != "status") {
        return None;
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.plural() == plural && k.group() == group && k.version() == version)?;
    Some(Target {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        status: sub.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kind_namespace_object_and_status() {
        let t = parse("/apis/stackgres.io/v1/namespaces/ns/sgshardedbackups/b%2F1/status").unwrap();
        assert_eq!(t.kind, Kind::SGShardedBackup);
        assert_eq!(t.namespace.as_deref(), Some("ns"));
        assert_eq!(t.name.as_deref(), Some("b/1"));
        assert!(t.status);
        let all = parse("/api/v1/secrets").unwrap();
        assert_eq!(
            (all.kind, all.namespace, all.name),
            (Kind::Secret, None, None)
        );
        assert!(
            parse("/apis/stackgres.io/v1/sgshardedclusters").is_none(),
            "wrong version"
        );
        assert!(parse("/api/v1/namespaces/ns/secrets/s/scale").is_none());
    }
}
