//! The admin port's `SHOW THREADS`: an on-demand snapshot of every thread of the process — the
//! executors (`furrow-N`, one per core), the admin, trace-export, log and
//! registry threads — from `/proc/self/task`: state, the CPU it last ran on, user and system CPU
//! time, voluntary and involuntary context switches, the kernel function it waits in (`wchan`)
//! and, where the kernel lets this process read it (root / `CAP_SYS_ADMIN`), its kernel stack.
//! An executor stuck in a busy loop shows as `R` with growing CPU and few voluntary switches; one
//! blocked in a syscall shows its wait channel and stack. Nothing runs on the executors to make it.

use std::fmt::Write as _;

/// Kernel stack frames shown per thread.
pub const STACK_FRAMES: usize = 6;

/// One thread's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadInfo {
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// State letter (`R` running, `S` sleeping, `D` uninterruptible, ...).
    pub state: char,
    /// The CPU it last ran on.
    pub cpu: i64,
    /// User CPU time, clock ticks.
    pub utime: u64,
    /// System CPU time, clock ticks.
    pub stime: u64,
}

/// Parses `/proc/.../stat` (the name may hold spaces and parentheses: it ends at the last `)`).
pub fn parse_stat(text: &str) -> Option<ThreadInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let tid = text[..open].trim().parse().ok()?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, processor 39.
    Some(ThreadInfo {
        tid,
        name,
        state: rest.first()?.chars().next()?,
        utime: rest.get(11)?.parse().ok()?,
        stime: rest.get(12)?.parse().ok()?,
        cpu: rest.get(36).and_then(|c| c.parse().ok()).unwrap_or(-1),
    })
}

fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The top frames of a kernel stack file (`[<0>] do_epoll_wait+0x4c0/0x5b0`), function names only.
pub fn stack_frames(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f = l.split_whitespace().last()?;
            Some(f.split('+').next().unwrap_or(f).to_string())
        })
        .take(n)
        .collect()
}

/// Renders the snapshot.
pub fn snapshot() -> String {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ms = |ticks: u64| ticks * 1000 / hz;
    let mut s = format!(
        "{:<8} {:<20} {:<5} {:>4} {:>10} {:>10} {:>10} {:>10}  {:<20} KERNEL_STACK\n",
        "TID", "NAME", "STATE", "CPU", "USER_MS", "SYS_MS", "VOL_CS", "INVOL_CS", "WCHAN"
    );
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        s.push_str("(no /proc/self/task on this system)\n");
        return s;
    };
    let mut tasks: Vec<(u32, std::path::PathBuf)> = dir
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    tasks.sort();
    for (_, path) in tasks {
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let Some(t) = parse_stat(&read("stat")) else {
            continue; // the thread ended meanwhile
        };
        let status = read("status");
        let wchan = match read("wchan").trim() {
            "" | "0" => "-".to_string(),
            w => w.to_string(),
        };
        let stack = stack_frames(&read("stack"), STACK_FRAMES);
        let _ = writeln!(
            s,
            "{:<8} {:<20} {:<5} {:>4} {:>10} {:>10} {:>10} {:>10}  {:<20} {}",
            t.tid,
            t.name,
            t.state,
            t.cpu,
            ms(t.utime),
            ms(t.stime),
            status_field(&status, "voluntary_ctxt_switches:"),
            status_field(&status, "nonvoluntary_ctxt_switches:"),
            wchan,
            if stack.is_empty() {
                "-".to_string()
            } else {
                stack.join(" < ")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        let line = "4242 (furrow (x) 1) S 1 4242 4242 0 -1 4194624 100 0 0 0 37 12 0 0 20 0 9 0 \
                    1000 2000000 500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0";
        let t = parse_stat(line).expect("parses");
        assert_eq!(
            t,
            ThreadInfo {
                tid: 4242,
                name: "furrow (x) 1".into(),
                state: 'S',
                cpu: 3,
                utime: 37,
                stime: 12,
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn this_process_is_listed_with_this_thread() {
        let me = snapshot();
        assert!(me.lines().count() >= 2, "{me}");
        let frames = stack_frames(
            "[<0>] do_epoll_wait+0x4c0/0x5b0\n[<0>] __x64_sys_epoll_wait+0x6f/0x110\n",
            1,
        );
        assert_eq!(frames, ["do_epoll_wait"]);
    }
}
