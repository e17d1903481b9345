//! `redis-benchmark`: command lines and parsing of its (non-CSV) report, which has the full
//! percentile distribution (the CSV output stops at p99).

use super::LoadRun;

/// One redis-benchmark test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbTest {
    /// `-t get`.
    Get,
    /// `-t set` (values of `-d` bytes).
    Set,
    /// `MGET` of `n` random keys (a custom command).
    Mget(usize),
}

impl RbTest {
    /// Short name for tables.
    pub fn name(&self) -> String {
        match self {
            RbTest::Get => "GET".into(),
            RbTest::Set => "SET".into(),
            RbTest::Mget(n) => format!("MGET{n}"),
        }
    }

    /// Parses `get`, `set`, `mget` (10 keys) or `mgetN`.
    pub fn parse(s: &str) -> Option<RbTest> {
        let l = s.to_ascii_lowercase();
        match l.as_str() {
            "get" => Some(RbTest::Get),
            "set" => Some(RbTest::Set),
            "mget" => Some(RbTest::Mget(10)),
            _ => l
                .strip_prefix("mget")?
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .map(RbTest::Mget),
        }
    }
}

/// Parameters of one redis-benchmark run.
#[derive(Debug, Clone)]
pub struct RbParams {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Parallel connections (`-c`).
    pub clients: usize,
    /// Total requests (`-n`).
    pub requests: u64,
    /// Pipeline depth (`-P`).
    pub pipeline: usize,
    /// Value size in bytes (`-d`).
    pub value_size: usize,
    /// Key space (`-r`).
    pub keyspace: u64,
    /// TLS with this CA (`--tls --cacert`), for a TLS listener.
    pub tls_ca: Option<std::path::PathBuf>,
    /// The test.
    pub test: RbTest,
}

/// The argument list (without the program name) for `redis-benchmark`.
pub fn args(p: &RbParams) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        p.port.to_string(),
        "-c".into(),
        p.clients.to_string(),
        "-n".into(),
        p.requests.to_string(),
        "-P".into(),
        p.pipeline.to_string(),
        "-d".into(),
        p.value_size.to_string(),
        "-r".into(),
        p.keyspace.to_string(),
    ];
    if let Some(ca) = &p.tls_ca {
        a.extend(["--tls".into(), "--cacert".into(), ca.display().to_string()]);
    }
    match &p.test {
        RbTest::Get => a.extend(["-t".into(), "get".into()]),
        RbTest::Set => a.extend(["-t".into(), "set".into()]),
        RbTest::Mget(n) => {
            a.push("MGET".into());
            a.extend((0..*n).map(|_| "key:__rand_int__".to_string()));
        }
    }
    a
}

/// The key redis-benchmark makes of `__rand_int__` for the random number `n`: `key:` and `n`
/// in 12 digits (`-t get`/`-t set` and the custom MGET all use `key:__rand_int__`).
pub fn key(n: u64) -> String {
    format!("key:{n:012}")
}

/// Writes every key of the key space (`key(0..keyspace)`) with a `value_size`-byte value to the
/// Redis server at `addr`, pipelined, so that GET and MGET find a value for every key they draw
/// whichever target routes them (the harness preloads every shard with the whole key space).
pub fn preload(addr: std::net::SocketAddr, keyspace: u64, value_size: usize) -> Result<(), String> {
    use std::io::{BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let value = vec![b'x'; value_size];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut line = Vec::new();
    let batch = 1000;
    let mut start = 0;
    while start < keyspace {
        let end = (start + batch).min(keyspace);
        out.clear();
        for n in start..end {
            let k = key(n);
            super::gen_redis::encode_command(&mut out, &[b"SET", k.as_bytes(), &value]);
        }
        writer.write_all(&out).map_err(|e| e.to_string())?;
        for _ in start..end {
            let error = super::gen_redis::read_reply(&mut reader, &mut line)
                .map_err(|e| format!("preload {addr}: {e}"))?;
            if error {
                return Err(format!("preload {addr}: error reply to SET"));
            }
        }
        start = end;
    }
    Ok(())
}

/// Parses redis-benchmark's human report (progress lines separated by `\r` are ignored).
///
/// p99.9 is the first step of the printed percentile distribution at or above 99.9 %
/// (redis-benchmark prints HdrHistogram steps: ..., 99.805 %, 99.902 %, ...), so it is an upper
/// bound at that resolution, never an interpolation.
pub fn parse(text: &str) -> Option<LoadRun> {
    let mut run = LoadRun::default();
    let mut percentiles: Vec<(f64, f64)> = Vec::new();
    let mut in_dist = false;
    for line in text.split(['\n', '\r']).map(str::trim) {
        if line.starts_with("Latency by percentile distribution") {
            in_dist = true;
            continue;
        }
        if line.starts_with("Cumulative distribution") || line.starts_with("Summary") {
            in_dist = false;
        }
        if in_dist && let Some((pct, ms)) = percentile_line(line) {
            percentiles.push((pct, ms));
        }
        if let Some(rest) = line.strip_prefix("throughput summary:") {
            run.throughput = rest.split_whitespace().next()?.parse().ok()?;
        }
        // "100000 requests completed in 1.23 seconds"
        if let Some(idx) = line.find(" requests completed in ") {
            let n = line[..idx].trim().parse().ok();
            let secs = line[idx + " requests completed in ".len()..]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok());
            if let (Some(n), Some(s)) = (n, secs) {
                run.requests = n;
                run.seconds = s;
            }
        }
    }
    if run.throughput <= 0.0 {
        return None;
    }
    let at = |q: f64| percentiles.iter().find(|(p, _)| *p >= q).map(|&(_, ms)| ms);
    run.p50_ms = at(50.0);
    run.p99_ms = at(99.0);
    run.p999_ms = at(99.9);
    if run.seconds <= 0.0 && run.requests > 0 {
        run.seconds = run.requests as f64 / run.throughput;
    }
    Some(run)
}

