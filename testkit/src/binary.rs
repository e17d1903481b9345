//! Locating the server and client executables, with install hints when they are missing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Extra directories searched after PATH (`mariadbd` lives in /usr/sbin, often not in a user's PATH).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

/// The apt command that installs `binary` on Debian/Ubuntu.
fn install_hint(binary: &str) -> &'static str {
    match binary {
        "redis-server" => "apt-get install -y redis-server",
        "redis-cli" => "apt-get install -y redis-tools",
        "mariadbd" | "mariadb-install-db" => "apt-get install -y mariadb-server mariadb-client",
        "mariadb" => "apt-get install -y mariadb-client",
        "python3" => "apt-get install -y python3 python3-venv",
        _ => "apt-get install -y <package providing it>",
    }
}

/// Finds `binary` in PATH or the sbin directories, or says how to install it.
pub fn find_binary(binary: &str) -> Result<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var).chain(EXTRA_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(binary);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::MissingBinary {
        binary: binary.to_string(),
        install: install_hint(binary).to_string(),
    })
}

/// True when `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_install_command() {
        let err = find_binary("definitely-not-a-furrow-binary").unwrap_err();
        assert!(err.to_string().contains("apt-get install -y"), "{err}");
        let hint = install_hint("redis-server");
        assert_eq!(hint, "apt-get install -y redis-server");
    }

    #[test]
    fn finds_sh() {
        assert!(find_binary("sh").unwrap().ends_with("sh"));
    }
}
