//! The own process's resource use, for the control API and the proxies' admin port and `/metrics`:
//! CPU time (`getrusage`), resident memory and threads (`/proc/self/status`), open files
//! (`/proc/self/fd`). Linux; elsewhere the `/proc` fields read as 0.

use serde::Serialize;

/// A snapshot of this process's resource use.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// User + system CPU seconds since start.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// `Key:   value kB` lines of `/proc/self/status`.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads this process's figures now.
pub fn read() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let cpu_seconds = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        } else {
            0.0
        }
    };
    ProcessStats {
        pid: std::process::id(),
        cpu_seconds,
        rss_bytes: status_field(&status, "VmRSS").unwrap_or(0) * 1024,
        threads: status_field(&status, "Threads").unwrap_or(0),
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
    }
}

/// The figures as Prometheus text (`furrow_process_*`).
pub fn metrics_text(p: &ProcessStats) -> String {
    format!(
        "# TYPE furrow_process_cpu_seconds_total counter\nfurrow_process_cpu_seconds_total {}\n\
         # TYPE furrow_process_resident_memory_bytes gauge\nfurrow_process_resident_memory_bytes {}\n\
         # TYPE furrow_process_threads gauge\nfurrow_process_threads {}\n\
         # TYPE furrow_process_open_fds gauge\nfurrow_process_open_fds {}\n",
        p.cpu_seconds, p.rss_bytes, p.threads, p.open_fds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let p = read();
        assert_eq!(p.pid, std::process::id());
        assert!(p.rss_bytes > 0 && p.threads >= 1, "{p:?}");
        assert!(p.open_fds >= 1, "{p:?}");
        drop(f);
        assert_eq!(
            status_field("Threads:\t7\nVmRSS:\t  1200 kB\n", "VmRSS"),
            Some(1200)
        );
        assert!(metrics_text(&p).contains("furrow_process_threads "));
    }
}
