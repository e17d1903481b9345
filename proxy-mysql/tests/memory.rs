//! Item 19 for the MySQL proxy: memory taken by thousands of idle client connections goes back to
//! the OS after they close. The proxy runs in this process with the system allocator (glibc: the
//! executor's collect is `malloc_trim`; the release binary's mimalloc is covered by
//! proxy-redis/tests/memory_mimalloc.rs, through the same `runtime::memory` code).

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, proxy_for, replica_set};

const MB: u64 = 1024 * 1024;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn raise_nofile(want: u64) -> u64 {
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

/// Logs in and runs one query with a 24 KiB literal (its result read to the end), then stays idle.
fn idle_client(addr: std::net::SocketAddr, filler: &str) -> RawClient {
    let mut c = RawClient::login(addr, "app", Some("app"));
    let mut q = vec![0x03u8];
    q.extend_from_slice(format!("SELECT '{filler}' AS v").as_bytes());
    c.send(0, &q);
    // Column count, column definition, EOF, the row, EOF.
    for _ in 0..5 {
        let p = c.read();
        assert_ne!(p.payload.first(), Some(&0xff), "query failed");
    }
    c
}

#[test]
fn idle_connections_give_memory_back() {
    let limit = raise_nofile(16_384);
    let n = 2000usize.min((limit as usize).saturating_sub(300) / 2);
    assert!(n >= 1000, "too few file descriptors ({limit}) for the test");
    let rs = replica_set(0);
    let proxy = proxy_for(&rs, "");
    let filler = "x".repeat(24 * 1024);
    // Warm up (pools, statement caches), then the baseline.
    drop(
        (0..100)
            .map(|_| idle_client(proxy.addr, &filler))
            .collect::<Vec<_>>(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let base = rss();

    let conns: Vec<RawClient> = (0..n).map(|_| idle_client(proxy.addr, &filler)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let peak = rss();
    let grown = peak.saturating_sub(base);
    eprintln!(
        "{n} idle connections: RSS {} MB -> {} MB (+{} MB)",
        base / MB,
        peak / MB,
        grown / MB
    );
    assert!(
        grown > 30 * MB,
        "the connections should take memory (+{} MB)",
        grown / MB
    );

    drop(conns);
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
    // The proxy still serves.
    drop(idle_client(proxy.addr, &filler));
}
