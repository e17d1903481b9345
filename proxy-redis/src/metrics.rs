//! Per-command metrics and hot-key / big-key sampling.
//!
//! Each core counts in plain cells (no atomics on the request path) and publishes a copy every
//! [`PUBLISH_EVERY`] into the process-wide [`Registry`] (kept in [`crate::RedisShared`]) that the
//! admin port reads with [`snapshot`].
//! Samplers are bounded: at most [`TOP_K`] keys each.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a core publishes its counters.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Keys kept by each sampler.
pub const TOP_K: usize = 32;
/// One keyed command in this many is sampled for hot keys.
pub const HOT_SAMPLE_EVERY: u32 = 16;
/// Requests or replies at least this large count as big keys.
pub const BIG_KEY_BYTES: usize = 16 * 1024;
/// One single-key command in this many has its reply's size sampled for big keys (the key is kept
/// with the reply's destination until the reply is read; see `backend::SizedReply`).
pub const REPLY_SAMPLE_EVERY: u32 = 32;
/// Latency histogram buckets: bucket `i` counts latencies below `2^i` µs (the last: the rest).
pub const BUCKETS: usize = 24;

/// Counters of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Command name (`config|get` for subcommands).
    pub name: String,
    /// Calls answered.
    pub calls: u64,
    /// Error replies.
    pub errors: u64,
    /// Reply bytes.
    pub reply_bytes: u64,
    /// Latency histogram (µs, powers of two; see [`BUCKETS`]).
    pub latency_us: Vec<u64>,
}

/// A sampled key and its weight (hits for hot keys, bytes for big keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySample {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Sample count or size in bytes.
    pub value: u64,
}

/// What the admin port shows for one listener (summed over cores).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerMetrics {
    /// Listener name.
    pub listener: String,
    /// Per-command counters, most called first.
    pub commands: Vec<CommandStats>,
    /// Most frequently sampled keys, hottest first.
    pub hot_keys: Vec<KeySample>,
    /// Largest requests seen, by key, biggest first.
    pub big_keys: Vec<KeySample>,
    /// Largest replies seen, by key, biggest first (1 in [`REPLY_SAMPLE_EVERY`] single-key
    /// commands sampled).
    pub big_replies: Vec<KeySample>,
    /// Backend traffic: how well writes coalesce.
    pub backend: BackendWrites,
}

/// Write syscalls on backend connections and the requests they carried (summed over the
/// listener's backend connections): `requests / writes` is the coalescing factor that pipeline-1
/// throughput depends on (see `backend.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendWrites {
    /// `write` calls that sent bytes to a backend (plain TCP; through TLS: flushes).
    pub writes: u64,
    /// Requests queued to backends (each expects one reply; the connection handshake included).
    pub requests: u64,
}

impl BackendWrites {
    /// Requests per backend write (0 when nothing was written).
    pub fn requests_per_write(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            self.requests as f64 / self.writes as f64
        }
    }
}

/// Hashes a `&'static str` key by its address (command names are unique statics): one multiply
/// instead of SipHash over the text on every reply.
#[derive(Default, Clone, Copy)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Key of the per-command map: the name's address (and length).
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey(&'static str);

impl std::hash::Hash for NameKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
    }
}

type StatMap = HashMap<NameKey, Stat, std::hash::BuildHasherDefault<PtrHasher>>;

#[derive(Default, Clone)]
struct Stat {
    calls: u64,
    errors: u64,
    bytes: u64,
    hist: [u64; BUCKETS],
}

/// Bounded top-K by the space-saving algorithm (`bump`) or by maximum (`max`).
#[derive(Default, Clone)]
struct TopK {
    items: Vec<(Vec<u8>, u64)>,
}

impl TopK {
    fn bump(&mut self, key: &[u8]) {
        if let Some(e) = self.items.iter_mut().find(|e| e.0 == key) {
            e.1 += 1;
            return;
        }
        if self.items.len() < TOP_K {
            self.items.push((key.to_vec(), 1));
        } else if let Some(min) = self.items.iter_mut().min_by_key(|e| e.1) {
            *min = (key.to_vec(), min.1 + 1);
        }
    }

    fn max(&mut self, key: &[u8], v: u64) {
        if let Some(e) = self.items.iter_mut().find(|e| e.0 == key) {
            e.1 = e.1.max(v);
            return;
        }
        if self.items.len() < TOP_K {
            self.items.push((key.to_vec(), v));
        } else if let Some(min) = self.items.iter_mut().min_by_key(|e| e.1)
            && min.1 < v
        {
            *min = (key.to_vec(), v);
        }
    }
}

#[derive(Default, Clone)]
struct Published {
    stats: StatMap,
    hot: TopK,
    big: TopK,
    big_replies: TopK,
    backend: BackendWrites,
}

