//! Per-process CPU time and peak memory from `/proc`, so that figures compare on a shared machine.

use std::path::Path;

/// Clock ticks per second for `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU times of one process (all its threads), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// User time.
    pub utime: u64,
    /// System (kernel) time.
    pub stime: u64,
}

impl CpuTicks {
    /// User plus system ticks.
    pub fn total(self) -> u64 {
        self.utime + self.stime
    }

    /// Seconds of CPU used between `earlier` and `self`.
    pub fn seconds_since(self, earlier: CpuTicks) -> f64 {
        self.total().saturating_sub(earlier.total()) as f64 / clock_ticks()
    }

    /// Seconds of CPU spent in the kernel on the process's behalf between `earlier` and `self`.
    pub fn sys_seconds_since(self, earlier: CpuTicks) -> f64 {
        self.stime.saturating_sub(earlier.stime) as f64 / clock_ticks()
    }
}

/// Parses the content of `/proc/PID/stat`: fields 14 and 15 (utime, stime), counted after the
/// `comm` field, which is in parentheses and may itself contain spaces and parentheses.
pub fn parse_stat(content: &str) -> Option<CpuTicks> {
    let close = content.rfind(')')?;
    let rest = content.get(close + 1..)?;
    // After ")": field 3 (state) is the first; utime is field 14, stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime = fields.get(14 - 3)?.parse().ok()?;
    let stime = fields.get(15 - 3)?.parse().ok()?;
    Some(CpuTicks { utime, stime })
}

/// Parses `VmHWM` (peak resident set size, KiB) from the content of `/proc/PID/status`.
pub fn parse_vm_hwm_kib(content: &str) -> Option<u64> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Parses `VmRSS` (resident set size, KiB) from the content of `/proc/PID/status`.
pub fn parse_vm_rss_kib(content: &str) -> Option<u64> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads the current RSS (KiB) of process `pid`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&content)
}

/// Reads the CPU ticks of process `pid`, or `None` if it is gone.
pub fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&content)
}

/// Reads the peak RSS (KiB) of process `pid`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm_kib(&content)
}

/// Resets the peak RSS of `pid` to its current RSS (writing `5` to `clear_refs`; needs the same
/// user or root). Returns whether it worked; when not, the peak covers the process lifetime.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(Path::new(&format!("/proc/{pid}/clear_refs")), b"5").is_ok()
}

/// CPU ticks summed over several processes (missing ones count as zero).
pub fn cpu_ticks_sum(pids: &[u32]) -> CpuTicks {
    pids.iter()
        .filter_map(|&p| cpu_ticks(p))
        .fold(CpuTicks::default(), |a, b| CpuTicks {
            utime: a.utime + b.utime,
            stime: a.stime + b.stime,
        })
}

/// User+system CPU seconds consumed so far by waited-for children of this process.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an owned rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User+system CPU seconds consumed so far by this process (all threads).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an owned rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    731 229 0 0 20 0 3 0 12345 1000000 250 18446744073709551615";
        let t = parse_stat(line).unwrap();
        assert_eq!(
            t,
            CpuTicks {
                utime: 731,
                stime: 229
            }
        );
        assert_eq!(t.total(), 960);
    }

    #[test]
    fn stat_of_this_process_parses() {
        let t = cpu_ticks(std::process::id()).unwrap();
        assert!(t.total() < u64::MAX / 2);
        assert!(cpu_ticks(u32::MAX).is_none());
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parens at all"), None);
    }

    #[test]
    fn seconds_since_uses_clock_ticks() {
        let a = CpuTicks {
            utime: 100,
            stime: 50,
        };
        let b = CpuTicks {
            utime: 300,
            stime: 50,
        };
        let s = b.seconds_since(a);
        assert!((s - 200.0 / clock_ticks()).abs() < 1e-9);
        assert_eq!(a.seconds_since(b), 0.0);
    }

    #[test]
    fn vm_hwm() {
        let status =
            "Name:\tredis-server\nVmPeak:\t  100 kB\nVmHWM:\t    8812 kB\nVmRSS:\t 8000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(8812));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
        assert_eq!(parse_vm_rss_kib(status), Some(8000));
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
