//! Storage paths given in manifests (`path`, `paths[]`, `filesystem.path`, a bucket's path):
//! key prefixes and directories that can never climb out of their root.

/// Longest storage path accepted.
const MAX_LEN: usize = 1024;

/// Checks a key prefix such as `backups/prod` (a leading or trailing `/` is allowed): every
/// segment is a plain name, never `.`, `..` or empty.
pub fn check_key_prefix(path: &str) -> Result<(), String> {
    check_segments(path, path.trim_matches('/'))
}

/// Checks a filesystem storage directory: absolute, and no segment is `.`, `..` or empty.
pub fn check_directory(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?}: must be an absolute path"));
    }
    check_segments(path, path.trim_matches('/'))
}

fn check_segments(shown: &str, inner: &str) -> Result<(), String> {
    if shown.len() > MAX_LEN {
        return Err(format!(
            "{}...: longer than {MAX_LEN} characters",
            &shown[..shown.floor_char_boundary(40)]
        ));
    }
    if let Some(c) = shown.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!(
            "{shown:?}: contains {c:?}; use letters, digits and '/-_.' only"
        ));
    }
    if inner.is_empty() {
        return Ok(());
    }
    for segment in inner.split('/') {
        match segment {
            "" => return Err(format!("{shown:?}: has an empty segment ('//')")),
            "." | ".." => {
                return Err(format!(
                    "{shown:?}: a segment is {segment:?}; a storage path never leaves its root, name it without '.' or '..'"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_climb_out_are_refused() {
        for bad in [
            "../../../../tmp/x",
            "a/../b",
            "./a",
            "a//b",
            "a/..",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_key_prefix(bad).is_err(), "{bad}");
        }
        assert!(check_key_prefix(&"a/".repeat(600)).is_err());
        for good in ["backups", "/backups/prod/", "sgbackups.stackgres.io/ns/c/15", "a..b"] {
            assert_eq!(check_key_prefix(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn directories_are_absolute_and_plain() {
        assert!(check_directory("relative/dir").is_err());
        assert!(check_directory("/var/backups/../../etc").is_err());
        assert_eq!(check_directory("/var/backups/shardvault"), Ok(()));
        assert_eq!(check_directory("/"), Ok(()));
    }
}
