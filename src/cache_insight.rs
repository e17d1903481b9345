//! The admin port's `CACHE INSIGHTS [group]`: per Redis group, every server's `INFO` read and
//! compared — hit ratio (`keyspace_hits` / `keyspace_misses`), memory and key counts and their
//! balance across the group's servers, keys without a TTL, evictions — with advice (imbalanced
//! shards, low hit rate, keys without TTL under `maxmemory`, memory near `maxmemory`) and a
//! capacity estimate: the memory growth since the previous run extrapolated to `maxmemory`.
//! It also lists the big keys by *reply* size of the group's listeners (sampled on the data path:
//! 1 single-key command in `proxy_redis::metrics::REPLY_SAMPLE_EVERY` keeps its key until its
//! reply is read; replies of at least 16 KiB are kept, top 32 per core) and advises on values of
//! [`OVERSIZED_REPLY_BYTES`] or more.
//!
//! Off the data path: runs on a blocking thread of the admin runtime, one short connection per
//! server (connect and read timeouts [`TIMEOUT`], replies capped), servers of a group in turn.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codec::resp::{Frame, FrameDecoder, Limits, write_array_header, write_bulk};
use proxy_redis::KeySample;
use router::config::{Config, RedisGroup};

/// Connect, read and write timeout towards one server.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `INFO` reply read.
pub const MAX_INFO: usize = 1 << 20;
/// Key-count (or memory) ratio of the largest server to the group's mean that is flagged.
pub const IMBALANCE: f64 = 1.5;
/// Hit ratio under which a server is flagged (with at least [`MIN_LOOKUPS`] lookups).
pub const LOW_HIT_RATIO: f64 = 0.8;
/// Lookups a hit ratio needs before it is judged.
pub const MIN_LOOKUPS: u64 = 100;
/// Keys a group needs before its balance is judged.
pub const MIN_KEYS: u64 = 100;

/// The previous reading of `used_memory` per server address (for the growth estimate); one entry
/// per configured server.
static PREVIOUS: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// What one server's `INFO` says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerInfo {
    /// `used_memory` (bytes).
    pub used_memory: u64,
    /// `maxmemory` (0: none).
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub policy: String,
    /// Keys over every database.
    pub keys: u64,
    /// Keys with a TTL over every database.
    pub expires: u64,
    /// `keyspace_hits`.
    pub hits: u64,
    /// `keyspace_misses`.
    pub misses: u64,
    /// `evicted_keys`.
    pub evicted: u64,
}

impl ServerInfo {
    /// Hits over lookups; None before [`MIN_LOOKUPS`].
    pub fn hit_ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n >= MIN_LOOKUPS).then(|| self.hits as f64 / n as f64)
    }
}

