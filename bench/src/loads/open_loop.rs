//! Open-loop load at a fixed rate (goal 5 of issue #23: tail latency at half the maximum), Redis
//! `GET` or MySQL point selects.
//!
//! Closed-loop tools (redis-benchmark, sysbench) send the next request when the previous reply
//! came, so a stall slows the sender and hides itself ("coordinated omission"). Here each
//! connection sends its requests on a fixed schedule whatever the replies do — request `i` of
//! connection `c` is due at `start + (i + c / connections) × interval` — and its latency is
//! measured from the time it was *due*, not from when it left, so a late send counts against
//! the target. A writer thread and a reader thread per connection; the writer never waits for
//! replies. Both protocols allow that: a Redis server and a MySQL server (and every proxy in
//! front of them) read the next command from the socket after answering the one before, so the
//! requests queued in the socket are answered in order.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::gen_redis::{encode_command, read_reply};
use super::histogram::Histogram;
use super::mysql_client::{self, MyConn};
use super::{LoadRun, Rng};

/// What each request of an open-loop run is.
#[derive(Debug, Clone)]
pub enum OpenRequest {
    /// `GET key:NNNNNNNNNNNN` of a random key below `keyspace` (as preloaded by the `redis`
    /// suite).
    RedisGet {
        /// Keys `key:000000000000` ..
        keyspace: u64,
    },
    /// sysbench's point select, `SELECT c FROM sbtestT WHERE id=N` (uniform random table and
    /// id), as a `COM_QUERY` on a connection logged in as `user` with `db` selected.
    MysqlPointSelect {
        /// Login user.
        user: String,
        /// Its password.
        password: String,
        /// The schema holding `sbtest1..sbtestN`.
        db: String,
        /// Tables (`sbtest1` ..).
        tables: u32,
        /// Rows per table (ids `1..=table_size`).
        table_size: u32,
    },
}

/// One open-loop run.
#[derive(Debug, Clone)]
pub struct OpenParams {
    /// The target.
    pub addr: SocketAddr,
    /// Client connections, each with its own share of the rate.
    pub connections: usize,
    /// Requests per second offered, all connections together.
    pub rate: f64,
    /// How long requests are offered.
    pub duration: Duration,
    /// The requests.
    pub request: OpenRequest,
}

/// A connection ready for the load: its socket and how its replies are read.
fn open(p: &OpenParams) -> Result<(TcpStream, Reply), String> {
    let (stream, reply) = match &p.request {
        OpenRequest::RedisGet { .. } => (
            TcpStream::connect_timeout(&p.addr, Duration::from_secs(5))
                .map_err(|e| format!("connect {}: {e}", p.addr))?,
            Reply::Redis,
        ),
        OpenRequest::MysqlPointSelect {
            user, password, db, ..
        } => {
            let c = MyConn::connect(p.addr, user, password, Some(db))
                .map_err(|e| format!("mysql login at {}: {e}", p.addr))?;
            let (s, caps) = c.into_parts();
            (s, Reply::Mysql { caps })
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    Ok((stream, reply))
}

/// How a connection's replies are read.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Redis,
    Mysql { caps: u32 },
}

/// What a connection's writer and reader share besides the due times.
#[derive(Default)]
struct Progress {
    /// Requests written.
    sent: AtomicU64,
    /// Replies read.
    received: AtomicU64,
    /// The writer sent its last request.
    done: AtomicBool,
}

impl Progress {
    /// Every request is sent and answered.
    fn complete(&self) -> bool {
        self.done.load(Ordering::Acquire)
            && self.received.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire)
    }
}

/// Appends request bytes to `buf`.
fn encode(req: &OpenRequest, rng: &mut Rng, buf: &mut Vec<u8>) {
    match req {
        OpenRequest::RedisGet { keyspace } => {
            let key = super::redis_benchmark::key(rng.below(*keyspace));
            encode_command(buf, &[b"GET", key.as_bytes()]);
        }
        OpenRequest::MysqlPointSelect {
            tables, table_size, ..
        } => {
            let t = 1 + rng.below(u64::from(*tables));
            let id = 1 + rng.below(u64::from(*table_size));
            mysql_client::encode_query(buf, &format!("SELECT c FROM sbtest{t} WHERE id={id}"));
        }
    }
}

