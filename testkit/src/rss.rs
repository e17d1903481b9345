//! Memory of this process as the OS sees it (`/proc/self/status`), for tests that run a proxy in
//! process and check what it takes and gives back.

use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`, ...), in KiB; `None` where it
/// cannot be read.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// Resident set of this process, in bytes (`VmRSS`); panics where it cannot be read.
pub fn rss() -> u64 {
    status_kib("VmRSS").expect("VmRSS of /proc/self/status") * 1024
}

/// Raises the soft limit on open files to `want` (or the hard limit); returns the limit now in
/// force (1024 where it cannot be read).
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Takes this process's RSS as the baseline (the caller has warmed up), runs `hold` (which opens
/// what should take memory: `what` names it in the log), expects RSS grown by more than
/// `min_grown_mb` MiB 300 ms later, drops what `hold` returned and expects RSS back within a
/// quarter of the growth (or 16 MiB) of the baseline within 5 s.
pub fn expect_given_back<T>(what: &str, min_grown_mb: u64, hold: impl FnOnce() -> T) {
    let base = rss();

    let held = hold();
    std::thread::sleep(Duration::from_millis(300));
    let peak = rss();
    let grown = peak.saturating_sub(base);
    eprintln!(
        "{what}: RSS {} MB -> {} MB (+{} MB)",
        base / MB,
        peak / MB,
        grown / MB
    );
    assert!(
        grown > min_grown_mb * MB,
        "the connections should take memory (+{} MB)",
        grown / MB
    );

    drop(held);
    // Back within a quarter of what they took (or 16 MB), within 5 s of the close.
    let bound = base + (grown / 4).max(16 * MB);
    let t0 = Instant::now();
    let mut now = rss();
    while now > bound && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        now = rss();
    }
    eprintln!(
        "after close: RSS {} MB after {} ms (bound {} MB)",
        now / MB,
        t0.elapsed().as_millis(),
        bound / MB
    );
    assert!(
        now <= bound,
        "RSS stayed at {} MB after the connections closed (baseline {} MB, peak {} MB)",
        now / MB,
        base / MB,
        peak / MB
    );
}

/// Takes this process's RSS as the baseline (the caller has warmed up), runs `hold` (which opens
/// `n` idle clients and returns them: `what` names them in the log) and expects the RSS growth
/// 300 ms later to be at most `max_kib_each` KiB per client (issue #23's goal); then drops them
/// and expects RSS back within a quarter of the growth (or 4 MiB) of the baseline within 5 s.
/// Returns the KiB per client measured.
pub fn expect_per_client<T>(
    what: &str,
    n: usize,
    max_kib_each: f64,
    hold: impl FnOnce() -> T,
) -> f64 {
    let base = rss();
    let held = hold();
    std::thread::sleep(Duration::from_millis(300));
    let peak = rss();
    let grown = peak.saturating_sub(base);
    let each = grown as f64 / 1024.0 / n as f64;
    eprintln!(
        "{n} {what}: RSS {} KiB -> {} KiB: {each:.1} KiB each (goal <= {max_kib_each} KiB)",
        base / 1024,
        peak / 1024
    );
    assert!(
        each <= max_kib_each,
        "{n} {what} took {each:.1} KiB each (goal <= {max_kib_each} KiB)"
    );
    drop(held);
    let bound = base + (grown / 4).max(4 * MB);
    let t0 = Instant::now();
    let mut now = rss();
    while now > bound && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        now = rss();
    }
    eprintln!(
        "after close: RSS {} KiB after {} ms (bound {} KiB)",
        now / 1024,
        t0.elapsed().as_millis(),
        bound / 1024
    );
    assert!(
        now <= bound,
        "RSS stayed at {} KiB after the clients closed (baseline {} KiB, open {} KiB)",
        now / 1024,
        base / 1024,
        peak / 1024
    );
    each
}