/// Reads the fields of an `INFO` reply (`key:value` lines, `dbN:keys=..,expires=..` lines).
pub fn parse_info(text: &str) -> ServerInfo {
    let mut i = ServerInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let num = || v.trim().parse::<u64>().unwrap_or(0);
        match k {
            "used_memory" => i.used_memory = num(),
            "maxmemory" => i.maxmemory = num(),
            "maxmemory_policy" => i.policy = v.trim().to_string(),
            "keyspace_hits" => i.hits = num(),
            "keyspace_misses" => i.misses = num(),
            "evicted_keys" => i.evicted = num(),
            db if db.starts_with("db") && db[2..].bytes().all(|b| b.is_ascii_digit()) => {
                for kv in v.split(',') {
                    match kv.split_once('=') {
                        Some(("keys", n)) => i.keys += n.parse::<u64>().unwrap_or(0),
                        Some(("expires", n)) => i.expires += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    i
}

/// One server's reading, or why there is none.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Server name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// `INFO`, or the error.
    pub info: Result<ServerInfo, String>,
    /// Bytes per second of `used_memory` growth since the previous run (None on the first).
    pub growth_per_s: Option<f64>,
}

/// Advice for one group from its servers' readings.
pub fn assess(group: &str, r: &[Reading]) -> Vec<String> {
    let mut out = Vec::new();
    let ok: Vec<(&Reading, &ServerInfo)> = r
        .iter()
        .filter_map(|x| x.info.as_ref().ok().map(|i| (x, i)))
        .collect();
    let total_keys: u64 = ok.iter().map(|(_, i)| i.keys).sum();
    if ok.len() > 1 && total_keys >= MIN_KEYS {
        let mean_keys = total_keys as f64 / ok.len() as f64;
        let mean_mem = ok.iter().map(|(_, i)| i.used_memory as f64).sum::<f64>() / ok.len() as f64;
        for (x, i) in &ok {
            let kr = i.keys as f64 / mean_keys;
            if kr > IMBALANCE {
                out.push(format!(
                    "{group}: imbalanced shards: {} holds {:.1}x the mean key count ({} of {total_keys} keys) — check hash tags and hot key prefixes",
                    x.name, kr, i.keys
                ));
            }
            let mr = i.used_memory as f64 / mean_mem.max(1.0);
            if mr > IMBALANCE {
                out.push(format!(
                    "{group}: imbalanced memory: {} uses {:.1}x the mean ({} bytes) — look for big keys there",
                    x.name, mr, i.used_memory
                ));
            }
        }
    }
    for (x, i) in &ok {
        if let Some(h) = i.hit_ratio()
            && h < LOW_HIT_RATIO
        {
            out.push(format!(
                "{group}: low hit rate on {}: {:.1}% of {} lookups hit — keys expire or are evicted before reuse, or reads ask for keys never written",
                x.name,
                h * 100.0,
                i.hits + i.misses
            ));
        }
        if i.maxmemory > 0 {
            let no_ttl = i.keys.saturating_sub(i.expires);
            if i.policy.starts_with("volatile") && i.keys >= MIN_KEYS && no_ttl * 2 > i.keys {
                out.push(format!(
                    "{group}: {} keys of {} on {} have no TTL under maxmemory-policy {}: they are never evicted and keep growing",
                    no_ttl, i.keys, x.name, i.policy
                ));
            }
            let used = i.used_memory as f64 / i.maxmemory as f64;
            if used >= 0.8 {
                out.push(format!(
                    "{group}: capacity: {} uses {:.0}% of maxmemory",
                    x.name,
                    used * 100.0
                ));
            }
            if let Some(g) = x.growth_per_s
                && g > 0.0
            {
                let left = i.maxmemory.saturating_sub(i.used_memory) as f64 / g;
                out.push(format!(
                    "{group}: capacity: {} grows {:.0} bytes/s, maxmemory in about {}",
                    x.name,
                    g,
                    human_secs(left)
                ));
            }
        }
        if i.evicted > 0 {
            out.push(format!(
                "{group}: {} evicted {} keys (maxmemory reached)",
                x.name, i.evicted
            ));
        }
    }
    out
}

fn human_secs(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

/// Sends one command and returns its reply as text (Err: the server's error or an I/O failure).
fn call(s: &mut TcpStream, args: &[&str]) -> Result<String, String> {
    let mut out = BytesMut::new();
    write_array_header(&mut out, args.len());
    for a in args {
        write_bulk(&mut out, a.as_bytes());
    }
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::new(Limits {
        max_bulk_len: MAX_INFO,
        ..Limits::default()
    });
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(Frame::Bulk(b) | Frame::Simple(b))) => {
                return Ok(String::from_utf8_lossy(&b).into_owned());
            }
            Ok(Some(Frame::Error(b) | Frame::BlobError(b))) => {
                return Err(String::from_utf8_lossy(&b).into_owned());
            }
            Ok(Some(_)) => return Ok(String::new()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() > MAX_INFO + 1024 {
            return Err("reply too large".into());
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = s.read(&mut tmp).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed the connection".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn read_server(g: &RedisGroup, address: &str) -> Result<ServerInfo, String> {
    if g.tls.is_some() {
        return Err("TLS backends are not read yet".into());
    }
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    if let Some(p) = &g.password {
        match &g.username {
            Some(u) => call(&mut s, &["AUTH", u, p])?,
            None => call(&mut s, &["AUTH", p])?,
        };
    }
    Ok(parse_info(&call(&mut s, &["INFO"])?))
}

/// Reads every server of the Redis groups (all, or the one named) and renders the admin table.
/// The sampled big replies of every Redis listener: `(listener, keys biggest first)` (read on the
/// admin runtime, before [`run`] goes to a blocking thread).
pub fn big_replies(shared: &runtime::Shared) -> Vec<(String, Vec<KeySample>)> {
    proxy_redis::admin_metrics(shared)
        .into_iter()
        .map(|l| (l.listener, l.big_replies))
        .collect()
}

/// Replies at least this large are advised against ("oversized values").
pub const OVERSIZED_REPLY_BYTES: u64 = 512 * 1024;

/// The `# big replies` rows and advice of one group: the sampled replies of its listeners.
pub fn reply_section(
    group: &str,
    listeners: &[&str],
    replies: &[(String, Vec<KeySample>)],
    rows: &mut String,
    advice: &mut Vec<String>,
) {
    let mut oversized: Vec<(&str, &KeySample)> = Vec::new();
    for (l, keys) in replies {
        if !listeners.contains(&l.as_str()) {
            continue;
        }
        for k in keys {
            let _ = writeln!(rows, "{:<16} {:<16} {:>12} {}", group, l, k.value, k.key);
            if k.value >= OVERSIZED_REPLY_BYTES {
                oversized.push((l, k));
            }
        }
    }
    if let Some((l, k)) = oversized.iter().max_by_key(|(_, k)| k.value) {
        advice.push(format!(
            "{group}: oversized values: {} key(s) answered {} KiB or more (largest {:?}, {} bytes, through {l}): every read moves it whole; split it (a hash or several keys) or compress it",
            oversized.len(),
            OVERSIZED_REPLY_BYTES / 1024,
            k.key,
            k.value
        ));
    }
}

pub fn run(config: &Config, replies: &[(String, Vec<KeySample>)], only: Option<&str>) -> String {
    let mut prev = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner());
    let prev = prev.get_or_insert_with(HashMap::new);
    let mut s = format!(
        "# shards\n{:<16} {:<16} {:<22} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9}\n",
        "GROUP",
        "SERVER",
        "ADDRESS",
        "USED_MEMORY",
        "MAXMEMORY",
        "KEYS",
        "NO_TTL",
        "HITS",
        "MISSES",
        "HIT_PCT",
        "EVICTED"
    );
    let mut advice = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut reply_rows = String::new();
    for g in &config.redis_groups {
        if only.is_some_and(|o| o != g.name) {
            continue;
        }
        let listeners: Vec<&str> = config
            .listeners
            .iter()
            .filter(|l| l.group == g.name)
            .map(|l| l.name.as_str())
            .collect();
        reply_section(&g.name, &listeners, replies, &mut reply_rows, &mut advice);
        let mut readings = Vec::new();
        for srv in &g.servers {
            let info = read_server(g, &srv.address);
            let now = Instant::now();
            let growth_per_s = info.as_ref().ok().and_then(|i| {
                let (at, was) = prev.insert(srv.address.clone(), (now, i.used_memory))?;
                let dt = now.duration_since(at).as_secs_f64();
                (dt >= 1.0).then(|| (i.used_memory as f64 - was as f64) / dt)
            });
            seen.insert(srv.address.clone());
            readings.push(Reading {
                name: srv.name.clone(),
                address: srv.address.clone(),
                info,
                growth_per_s,
            });
        }
        for r in &readings {
            match &r.info {
                Ok(i) => {
                    let pct = i
                        .hit_ratio()
                        .map_or_else(|| "-".to_string(), |h| format!("{:.1}", h * 100.0));
                    let _ = writeln!(
                        s,
                        "{:<16} {:<16} {:<22} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9}",
                        g.name,
                        r.name,
                        r.address,
                        i.used_memory,
                        i.maxmemory,
                        i.keys,
                        i.keys.saturating_sub(i.expires),
                        i.hits,
                        i.misses,
                        pct,
                        i.evicted
                    );
                }
                Err(e) => {
                    advice.push(format!(
                        "{}: {} ({}) not read: {e}",
                        g.name, r.name, r.address
                    ));
                }
            }
        }
        advice.extend(assess(&g.name, &readings));
    }
    // Forget servers no longer configured (the map stays as large as the config).
    if only.is_none() {
        prev.retain(|a, _| seen.contains(a));
    }
    let _ = writeln!(
        s,
        "\n# big replies (sampled 1 in {} single-key commands, >= {} KiB)\n{:<16} {:<16} {:>12} KEY",
        proxy_redis::metrics::REPLY_SAMPLE_EVERY,
        proxy_redis::metrics::BIG_KEY_BYTES / 1024,
        "GROUP",
        "LISTENER",
        "BYTES"
    );
    s.push_str(&reply_rows);
    let _ = writeln!(s, "\n# advice\nADVICE");
    for a in &advice {
        let _ = writeln!(s, "{a}");
    }
    if advice.is_empty() {
        let _ = writeln!(s, "(nothing to report)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(name: &str, info: ServerInfo, growth: Option<f64>) -> Reading {
        Reading {
            name: name.into(),
            address: format!("{name}:6379"),
            info: Ok(info),
            growth_per_s: growth,
        }
    }

    #[test]
    fn info_fields_and_keyspace_lines() {
        let i = parse_info(
            "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:4194304\r\n\
             maxmemory_policy:volatile-lru\r\n# Stats\r\nkeyspace_hits:90\r\nkeyspace_misses:30\r\n\
             evicted_keys:2\r\n# Keyspace\r\ndb0:keys=10,expires=4,avg_ttl=100\r\ndb3:keys=5,expires=1\r\n\
             dbx:keys=99\r\n",
        );
        assert_eq!(
            i,
            ServerInfo {
                used_memory: 1_048_576,
                maxmemory: 4_194_304,
                policy: "volatile-lru".into(),
                keys: 15,
                expires: 5,
                hits: 90,
                misses: 30,
                evicted: 2,
            }
        );
        assert_eq!(i.hit_ratio(), Some(0.75));
        assert_eq!(ServerInfo::default().hit_ratio(), None);
    }

    #[test]
    fn big_replies_of_the_group_s_listeners_and_oversized_advice() {
        let k = |key: &str, value: u64| KeySample {
            key: key.into(),
            value,
        };
        let replies = vec![
            (
                "cache".to_string(),
                vec![k("blob", 600 * 1024), k("page", 20_000)],
            ),
            ("other".to_string(), vec![k("elsewhere", 900 * 1024)]),
        ];
        let (mut rows, mut advice) = (String::new(), Vec::new());
        reply_section("g", &["cache"], &replies, &mut rows, &mut advice);
        assert!(rows.contains("blob") && rows.contains("page"), "{rows}");
        assert!(!rows.contains("elsewhere"), "{rows}");
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(
            advice[0].contains("oversized values: 1 key(s)"),
            "{advice:?}"
        );
        assert!(advice[0].contains("\"blob\", 614400 bytes"), "{advice:?}");
        let (mut rows, mut advice) = (String::new(), Vec::new());
        reply_section("g", &["cache"], &replies[..1], &mut rows, &mut advice);
        reply_section("h", &["none"], &replies, &mut rows, &mut advice);
        assert_eq!(advice.len(), 1);
    }

    #[test]
    fn advice_for_balance_hits_ttl_and_capacity() {
        let base = |keys, mem| ServerInfo {
            keys,
            used_memory: mem,
            ..Default::default()
        };
        let even = [
            reading("a", base(100, 1000), None),
            reading("b", base(110, 1100), None),
        ];
        assert!(assess("g", &even).is_empty());
        let skewed = [
            reading("a", base(10, 1000), None),
            reading("b", base(300, 9000), None),
        ];
        let a = assess("g", &skewed);
        assert!(
            a.iter().any(|l| l.contains("imbalanced shards: b")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|l| l.contains("imbalanced memory: b")),
            "{a:?}"
        );
        let cold = ServerInfo {
            hits: 10,
            misses: 190,
            ..Default::default()
        };
        assert!(assess("g", &[reading("a", cold, None)])[0].contains("low hit rate on a: 5.0%"));
        let full = ServerInfo {
            used_memory: 900,
            maxmemory: 1000,
            policy: "volatile-lru".into(),
            keys: 200,
            expires: 10,
            ..Default::default()
        };
        let a = assess("g", &[reading("a", full, Some(10.0))]);
        assert!(
            a.iter()
                .any(|l| l.contains("190 keys of 200 on a have no TTL")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|l| l.contains("uses 90% of maxmemory")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|l| l.contains("maxmemory in about 10 s")),
            "{a:?}"
        );
        let failed = Reading {
            info: Err("refused".into()),
            ..reading("a", ServerInfo::default(), None)
        };
        assert!(assess("g", &[failed]).is_empty());
        assert_eq!(human_secs(7200.0), "2.0 h");
        assert_eq!(human_secs(3.0 * 86400.0), "3.0 days");
    }
}
