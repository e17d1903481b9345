//! Load drivers: `redis-benchmark`, `sysbench`, and the harness's own Rust load generator.

pub mod gen_mysql;
pub mod gen_redis;
pub mod histogram;
pub mod mysql_client;
pub mod open_loop;
pub mod redis_benchmark;
pub mod sysbench;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one load run against one target measured (from the load tool's side).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadRun {
    /// Requests (queries, commands) completed.
    pub requests: u64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles in milliseconds, as the tool measured them.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<f64>,
    /// Requests that failed (error replies, broken connections).
    pub errors: u64,
}

/// The output of an external load tool run with a hard time limit.
#[derive(Debug)]
pub struct ToolOutput {
    /// stdout and stderr together (stderr appended).
    pub text: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Whether the harness killed it at the time limit.
    pub timed_out: bool,
}

/// Runs `cmd` with a hard wall-clock limit: past `limit` it is killed, so every run stops by itself.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> std::io::Result<ToolOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(
        &err_reader.join().unwrap_or_default(),
    ));
    Ok(ToolOutput {
        text,
        success: status.success() && !timed_out,
        timed_out,
    })
}

/// The last `n` non-empty lines of a tool's output, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let text = strip_ansi(text);
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Removes terminal colour escapes (`ESC [ ... m`) from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Drives `clients` worker threads until `duration` has passed or `max_requests` are done.
///
/// `make(i)` opens client `i` (its connection) and returns a closure that performs one round trip
/// (a batch) and returns (requests, error replies). Each request of a batch is recorded with the
/// batch's latency. A client whose round trip fails stops; the error is counted and kept.
pub fn drive<F, W>(
    clients: usize,
    duration: Duration,
    max_requests: u64,
    make: F,
) -> Result<LoadRun, String>
where
    F: Fn(usize) -> Result<W, String> + Sync,
    W: FnMut() -> Result<(u64, u64), String>,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + duration;
    let results: Vec<Result<(histogram::Histogram, u64), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let make = &make;
                let done = &done;
                s.spawn(move || {
                    let mut work = make(i)?;
                    let mut h = histogram::Histogram::default();
                    let mut errors = 0;
                    while Instant::now() < deadline && done.load(Ordering::Relaxed) < max_requests {
                        let t0 = Instant::now();
                        let (n, e) = match work() {
                            Ok(r) => r,
                            Err(msg) if h.count() > 0 => {
                                return Err(format!("client {i} failed mid-run: {msg}"));
                            }
                            Err(msg) => return Err(msg),
                        };
                        let ns = t0.elapsed().as_nanos() as u64;
                        h.record_n(ns, n);
                        errors += e;
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok((h, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut hist = histogram::Histogram::default();
    let mut errors = 0;
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok((h, e)) => {
                hist.merge(&h);
                errors += e;
            }
            Err(m) => failures.push(m),
        }
    }
    if !failures.is_empty() {
        failures.dedup();
        return Err(format!(
            "{} of {clients} clients failed: {}",
            failures.len(),
            failures.join("; ")
        ));
    }
    let requests = hist.count();
    if requests == 0 {
        return Err("no request completed".into());
    }
    Ok(LoadRun {
        requests,
        seconds,
        throughput: requests as f64 / seconds,
        p50_ms: hist.percentile_ms(50.0),
        p99_ms: hist.percentile_ms(99.0),
        p999_ms: hist.percentile_ms(99.9),
        errors,
    })
}

/// A small deterministic pseudo-random generator (xorshift64*), one per client.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds a generator (zero is replaced by a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_counts_and_stops_at_max_requests() {
        let r = drive(3, Duration::from_secs(30), 300, |_| {
            Ok(|| -> Result<(u64, u64), String> { Ok((10, 1)) })
        })
        .unwrap();
        // Each client checks the shared count before a batch, so at most one extra batch each.
        assert!(r.requests >= 300 && r.requests <= 330, "{}", r.requests);
        assert_eq!(r.errors * 10, r.requests);
        assert!(r.p50_ms.is_some());
    }

    #[test]
    fn drive_reports_failing_clients() {
        let e = drive(2, Duration::from_secs(5), 100, |i| {
            if i == 1 {
                Err("refused".to_string())
            } else {
                Ok(|| Ok((1, 0)))
            }
        })
        .unwrap_err();
        assert!(e.contains("1 of 2 clients failed: refused"), "{e}");
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }

    #[test]
    fn run_with_limit_kills_and_tails() {
        let out =
            run_with_limit(Command::new("sleep").arg("10"), Duration::from_millis(200)).unwrap();
        assert!(out.timed_out && !out.success);
        let out =
            run_with_limit(Command::new("echo").arg("a\nb\nc"), Duration::from_secs(5)).unwrap();
        assert!(out.success);
        assert_eq!(tail(&out.text, 2), "b | c");
        assert_eq!(strip_ansi("\u{1b}[31mERROR\u{1b}[0m x"), "ERROR x");
    }
}