/// When request `i` of connection `c` (of `n`) is due, after the start, at `rate` requests per
/// second over all connections: each connection sends every `n / rate` seconds, the connections
/// staggered evenly inside that period.
pub fn due(i: u64, c: usize, n: usize, rate: f64) -> Duration {
    let n = n.max(1) as f64;
    let interval = n / rate.max(1e-9);
    Duration::from_secs_f64((i as f64 + c as f64 / n) * interval)
}

/// How long a connection waits for the replies still due after its last request.
const DRAIN: Duration = Duration::from_secs(10);

/// Offers `p.rate` requests per second for `p.duration` and measures each reply's latency from
/// its due time.
///
/// Each connection has a writer thread that sleeps until each request's due time and a reader
/// thread that blocks on the socket for the next reply. The reader never polls: the first version
/// checked its queue of due times every 200 µs while it was empty, up to 250k wake-ups a second
/// at 50 connections on a 2-core machine, and a reply that came during such a sleep waited for
/// its end: direct Redis measured p50 0.93 ms at half its maximum that way, 0.22 ms with blocking
/// reads (same machine, same hour). The due time of a reply is queued before its request is
/// written, so it is there when the reply comes. After its last request the writer waits (up to
/// [`DRAIN`]) for the reader to have every reply, then shuts the socket down, which ends a reader
/// still blocked in a read. (A 1 µs timer slack for the writers, tried for punctual sends, made
/// every target slower: timers no longer coalesce, p50 direct 2.3 ms.)
pub fn run(p: &OpenParams) -> Result<LoadRun, String> {
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + p.duration;
    let mut handles = Vec::new();
    for c in 0..p.connections.max(1) {
        let (stream, reply) = open(p)?;
        let reader = stream.try_clone().map_err(|e| e.to_string())?;
        let pending: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let progress = Arc::new(Progress::default());
        let (p2, pending_w, progress_w) = (p.clone(), pending.clone(), progress.clone());
        let writer = std::thread::spawn(move || -> Result<(), String> {
            let mut s = stream;
            let mut rng = Rng::new(0x5eed + c as u64);
            let mut buf = Vec::with_capacity(64);
            let mut i = 0u64;
            let result = loop {
                let at = start + due(i, c, p2.connections, p2.rate);
                if at >= end {
                    break Ok(());
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                buf.clear();
                encode(&p2.request, &mut rng, &mut buf);
                pending_w
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(at);
                if let Err(e) = s.write_all(&buf) {
                    break Err(e.to_string());
                }
                progress_w.sent.fetch_add(1, Ordering::Release);
                i += 1;
            };
            progress_w.done.store(true, Ordering::Release);
            let drain_until = Instant::now() + DRAIN;
            while !progress_w.complete() && Instant::now() < drain_until {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Ends the reader's blocking read, if it is in one.
            let _ = s.shutdown(std::net::Shutdown::Both);
            result
        });
        let reader = std::thread::spawn(move || -> Result<(Histogram, u64, u64), String> {
            let mut r = BufReader::new(reader);
            let mut line = Vec::new();
            let mut hist = Histogram::default();
            let (mut n, mut errors) = (0u64, 0u64);
            loop {
                if progress.complete() {
                    break;
                }
                match std::io::BufRead::fill_buf(&mut r) {
                    Ok(b) if !b.is_empty() => {}
                    // Shut down by the writer (or closed by the target).
                    _ if progress.complete() => break,
                    Ok(_) => {
                        return Err(format!(
                            "connection closed with {} replies outstanding",
                            progress.sent.load(Ordering::Acquire) - n
                        ));
                    }
                    Err(e) => return Err(e.to_string()),
                }
                let err = match reply {
                    Reply::Redis => read_reply(&mut r, &mut line).map_err(|e| e.to_string())?,
                    Reply::Mysql { caps } => mysql_client::read_reply(&mut r, caps, &mut line)
                        .map_err(|e| e.to_string())?,
                };
                let now = Instant::now();
                let at = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front()
                    .ok_or("a reply without a request")?;
                progress.received.fetch_add(1, Ordering::Release);
                hist.record_n(now.saturating_duration_since(at).as_nanos() as u64, 1);
                n += 1;
                errors += u64::from(err);
            }
            Ok((hist, n, errors))
        });
        handles.push((writer, reader));
    }
    let mut hist = Histogram::default();
    let (mut n, mut errors) = (0u64, 0u64);
    let mut failure = None;
    for (w, r) in handles {
        if let Ok(Err(e)) = w.join() {
            failure.get_or_insert(e);
        }
        match r.join() {
            Ok(Ok((h, k, e))) => {
                hist.merge(&h);
                n += k;
                errors += e;
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("reader thread panicked".into());
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    Ok(LoadRun {
        requests: n,
        seconds,
        throughput: n as f64 / seconds,
        p50_ms: hist.percentile_ms(50.0),
        p99_ms: hist.percentile_ms(99.0),
        p999_ms: hist.percentile_ms(99.9),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spread() {
        // 1000 req/s over 4 connections: each sends every 4 ms, staggered by 1 ms.
        assert_eq!(due(0, 0, 4, 1000.0), Duration::ZERO);
        assert_eq!(due(0, 1, 4, 1000.0), Duration::from_millis(1));
        assert_eq!(due(1, 0, 4, 1000.0), Duration::from_millis(4));
        assert_eq!(due(2, 3, 4, 1000.0), Duration::from_millis(11));
        // All due times of one second, all connections: exactly the rate.
        let mut count = 0;
        for c in 0..4 {
            count += (0..)
                .take_while(|&i| due(i, c, 4, 1000.0) < Duration::from_secs(1))
                .count();
        }
        assert_eq!(count, 1000);
    }

    #[test]
    fn open_loop_against_a_real_server() {
        let server = testkit::RedisServer::start().expect("redis-server");
        let p = OpenParams {
            addr: server.addr(),
            connections: 2,
            rate: 2000.0,
            duration: Duration::from_millis(500),
            request: OpenRequest::RedisGet { keyspace: 10 },
        };
        let r = run(&p).expect("run");
        // Every due request is sent and answered (nil replies: the keys are not there).
        assert_eq!(r.requests, 1000);
        assert_eq!(r.errors, 0);
        assert!(r.p50_ms.is_some() && r.p999_ms >= r.p99_ms);
    }

    #[test]
    fn open_loop_point_selects_against_a_real_mariadb() {
        let db = testkit::MariaDb::start().expect("mariadbd");
        db.sql(
            "CREATE DATABASE sbtest; \
             CREATE TABLE sbtest.sbtest1 (id INT PRIMARY KEY, c CHAR(120)); \
             CREATE TABLE sbtest.sbtest2 (id INT PRIMARY KEY, c CHAR(120)); \
             INSERT INTO sbtest.sbtest1 VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
             INSERT INTO sbtest.sbtest2 VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        )
        .expect("schema");
        let mut p = OpenParams {
            addr: db.addr(),
            connections: 2,
            rate: 1000.0,
            duration: Duration::from_millis(500),
            request: OpenRequest::MysqlPointSelect {
                user: testkit::APP_USER.into(),
                password: testkit::APP_PASSWORD.into(),
                db: "sbtest".into(),
                tables: 2,
                table_size: 3,
            },
        };
        let r = run(&p).expect("run");
        // Every due query is sent and its whole result set read, in order, without errors.
        assert_eq!(r.requests, 500);
        assert_eq!(r.errors, 0);
        assert!(r.p50_ms.is_some() && r.p999_ms >= r.p99_ms);
        // A table that is not there: each query is answered with an ERR, counted, and the
        // connection goes on with the next one.
        if let OpenRequest::MysqlPointSelect { tables, .. } = &mut p.request {
            *tables = 3;
        }
        p.duration = Duration::from_millis(300);
        let r = run(&p).expect("run with errors");
        assert_eq!(r.requests, 300);
        assert!(r.errors > 0 && r.errors < 300, "{}", r.errors);
    }
}
