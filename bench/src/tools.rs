//! The external tools the loads and peers need, installed with apt-get when missing.

use std::path::PathBuf;
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
    fn finds_sh_and_not_nonsense() {
        assert!(super::find("sh").is_some());
        assert!(super::find("no-such-binary-furrow-bench").is_none());
    }
}