/// Per-listener sums: command stats, hot-key hits, big-key sizes (requests, replies).
type Acc = (
    HashMap<&'static str, Stat>,
    HashMap<Vec<u8>, u64>,
    HashMap<Vec<u8>, u64>,
    HashMap<Vec<u8>, u64>,
);

struct Entry {
    listener: String,
    data: Arc<Mutex<Published>>,
}

/// The metrics every core publishes, by listener (one per process, in [`crate::RedisShared`]).
#[derive(Default)]
pub struct Registry(Mutex<Vec<Entry>>);

/// One core's metrics for one listener.
pub struct CoreMetrics {
    stats: RefCell<StatMap>,
    hot: RefCell<TopK>,
    big: RefCell<TopK>,
    big_replies: RefCell<TopK>,
    tick: Cell<u32>,
    backend: Cell<BackendWrites>,
    shared: Arc<Mutex<Published>>,
    /// The listener's counters of this core (error replies are counted there too).
    listener: Option<Arc<runtime::ListenerStats>>,
}

impl CoreMetrics {
    /// Registers a core's metrics for `listener` in `registry`.
    pub fn register(registry: &Registry, listener: &str) -> Self {
        let shared = Arc::new(Mutex::new(Published::default()));
        registry
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Entry {
                listener: listener.to_string(),
                data: shared.clone(),
            });
        Self {
            stats: RefCell::default(),
            hot: RefCell::default(),
            big: RefCell::default(),
            big_replies: RefCell::default(),
            tick: Cell::new(0x9e37_79b9),
            backend: Cell::default(),
            shared,
            listener: None,
        }
    }

    /// Also counts error replies in the listener's counters.
    pub fn with_listener_stats(mut self, stats: Arc<runtime::ListenerStats>) -> Self {
        self.listener = Some(stats);
        self
    }

    /// Counts one reply of `cmd` that took `latency` (also in the listener's latency histogram).
    #[inline]
    pub fn reply(&self, cmd: &'static str, latency: Duration, bytes: usize, is_err: bool) {
        if let Some(l) = &self.listener {
            l.latency.record(latency);
        }
        self.count(cmd, latency, bytes, is_err);
    }

    #[inline]
    fn count(&self, cmd: &'static str, latency: Duration, bytes: usize, is_err: bool) {
        let mut stats = self.stats.borrow_mut();
        let s = stats.entry(NameKey(cmd)).or_default();
        s.calls += 1;
        s.errors += u64::from(is_err);
        if is_err && let Some(l) = &self.listener {
            runtime::ListenerStats::add(&l.errors, 1);
        }
        s.bytes += bytes as u64;
        let us = latency.as_micros() as u64;
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        if let Some(h) = s.hist.get_mut(b) {
            *h += 1;
        }
    }

    /// Counts `n` requests queued to a backend connection.
    #[inline]
    pub fn backend_requests(&self, n: u64) {
        let mut b = self.backend.get();
        b.requests += n;
        self.backend.set(b);
    }

    /// Counts `n` write calls to a backend connection.
    #[inline]
    pub fn backend_writes(&self, n: u64) {
        let mut b = self.backend.get();
        b.writes += n;
        self.backend.set(b);
    }

    /// Counts an error reply the proxy made for `cmd` (server ejected, offline, unavailable, timed
    /// out, overloaded): a request error like the server's own.
    #[inline]
    pub fn proxy_error(&self, cmd: &'static str, bytes: usize) {
        // Answered by the proxy itself: not a backend round trip, not in the latency histogram.
        self.count(cmd, Duration::ZERO, bytes, true);
    }

    /// Samples a key of a request of `size` bytes; true when the caller should also sample the
    /// size of its reply (1 in [`REPLY_SAMPLE_EVERY`]).
    #[inline]
    pub fn key(&self, key: &[u8], size: usize) -> bool {
        // xorshift: a random 1-in-N sample, so that periodic traffic cannot alias with the sampler.
        let mut x = self.tick.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.tick.set(x);
        if x.is_multiple_of(HOT_SAMPLE_EVERY) {
            self.hot.borrow_mut().bump(key);
        }
        if size >= BIG_KEY_BYTES {
            self.big.borrow_mut().max(key, size as u64);
        }
        // Other bits of the same draw: independent of the hot-key sample.
        (x >> 16).is_multiple_of(REPLY_SAMPLE_EVERY)
    }

    /// Records the reply size of a sampled command on `key` (kept when at least
    /// [`BIG_KEY_BYTES`]).
    pub fn big_reply(&self, key: &[u8], size: usize) {
        if size >= BIG_KEY_BYTES {
            self.big_replies.borrow_mut().max(key, size as u64);
        }
    }

    /// Copies the counters to the registry.
    pub fn publish(&self) {
        let mut p = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        p.stats.clone_from(&self.stats.borrow());
        p.hot.clone_from(&self.hot.borrow());
        p.big.clone_from(&self.big.borrow());
        p.big_replies.clone_from(&self.big_replies.borrow());
        p.backend = self.backend.get();
    }
}

