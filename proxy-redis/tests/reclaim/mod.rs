//! The body of the memory tests (item 19), shared by `memory.rs` (the system allocator, as every
//! other test binary) and `memory_mimalloc.rs` (mimalloc, as the release binary).
//!
//! Thousands of idle client connections grow the proxy (it runs in this process: RSS is this
//! process's); once they close, the executors give the memory back to the OS within seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::rss;

use crate::common::{Proxy, config, redis_servers};

/// Opens idle connections that each sent one 32 KiB SET (so their read buffers grew), closes
/// them, and expects RSS back near where it started.
pub fn idle_connections_give_memory_back() {
    // Each connection takes two descriptors here (the client's and the proxy's end).
    let limit = rss::raise_nofile(16_384);
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
    rss::expect_given_back(&format!("{n} idle connections"), 40, || open(n));
    // The proxy still serves.
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["GET", "mem:1"]).len(), 32 * 1024);
}

/// Issue #23 goal 3: idle clients that each ran one `PING` (as the bench's idle mode) take at most
/// 16 KiB each of the proxy's RSS, and give it back once they close.
pub fn idle_clients_within_budget() {
    let limit = rss::raise_nofile(16_384);
    let n = 2000usize.min((limit as usize).saturating_sub(200) / 2);
    assert!(n >= 1000, "too few file descriptors ({limit}) for the test");
    let servers = redis_servers(1);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 2);
    let open = |count: usize| -> Vec<TcpStream> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            let mut s = TcpStream::connect(proxy.addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).expect("read");
            assert_eq!(&pong, b"+PONG\r\n");
            conns.push(s);
        }
        conns
    };
    // Warm up (the executors' first sessions, the allocator's arenas), then the baseline.
    drop(open(200));
    std::thread::sleep(Duration::from_millis(1500));
    rss::expect_per_client("idle Redis clients", n, 16.0, || open(n));
    // The proxy still serves.
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["PING"]), "+PONG");
}
