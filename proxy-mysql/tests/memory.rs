//! Item 19 for the MySQL proxy: memory taken by thousands of idle client connections goes back to
//! the OS after they close. The proxy runs in this process with the system allocator (glibc: the
//! executor's collect is `malloc_trim`; the release binary's mimalloc is covered by
//! proxy-redis/tests/memory_mimalloc.rs, through the same `runtime::memory` code).

mod common;

use std::time::Duration;

use common::{RawClient, proxy_for, replica_set};
use testkit::rss;

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
    let limit = rss::raise_nofile(16_384);
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
    rss::expect_given_back(&format!("{n} idle connections"), 30, || {
        (0..n)
            .map(|_| idle_client(proxy.addr, &filler))
            .collect::<Vec<RawClient>>()
    });
    // The proxy still serves.
    drop(idle_client(proxy.addr, &filler));
}