/// Every listener's metrics in `registry`, summed over cores (what the admin port shows).
pub fn snapshot(registry: &Registry) -> Vec<ListenerMetrics> {
    let entries = registry.0.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<ListenerMetrics> = Vec::new();
    let mut by_listener: HashMap<String, Acc> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut backend: HashMap<String, BackendWrites> = HashMap::new();
    for e in entries.iter() {
        let p = e.data.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let acc = by_listener.entry(e.listener.clone()).or_insert_with(|| {
            order.push(e.listener.clone());
            Default::default()
        });
        let b = backend.entry(e.listener.clone()).or_default();
        b.writes += p.backend.writes;
        b.requests += p.backend.requests;
        for (name, s) in p.stats {
            let t = acc.0.entry(name.0).or_default();
            t.calls += s.calls;
            t.errors += s.errors;
            t.bytes += s.bytes;
            for (a, b) in t.hist.iter_mut().zip(s.hist) {
                *a += b;
            }
        }
        for (k, v) in p.hot.items {
            *acc.1.entry(k).or_default() += v;
        }
        for (k, v) in p.big.items {
            let e = acc.2.entry(k).or_default();
            *e = (*e).max(v);
        }
        for (k, v) in p.big_replies.items {
            let e = acc.3.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    for name in order {
        let Some((stats, hot, big, big_replies)) = by_listener.remove(&name) else {
            continue;
        };
        let mut commands: Vec<CommandStats> = stats
            .into_iter()
            .map(|(n, s)| CommandStats {
                name: n.to_string(),
                calls: s.calls,
                errors: s.errors,
                reply_bytes: s.bytes,
                latency_us: s.hist.to_vec(),
            })
            .collect();
        commands.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(&b.name)));
        let top = |m: HashMap<Vec<u8>, u64>| {
            let mut v: Vec<KeySample> = m
                .into_iter()
                .map(|(k, value)| KeySample {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    value,
                })
                .collect();
            v.sort_by(|a, b| b.value.cmp(&a.value).then(a.key.cmp(&b.key)));
            v.truncate(TOP_K);
            v
        };
        out.push(ListenerMetrics {
            backend: backend.get(&name).copied().unwrap_or_default(),
            listener: name,
            commands,
            hot_keys: top(hot),
            big_keys: top(big),
            big_replies: top(big_replies),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_reply_in_n_is_sampled() {
        let registry = Registry::default();
        let m = CoreMetrics::register(&registry, "sample-test");
        let n = 32_000;
        let sampled = (0..n).filter(|_| m.key(b"k", 10)).count();
        let want = n / REPLY_SAMPLE_EVERY as usize;
        assert!(
            sampled > want / 2 && sampled < want * 2,
            "{sampled} of {n} sampled, expected about {want}"
        );
    }

    #[test]
    fn topk_is_bounded_and_keeps_heavy_hitters() {
        let mut t = TopK::default();
        for i in 0..1000u32 {
            t.bump(format!("k{}", i % 100).as_bytes());
            t.bump(b"hot");
        }
        assert!(t.items.len() <= TOP_K);
        let hot = t.items.iter().find(|e| e.0 == b"hot").map(|e| e.1);
        assert!(hot.is_some_and(|h| h >= 1000));
    }

    #[test]
    fn published_metrics_are_summed() {
        let registry = Registry::default();
        let m = CoreMetrics::register(&registry, "metrics-test");
        m.reply("get", Duration::from_micros(3), 10, false);
        m.reply("get", Duration::from_micros(100), 10, true);
        m.big_reply(b"big", BIG_KEY_BYTES + 1);
        m.big_reply(b"small", BIG_KEY_BYTES - 1);
        m.key(b"big-request", BIG_KEY_BYTES);
        m.backend_requests(3);
        m.backend_writes(1);
        m.backend_requests(1);
        m.backend_writes(1);
        m.publish();
        let all = snapshot(&registry);
        let l = all
            .iter()
            .find(|l| l.listener == "metrics-test")
            .expect("registered");
        let get = l
            .commands
            .iter()
            .find(|c| c.name == "get")
            .expect("get counted");
        assert_eq!((get.calls, get.errors, get.reply_bytes), (2, 1, 20));
        assert_eq!(get.latency_us.iter().sum::<u64>(), 2);
        // Replies and requests are kept apart; small replies are not big keys.
        let keys = |v: &[KeySample]| v.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&l.big_replies), ["big"]);
        assert_eq!(keys(&l.big_keys), ["big-request"]);
        assert_eq!(
            l.backend,
            BackendWrites {
                writes: 2,
                requests: 4
            }
        );
        assert_eq!(l.backend.requests_per_write(), 2.0);
        assert_eq!(BackendWrites::default().requests_per_write(), 0.0);
    }
}
