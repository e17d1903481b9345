//! `--collector sink`: an OTLP/HTTP endpoint that reads every export request whole and answers
//! `200` with an empty `ExportTraceServiceResponse`, decoding and storing nothing.
//!
//! Why: on the harness's 2-vCPU machine the traced targets' collector shares the cores with the
//! load, the backends and the proxy. `furrow control` decodes, tail-samples and stores every span
//! (several times the proxy's cost of making it), so a `furrow-traced` row measured against it
//! shows mostly the collector's ingest, and with the collector at nice 19 its bursts still delay
//! the load on this kernel (EEVDF lets a running low-weight task finish its slice). In a
//! deployment the collector has its own machine. The sink leaves on the shared cores only what
//! the proxy's machine pays for in a deployment too (making, encoding and sending the spans) plus
//! the receiving side's reads of loopback bytes, which the report names.
//!
//! Bounded: a request head over 64 KiB, or a body without a length, closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What the sink read.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Export requests answered.
    pub requests: AtomicU64,
    /// Body bytes read (encoded spans).
    pub body_bytes: AtomicU64,
    /// Connections closed for a malformed request.
    pub malformed: AtomicU64,
    /// CPU time of the threads serving connections, in ns (what the receiving side of the
    /// spans' loopback bytes cost the shared cores; a collector on its own machine pays it there).
    pub cpu_ns: AtomicU64,
}

/// The calling thread's CPU time (user and system), in ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// A running sink; stops accepting when dropped.
#[derive(Debug)]
pub struct Sink {
    /// Its address (`POST /v1/traces`).
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Sink {
    /// Starts a sink on a free loopback port; its threads run at niceness `nice` (as the
    /// collector it stands for would, see `--collector-nice`).
    pub fn start(nice: i32) -> Result<Sink, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("sink: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let stats = Arc::new(SinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        std::thread::Builder::new()
            .name("bench-otlp-sink".into())
            .spawn(move || {
                set_nice(nice);
                for c in l.incoming() {
                    if sp.load(Relaxed) {
                        return;
                    }
                    let Ok(c) = c else { continue };
                    let st = st.clone();
                    let _ = std::thread::Builder::new()
                        .name("bench-otlp-sink-conn".into())
                        .spawn(move || {
                            set_nice(nice);
                            serve(c, &st);
                        });
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Sink { addr, stats, stop })
    }
}

/// The calling thread's niceness (Linux: per thread).
fn set_nice(nice: i32) {
    if nice != 0 {
        // SAFETY: setpriority with who = 0 changes only the calling thread's niceness.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
        }
    }
}

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// Answers the requests of one connection until it closes or sends something malformed.
fn serve(mut c: TcpStream, st: &SinkStats) {
    let _ = c.set_nodelay(true);
    let mut buf = vec![0u8; 1 << 20];
    let mut cpu = thread_cpu_ns();
    // `buf[at..filled]` holds bytes read and not yet consumed.
    let (mut at, mut filled) = (0usize, 0usize);
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = find_head_end(&buf[at..filled]) {
                break at + i;
            }
            if filled - at > MAX_HEAD {
                st.malformed.fetch_add(1, Relaxed);
                return;
            }
            if filled == buf.len() {
                buf.copy_within(at..filled, 0);
                filled -= at;
                at = 0;
            }
            match c.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        };
        let Some(len) = content_length(&buf[at..head_end]) else {
            st.malformed.fetch_add(1, Relaxed);
            return;
        };
        at = head_end;
        // The body, discarded as it comes.
        let mut left = len;
        let have = (filled - at).min(left);
        at += have;
        left -= have;
        while left > 0 {
            match c.read(&mut buf[..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let used = n.min(left);
                    left -= used;
                    // Bytes past the body are the next request's.
                    at = used;
                    filled = n;
                }
            }
        }
        if at == filled {
            (at, filled) = (0, 0);
        }
        st.requests.fetch_add(1, Relaxed);
        st.body_bytes.fetch_add(len as u64, Relaxed);
        let now = thread_cpu_ns();
        st.cpu_ns.fetch_add(now.saturating_sub(cpu), Relaxed);
        cpu = now;
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if c.write_all(ok).is_err() {
            return;
        }
    }
}

/// Where the blank line ending a head is, past it.
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The `Content-Length` of a request head (`None`: absent or not a number).
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn post(s: &mut TcpStream, body: &[u8]) -> String {
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while find_head_end(&got).is_none() {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    /// Requests on one kept connection, bodies of any size (larger than the read buffer too),
    /// are each answered 200 and counted.
    #[test]
    fn answers_every_request_on_a_kept_connection() {
        let sink = Sink::start(0).unwrap();
        let mut s = TcpStream::connect(sink.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sizes = [0usize, 10, 5000, (1 << 20) + 17, 3];
        for n in sizes {
            let answer = post(&mut s, &vec![7u8; n]);
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.contains("Content-Length: 0\r\n"), "{answer}");
        }
        assert_eq!(sink.stats.requests.load(Relaxed), sizes.len() as u64);
        assert_eq!(
            sink.stats.body_bytes.load(Relaxed),
            sizes.iter().sum::<usize>() as u64
        );
        // Reading a MiB and more took some of the thread's CPU, and it was counted.
        assert!(sink.stats.cpu_ns.load(Relaxed) > 0);
    }

    /// A request without a length is not guessed at: the connection closes, and it is counted.
    #[test]
    fn a_request_without_a_length_closes_the_connection() {
        let sink = Sink::start(0).unwrap();
        let mut s = TcpStream::connect(sink.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut b = [0u8; 64];
        assert_eq!(s.read(&mut b).unwrap(), 0);
        assert_eq!(sink.stats.malformed.load(Relaxed), 1);
        assert_eq!(sink.stats.requests.load(Relaxed), 0);
    }

    #[test]
    fn content_length_is_read_whatever_its_case() {
        assert_eq!(
            content_length(b"POST / HTTP/1.1\r\ncontent-LENGTH: 42\r\n\r\n"),
            Some(42)
        );
        assert_eq!(content_length(b"POST / HTTP/1.1\r\nX: 1\r\n\r\n"), None);
        assert_eq!(
            content_length(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }
}
