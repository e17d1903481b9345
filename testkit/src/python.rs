//! A Python interpreter with the clients the integration tests drive the proxies with.
//!
//! [`python`] returns `<shared dir>/python-venv-<hash>/bin/python3`: a virtual environment made with
//! `python3 -m venv` and `pip install -r .ci/requirements.txt` (the file is compiled in; the hash is
//! of its contents, so changing a pinned version makes a new environment). It is built once per
//! machine under an `flock` on `<shared dir>/python-venv-<hash>.lock`, which serialises the many
//! test processes nextest runs in parallel; a marker file written last says it is complete, so an
//! environment left half-built by a killed process is removed and built again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::port::shared_dir;
use crate::process::run_client;

/// The pinned Python clients (`redis`, `PyMySQL`, `mysql-connector-python`).
const REQUIREMENTS: &str = include_str!("../../.ci/requirements.txt");
/// Written into the environment after everything else succeeded.
const MARKER: &str = ".furrow-venv-complete";
/// How long another process's build may hold the lock before this one gives up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline for `python3 -m venv`.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for `pip install` (downloads on the first run, then pip's cache).
const PIP_TIMEOUT: Duration = Duration::from_secs(240);

/// The path of a Python interpreter that can import the clients of `.ci/requirements.txt`,
/// creating its virtual environment first if no process on this machine has yet.
///
/// Fails with [`Error::MissingBinary`] or [`Error::MissingPackage`] naming the apt package when
/// `python3` or its `venv` module is missing, and with [`Error::Command`] (pip's output) when the install fails.
pub fn python() -> Result<PathBuf> {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = PYTHON.get() {
        return Ok(path.clone());
    }
    let root = shared_dir();
    let key = format!("python-venv-{:016x}", fnv1a(REQUIREMENTS));
    let dir = root.join(&key);
    let interpreter = dir.join("bin").join("python3");
    if !is_complete(&dir, &interpreter) {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let lock_path = root.join(format!("{key}.lock"));
        let lock = crate::lock::build_lock(
            &lock_path,
            LOCK_TIMEOUT,
            "the Python venv build lock",
            dir.clone(),
        )?;
        if !is_complete(&dir, &interpreter) {
            build(&dir)?;
        }
        drop(lock);
    }
    Ok(PYTHON.get_or_init(|| interpreter).clone())
}

/// True when the environment's marker exists and its interpreter still resolves (a venv's
/// `bin/python3` links to the base interpreter, which an upgrade may have removed).
fn is_complete(dir: &Path, interpreter: &Path) -> bool {
    dir.join(MARKER).exists() && interpreter.metadata().is_ok_and(|m| m.is_file())
}

/// Creates the environment in `dir` (replacing whatever is there) and installs the clients.
fn build(dir: &Path) -> Result<()> {
    let python3 = find_binary("python3")?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::io(format!("removing the incomplete {}", dir.display()), e))?;
    }
    eprintln!(
        "testkit: creating the Python environment {} from .ci/requirements.txt (once per machine)",
        dir.display()
    );
    let mut venv = Command::new(&python3);
    venv.arg("-m").arg("venv").arg(dir);
    let shown = format!("{} -m venv {}", python3.display(), dir.display());
    run_client(venv, &shown, VENV_TIMEOUT).map_err(|e| match e {
        // Debian and Ubuntu ship `venv`'s `ensurepip` in a separate package.
        Error::Command { output, .. }
            if output.contains("ensurepip") || output.contains("No module named venv") =>
        {
            Error::MissingPackage {
                what: "Python's `venv` module (with `ensurepip`)".into(),
                install: "apt-get install -y python3-venv".into(),
                output: format!("`{shown}` printed:\n{output}"),
            }
        }
        other => other,
    })?;
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)
        .map_err(|e| Error::io(format!("writing {}", requirements.display()), e))?;
    let interpreter = dir.join("bin").join("python3");
    let mut pip = Command::new(&interpreter);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .arg("-r")
        .arg(&requirements);
    let shown = format!(
        "{} -m pip install -r {}",
        interpreter.display(),
        requirements.display()
    );
    run_client(pip, &shown, PIP_TIMEOUT)?;
    let marker = dir.join(MARKER);
    std::fs::write(&marker, b"ok\n")
        .map_err(|e| Error::io(format!("writing {}", marker.display()), e))
}

/// FNV-1a: stable across processes and builds (std's hasher is randomly seeded).
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_compiled_in() {
        for client in ["redis==", "PyMySQL==", "mysql-connector-python=="] {
            assert!(REQUIREMENTS.contains(client), "{client}");
        }
        assert_ne!(fnv1a(REQUIREMENTS), fnv1a(""));
    }

    #[test]
    fn interpreter_imports_the_clients() {
        let interpreter = python().unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(&interpreter)
            .args(["-c", "import redis, pymysql, mysql.connector; print('ok')"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(python().unwrap(), interpreter, "cached for the process");
    }
}
