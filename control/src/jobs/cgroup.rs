//! Resource limits of shell items: a cgroup v2 per item (`memory.max`, `cpu.max`) when the worker is given a
//! delegated cgroup v2 directory it can use, else the address-space rlimit (`RLIMIT_AS`) — and a message
//! saying which, and why, when the worker starts.
//!
//! Why a directory given by the operator rather than the worker's own cgroup: cgroup v2 lets a cgroup hand
//! controllers to its children only while it has no processes of its own ("no internal processes"), so
//! the worker cannot put items under the cgroup it runs in. The usual setup is systemd's `Delegate=yes`
//! (or a container runtime's delegation) giving the worker a subtree: `--cgroup
//! /sys/fs/cgroup/furrow-items` with the worker itself elsewhere.
//!
//! Each item gets `DIR/item-N` (N unique per worker process); the child moves itself there between fork and
//! exec by writing `0` to the already opened `cgroup.procs` (one `write(2)`, async-signal-safe). When the
//! item ends, everything left in its cgroup is killed (`cgroup.kill`, else each pid) and the directory is
//! removed. A memory-limit kill is read from `memory.events` (`oom_kill`) and named in the result.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The magic number of a cgroup v2 file system (`statfs`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The `cpu.max` period, µs.
const CPU_PERIOD_US: u64 = 100_000;

/// How the worker limits shell items.
#[derive(Debug)]
pub enum Limiter {
    /// A cgroup v2 per item under this delegated directory.
    Cgroup(CgroupRoot),
    /// `RLIMIT_AS` only; why cgroups are not used.
    Rlimit(String),
}

impl Limiter {
    /// Probes `dir` (the worker's `--cgroup`); without one, or when it cannot be used, rlimits with the
    /// reason.
    pub fn new(dir: Option<&Path>) -> Limiter {
        match dir {
            None => Limiter::Rlimit(
                "no --cgroup directory given (a delegated cgroup v2 directory with the memory and cpu \
                 controllers)"
                    .into(),
            ),
            Some(d) => match CgroupRoot::probe(d) {
                Ok(root) => Limiter::Cgroup(root),
                Err(why) => Limiter::Rlimit(why),
            },
        }
    }

    /// One line for the worker's start-up message.
    pub fn describe(&self) -> String {
        match self {
            Limiter::Cgroup(r) => format!(
                "shell items run under cgroup v2 limits (memory.max, cpu.max) in {}",
                r.dir.display()
            ),
            Limiter::Rlimit(why) => format!(
                "shell items are limited by RLIMIT_AS only (memory; no CPU limit): cgroup v2 not used: {why}"
            ),
        }
    }
}

/// A delegated cgroup v2 directory with the memory and cpu controllers enabled for its children.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    next: AtomicU64,
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(v.as_bytes()))
        .map_err(|e| format!("writing {v:?} to {}: {e}", p.display()))
}

