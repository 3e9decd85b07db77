//! Finding installed PostgreSQL binaries and extensions.

use std::path::{Path, PathBuf};

use super::error::RuntimeError;

/// Where Debian installs PostgreSQL majors (`<root>/<major>/bin`).
const PG_ROOT: &str = "/usr/lib/postgresql";

/// The `bin` directory of PostgreSQL major `version` (e.g. "15"); the error lists the majors found.
pub fn find_pg_bin(version: &str) -> Result<PathBuf, RuntimeError> {
    let major = version.split('.').next().unwrap_or(version);
    let bin = Path::new(PG_ROOT).join(major).join("bin");
    if !major.is_empty() && !major.contains('/') && bin.join("postgres").is_file() {
        return Ok(bin);
    }
    Err(RuntimeError::VersionNotInstalled {
        wanted: version.to_string(),
        found: installed_versions(),
    })
}

/// PostgreSQL majors installed under /usr/lib/postgresql, sorted.
pub fn installed_versions() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/postgres").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// The major version of the binaries in `pg_bin` (its parent directory's name on Debian).
pub fn major_of(pg_bin: &Path) -> String {
    pg_bin
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The directory holding extension control files for the binaries in `pg_bin`: Debian's
/// `<prefix>/lib/postgresql/<major>/bin` has them in `<prefix>/share/postgresql/<major>/extension`.
pub fn extension_dir(pg_bin: &Path) -> PathBuf {
    let prefix = pg_bin.ancestors().nth(4).unwrap_or(Path::new("/usr"));
    prefix
        .join("share/postgresql")
        .join(major_of(pg_bin))
        .join("extension")
}

/// Ok when the citus extension is installed for the binaries in `pg_bin`.
pub fn require_citus(pg_bin: &Path) -> Result<(), RuntimeError> {
    let control = extension_dir(pg_bin).join("citus.control");
    if control.is_file() {
        Ok(())
    } else {
        Err(RuntimeError::CitusMissing {
            control,
            major: major_of(pg_bin),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_version_lists_the_installed_ones() {
        let err = find_pg_bin("9").unwrap_err().to_string();
        assert!(
            err.contains("postgres.version \"9\" is not installed"),
            "{err}"
        );
        for v in installed_versions() {
            assert!(err.contains(&v), "{err}");
        }
        assert!(find_pg_bin("../15").is_err());
    }

    #[test]
    fn extensions_live_beside_the_binaries_prefix() {
        assert_eq!(
            extension_dir(Path::new("/usr/lib/postgresql/15/bin")),
            Path::new("/usr/share/postgresql/15/extension")
        );
        assert_eq!(
            extension_dir(Path::new("/opt/pg/lib/postgresql/16/bin")),
            Path::new("/opt/pg/share/postgresql/16/extension")
        );
    }
}
