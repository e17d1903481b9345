//! The body of the memory tests (item 19), shared by `memory.rs` (the system allocator, as every
//! other test binary) and `memory_mimalloc.rs` (mimalloc, as the release binary).
//!
//! Thousands of idle client connections grow the proxy (it runs in this process: RSS is this
//! process's); once they close, the executors give the memory back to the OS within seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Proxy, config, redis_servers};

/// Resident set of this process, in bytes (`VmRSS` of /proc/self/status).
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Raises the soft limit on open files to `want` (or the hard limit).
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

const MB: u64 = 1024 * 1024;

/// Opens idle connections that each sent one 32 KiB SET (so their read buffers grew), closes
/// them, and expects RSS back near where it started.
pub fn idle_connections_give_memory_back() {
    // Each connection takes two descriptors here (the client's and the proxy's end).
    let limit = raise_nofile(16_384);
    let n = 3000usize.min((limit as usize).saturating_sub(200) / 2);
    assert!(n >= 1000, "too few file descriptors ({limit}) for the test");
    let servers = redis_servers(1);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 2);
    let value = "v".repeat(32 * 1024);
    let set = |i: usize| {
        let k = format!("mem:{i}");
        format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{value}\r\n",
            k.len(),
            value.len()
        )
    };
    let open = |count: usize| -> Vec<TcpStream> {
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            let mut s = TcpStream::connect(proxy.addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(set(i).as_bytes()).expect("write");
            conns.push(s);
        }
        for s in &mut conns {
            let mut ok = [0u8; 5];
            s.read_exact(&mut ok).expect("read");
            assert_eq!(&ok, b"+OK\r\n");
        }
        conns
    };
    // Warm up (pools, backend connections, metrics), then the baseline.
    drop(open(100));
    std::thread::sleep(Duration::from_millis(1500));
    let base = rss();

    let conns = open(n);
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
        grown > 40 * MB,
        "the connections should take memory (+{} MB)",
        grown / MB
    );

    drop(conns);
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
    // The proxy still serves.
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["GET", "mem:1"]).len(), 32 * 1024);
}
