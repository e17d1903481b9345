//! The external tools the loads and peers need, installed with apt-get when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (binary, Debian package) for every external tool.
pub const TOOLS: &[(&str, &str)] = &[
    ("redis-benchmark", "redis-tools"),
    ("nutcracker", "nutcracker"),
    ("haproxy", "haproxy"),
    ("sysbench", "sysbench"),
];

/// Finds a binary in `$PATH` or the sbin directories (where nutcracker and haproxy live).
pub fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// The folder `bench/peers/build.sh` builds peer proxies into: `$FURROW_PEERS_DIR`, else
/// `$XDG_CACHE_HOME/furrow-bench/peers`, else `~/.cache/furrow-bench/peers`.
pub fn peers_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("FURROW_PEERS_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("furrow-bench/peers")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/furrow-bench/peers")))
}

/// A peer proxy built from source (`bench/peers/build.sh PEER`, not a package): `explicit` when
/// given (it must exist), else `<peers_dir>/bin/PEER`, else `PEER` in `$PATH`. The error says
/// where it looked and how to build it.
pub fn find_peer(peer: &str, explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let cached = peers_dir().map(|d| d.join("bin").join(peer));
    if let Some(p) = cached.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    find(peer).ok_or_else(|| {
        format!(
            "{peer} is not built (looked in {} and $PATH); build it with `bench/peers/build.sh {peer}`",
            cached.map_or("no cache folder".into(), |p| p.display().to_string())
        )
    })
}

/// Makes sure `binaries` exist, installing their packages with apt-get when they do not.
/// Prints what it does; returns the binaries still missing afterwards.
pub fn ensure(binaries: &[&str]) -> Vec<String> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(b, _)| binaries.contains(b) && find(b).is_none())
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let pkgs: Vec<&str> = missing.iter().map(|m| m.1).collect();
    eprintln!(
        "bench: missing {:?}; installing: apt-get install -y {}",
        missing.iter().map(|m| m.0).collect::<Vec<_>>(),
        pkgs.join(" ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("bench: apt-get update");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        if !install() {
            eprintln!("bench: apt-get install failed");
        }
    }
    missing
        .iter()
        .filter(|(b, _)| find(b).is_none())
        .map(|(b, _)| b.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_peer_says_how_to_build_it() {
        let e = super::find_peer("no-such-peer-furrow-bench", None).unwrap_err();
        assert!(
            e.contains("bench/peers/build.sh no-such-peer-furrow-bench"),
            "{e}"
        );
        let e = super::find_peer(
            "predixy",
            Some(std::path::Path::new("/nonexistent/predixy")),
        )
        .unwrap_err();
        assert_eq!(e, "/nonexistent/predixy does not exist");
        assert_eq!(
            super::find_peer("sh", Some(std::path::Path::new("/bin/sh"))).unwrap(),
            std::path::PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(super::find("sh").is_some());
        assert!(super::find("no-such-binary-furrow-bench").is_none());
    }
}