/// The `memory.max` and `cpu.max` values for an item's resources (0 = not limited: `max`).
pub fn limit_values(mem_mb: u64, cpu_milli: u64) -> (String, String) {
    let mem = if mem_mb == 0 {
        "max".to_string()
    } else {
        mem_mb.saturating_mul(1024 * 1024).to_string()
    };
    let cpu = if cpu_milli == 0 {
        format!("max {CPU_PERIOD_US}")
    } else {
        // quota = share of one period per core; at least 1 ms (the kernel's minimum).
        let quota = (cpu_milli.saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
        format!("{quota} {CPU_PERIOD_US}")
    };
    (mem, cpu)
}

impl CgroupRoot {
    /// Checks that `dir` is a cgroup v2 directory this process can create children in, with the memory
    /// and cpu controllers available, and enables them for its children.
    pub fn probe(dir: &Path) -> Result<CgroupRoot, String> {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
        // SAFETY: statfs(2) fills the zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return Err(format!(
                "{}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
            return Err(format!(
                "{} is not on a cgroup v2 file system (this machine may use cgroup v1)",
                dir.display()
            ));
        }
        let available = read(&dir.join("cgroup.controllers"))?;
        let have: Vec<&str> = available.split_whitespace().collect();
        let missing: Vec<&str> = ["memory", "cpu"]
            .into_iter()
            .filter(|c| !have.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: controller(s) {} not available to it (cgroup.controllers: {:?}); delegate them from \
                 the parent's cgroup.subtree_control",
                dir.display(),
                missing.join(", "),
                available.trim()
            ));
        }
        let procs = read(&dir.join("cgroup.procs"))?;
        if !procs.trim().is_empty() {
            return Err(format!(
                "{} has processes of its own (cgroup v2 gives controllers to children only in a cgroup \
                 without processes): run the worker outside it",
                dir.display()
            ));
        }
        write(&dir.join("cgroup.subtree_control"), "+memory +cpu")?;
        let probe = dir.join(format!("furrow-probe-{}", std::process::id()));
        std::fs::create_dir(&probe).map_err(|e| format!("creating {}: {e}", probe.display()))?;
        let ok = ["memory.max", "cpu.max"]
            .iter()
            .all(|f| probe.join(f).exists());
        let _ = std::fs::remove_dir(&probe);
        if !ok {
            return Err(format!(
                "{}: its children get no memory.max/cpu.max",
                dir.display()
            ));
        }
        Ok(CgroupRoot {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(0),
        })
    }

    /// Creates the cgroup of one item with its limits.
    pub fn item(&self, mem_mb: u64, cpu_milli: u64) -> Result<ItemCgroup, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("item-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut cg = ItemCgroup { dir, procs: None };
        let (mem, cpu) = limit_values(mem_mb, cpu_milli);
        write(&cg.dir.join("memory.max"), &mem)?;
        // No swap beyond the limit where swap accounting exists.
        let swap = cg.dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        write(&cg.dir.join("cpu.max"), &cpu)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(cg.dir.join("cgroup.procs"))
            .map_err(|e| format!("opening {}/cgroup.procs: {e}", cg.dir.display()))?;
        cg.procs = Some(f.into());
        Ok(cg)
    }
}

/// The cgroup of one running item; killed and removed on drop.
#[derive(Debug)]
pub struct ItemCgroup {
    dir: PathBuf,
    procs: Option<OwnedFd>,
}

impl ItemCgroup {
    /// The raw descriptor of its `cgroup.procs`, open for writing: the child writes `0` to it between fork
    /// and exec to move itself in.
    pub fn procs_fd(&self) -> i32 {
        self.procs.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
    }

    /// Whether the kernel killed a process of it for exceeding `memory.max`.
    pub fn oom_killed(&self) -> bool {
        read(&self.dir.join("memory.events"))
            .map(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
            .unwrap_or(false)
    }
}

impl Drop for ItemCgroup {
    fn drop(&mut self) {
        self.procs = None;
        if write(&self.dir.join("cgroup.kill"), "1").is_err()
            && let Ok(p) = read(&self.dir.join("cgroup.procs"))
        {
            for pid in p.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on pids read from our own item's cgroup.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // The directory can be removed once its processes are gone (reaped by the kernel shortly).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        tracing::warn!(dir = %self.dir.display(), "could not remove an item's cgroup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values_are_what_the_kernel_files_take() {
        assert_eq!(
            limit_values(128, 500),
            ("134217728".to_string(), "50000 100000".to_string())
        );
        assert_eq!(
            limit_values(0, 0),
            ("max".to_string(), "max 100000".to_string())
        );
        assert_eq!(limit_values(1, 2500).1, "250000 100000", "2.5 cores");
        assert_eq!(
            limit_values(1, 1).1,
            "1000 100000",
            "the kernel's 1 ms minimum"
        );
    }

    #[test]
    fn a_directory_that_is_not_a_usable_cgroup_falls_back_to_rlimits_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let l = Limiter::new(Some(d.path()));
        let Limiter::Rlimit(why) = &l else {
            panic!("a temp dir is no cgroup: {l:?}")
        };
        assert!(why.contains("not on a cgroup v2 file system"), "{why}");
        assert!(l.describe().contains("RLIMIT_AS only"), "{}", l.describe());
        let gone = d.path().join("missing");
        let Limiter::Rlimit(why) = Limiter::new(Some(&gone)) else {
            panic!("a missing dir is no cgroup")
        };
        assert!(why.contains("missing"), "{why}");
        let Limiter::Rlimit(why) = Limiter::new(None) else {
            panic!("no dir, no cgroup")
        };
        assert!(why.contains("--cgroup"), "{why}");
    }
}
