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

/// Issue #23 goal 3: logged-in clients that each ran one short query take at most 64 KiB each of
/// the proxy's RSS, and give it back once they close. (The first test covers clients whose
/// buffers a 24 KiB statement grew; this one, the cost of an ordinary idle session.)
#[test]
fn idle_clients_within_budget() {
    let limit = rss::raise_nofile(16_384);
    let n = 2000usize.min((limit as usize).saturating_sub(300) / 2);
    assert!(n >= 1000, "too few file descriptors ({limit}) for the test");
    let rs = replica_set(0);
    let proxy = proxy_for(&rs, "");
    let open = |count: usize| -> Vec<RawClient> {
        (0..count)
            .map(|i| idle_client(proxy.addr, &i.to_string()))
            .collect()
    };
    // Warm up (pools, statement caches, the allocator's arenas), then the baseline.
    drop(open(200));
    std::thread::sleep(Duration::from_millis(1500));
    rss::expect_per_client("idle logged-in MySQL clients", n, 64.0, || open(n));
    // The proxy still serves.
    drop(idle_client(proxy.addr, "after"));
}

/// A client whose buffers a large statement grew gives them back after idling (see
/// `Conn::shrink_idle`); what it sends afterwards, large or small, is served as before.
#[test]
fn served_after_idle_buffers_shrink() {
    let rs = replica_set(0);
    let proxy = proxy_for(&rs, "");
    let filler = "y".repeat(40 * 1024);
    let mut c = idle_client(proxy.addr, &filler);
    // Longer than the proxy's SHRINK_AFTER (1 s): the buffers are given back meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    for text in [filler.as_str(), "short", &"z".repeat(70 * 1024)] {
        let mut q = vec![0x03u8];
        q.extend_from_slice(format!("SELECT '{text}' AS v").as_bytes());
        c.send(0, &q);
        let cols = c.read();
        assert_eq!(cols.payload.first(), Some(&1), "one column");
        c.read();
        c.read();
        let row = c.read();
        // The row: the value as a length-encoded string.
        assert!(
            row.payload.ends_with(text.as_bytes()),
            "row of {} bytes for a {}-byte value",
            row.payload.len(),
            text.len()
        );
        assert_eq!(c.read().payload.first(), Some(&0xfe), "EOF");
        std::thread::sleep(Duration::from_millis(1200));
    }
}