/// `"99.902% <= 1.303 milliseconds (cumulative count 99902)"` → (99.902, 1.303).
fn percentile_line(line: &str) -> Option<(f64, f64)> {
    let (pct, rest) = line.split_once("% <= ")?;
    let ms = rest.split_whitespace().next()?;
    Some((pct.trim().parse().ok()?, ms.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "GET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\rGET: rps=45000.0 (overall: 45000.0)\r\
====== GET ======\n\
  20000 requests completed in 0.44 seconds\n\
  50 parallel clients\n\
  16 bytes payload\n\
  keep alive: 1\n\
\n\
Latency by percentile distribution:\n\
0.000% <= 0.175 milliseconds (cumulative count 1)\n\
50.000% <= 0.647 milliseconds (cumulative count 10041)\n\
75.000% <= 0.799 milliseconds (cumulative count 15013)\n\
98.438% <= 4.127 milliseconds (cumulative count 19688)\n\
99.219% <= 5.031 milliseconds (cumulative count 19844)\n\
99.805% <= 5.919 milliseconds (cumulative count 19961)\n\
99.902% <= 6.015 milliseconds (cumulative count 19981)\n\
100.000% <= 6.191 milliseconds (cumulative count 20000)\n\
\n\
Cumulative distribution of latencies:\n\
99.980% <= 6.103 milliseconds (cumulative count 19996)\n\
100.000% <= 7.103 milliseconds (cumulative count 20000)\n\
\n\
Summary:\n\
  throughput summary: 45662.10 requests per second\n\
  latency summary (msec):\n\
          avg       min       p50       p95       p99       max\n\
        0.726     0.184     0.647     0.975     4.735     6.191\n";

    #[test]
    fn parses_throughput_count_and_percentiles() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 20000);
        assert!((r.seconds - 0.44).abs() < 1e-9);
        assert!((r.throughput - 45662.10).abs() < 1e-6);
        assert_eq!(r.p50_ms, Some(0.647));
        // First step at or above 99 % is 99.219 %.
        assert_eq!(r.p99_ms, Some(5.031));
        // The cumulative section (6.103) must not be mistaken for the distribution.
        assert_eq!(r.p999_ms, Some(6.015));
    }

    #[test]
    fn output_without_summary_is_none() {
        assert!(parse("Could not connect to Redis at 127.0.0.1:1: Connection refused").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn args_for_mget_and_get() {
        let mut p = RbParams {
            port: 7000,
            clients: 50,
            requests: 1000,
            pipeline: 16,
            value_size: 16,
            keyspace: 100_000,
            test: RbTest::Mget(3),
            tls_ca: None,
        };
        let a = args(&p);
        assert_eq!(
            &a[a.len() - 4..],
            [
                "MGET",
                "key:__rand_int__",
                "key:__rand_int__",
                "key:__rand_int__"
            ]
        );
        assert!(a.windows(2).any(|w| w == ["-P", "16"]));
        p.test = RbTest::Get;
        let a = args(&p);
        assert_eq!(&a[a.len() - 2..], ["-t", "get"]);
    }

    #[test]
    fn keys_match_redis_benchmark() {
        assert_eq!(key(42), "key:000000000042");
        assert_eq!(key(99_999), "key:000000099999");
    }

    #[test]
    fn test_names_parse() {
        assert_eq!(RbTest::parse("GET"), Some(RbTest::Get));
        assert_eq!(RbTest::parse("mget"), Some(RbTest::Mget(10)));
        assert_eq!(RbTest::parse("mget4"), Some(RbTest::Mget(4)));
        assert_eq!(RbTest::parse("mget0"), None);
        assert_eq!(RbTest::parse("incr"), None);
        assert_eq!(RbTest::Mget(4).name(), "MGET4");
    }
}
