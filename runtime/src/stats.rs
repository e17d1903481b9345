//! Counters owned by one executor each and read by the admin port and `/metrics`.
//!
//! Each (listener, core) pair has its own [`ListenerStats`] in its own allocation, written only by that
//! core with relaxed atomics (no contention, no shared cache line between cores) and summed on read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters of one listener on one core.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Client connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused (limits, ACL).
    pub rejected: AtomicU64,
    /// Requests (commands, statements) received.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Request latencies (redis: command queued to reply read; mysql: statement sent to its result read).
    pub latency: Latency,
}

impl ListenerStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` from a gauge.
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).saturating_sub(n), Relaxed);
    }
}

/// Buckets of a [`Latency`] histogram: four per power of two of microseconds (each at most 25 % wide),
/// from 1 µs up to 2^36 µs (about 19 hours); the last bucket takes everything longer.
pub const LATENCY_BUCKETS: usize = 4 + 34 * 4;

/// The bucket of a latency of `us` microseconds: `0..4` exact, then four per power of two.
#[inline]
pub fn latency_bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // 2 ..= 63
    let sub = ((us >> (e - 2)) & 3) as usize;
    (4 + (e - 2) * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// The smallest latency (µs) that falls in bucket `i` (its upper bound is `latency_bucket_floor(i + 1)`).
pub fn latency_bucket_floor(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = (i - 4) / 4 + 2;
    let sub = ((i - 4) % 4) as u64;
    (4 + sub) << (e - 2)
}

/// Request latencies of one listener on one core: fixed log-scale buckets, written by that core alone
/// (a relaxed load and store per request, no read-modify-write, no lock, no allocation) and merged into a
/// [`LatencyHistogram`] when read.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    /// Counts one request that took `us` microseconds.
    #[inline]
    pub fn record_us(&self, us: u64) {
        ListenerStats::add(&self.buckets[latency_bucket(us)], 1);
    }

    /// Counts one request that took `d`.
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds this core's counts into `into`.
    pub fn merge_into(&self, into: &mut LatencyHistogram) {
        for (c, b) in into.counts.iter_mut().zip(&self.buckets) {
            *c += b.load(Relaxed);
        }
    }
}

/// A read latency histogram (sums over cores, or the difference of two readings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; LATENCY_BUCKETS],
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency (for tests and callers that hold a histogram of their own).
    pub fn record_us(&mut self, us: u64) {
        self.counts[latency_bucket(us)] += 1;
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The counts since an earlier reading `before` of the same series (a bucket that went backwards,
    /// as after a restart, counts from zero).
    pub fn since(&self, before: &LatencyHistogram) -> LatencyHistogram {
        let counts = self
            .counts
            .iter()
            .zip(&before.counts)
            .map(|(a, b)| a.checked_sub(*b).unwrap_or(*a))
            .collect();
        LatencyHistogram { counts }
    }

    /// The `q` quantile (0.0–1.0) in microseconds, interpolated linearly inside its bucket (so within the
    /// bucket's 25 % of the true value); 0 when nothing was counted.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        // The rank of the wanted request, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c >= rank {
                let lo = latency_bucket_floor(i);
                if i + 1 >= LATENCY_BUCKETS {
                    return lo;
                }
                let hi = latency_bucket_floor(i + 1);
                let within = (rank - seen) as f64 / c as f64;
                return lo + ((hi - lo - 1) as f64 * within).round() as u64;
            }
            seen += c;
        }
        0
    }

    /// The sum of the latencies counted, estimated from the bucket midpoints (µs).
    pub fn estimated_sum_us(&self) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let lo = latency_bucket_floor(i);
                let hi = latency_bucket_floor(i + 1).max(lo + 1);
                c.saturating_mul(lo + (hi - lo - 1) / 2)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Cumulative counts at every power of two of microseconds, `(upper bound µs, requests <= it)`, for
    /// Prometheus `le` buckets (exact: powers of two are bucket boundaries). The last pair is the total.
    pub fn cumulative_pow2(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(40);
        let mut acc = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c;
            let next = latency_bucket_floor(i + 1);
            // Bucket i holds [floor(i), floor(i+1)); "<= next - 1" ends here. Report at bounds 2^k.
            if i + 1 < LATENCY_BUCKETS && next.is_power_of_two() {
                out.push((next, acc));
            }
        }
        out
    }
}

/// Sums over cores of one listener's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerTotals {
    /// Listener name.
    pub name: String,
    /// Protocol (`redis` / `mysql`).
    pub kind: String,
    /// Bound address.
    pub address: String,
    /// Open client connections.
    pub connections: u64,
    /// Accepted since start.
    pub accepted: u64,
    /// Refused.
    pub rejected: u64,
    /// Requests.
    pub requests: u64,
    /// Error replies.
    pub errors: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Request latencies.
    pub latency: LatencyHistogram,
}

struct Entry {
    name: String,
    kind: String,
    address: String,
    per_core: Vec<Arc<ListenerStats>>,
}

/// All listeners' counters. Registration happens at start-up; reads take a short lock (never on the
/// data path: executors hold their own `Arc<ListenerStats>`).
#[derive(Default)]
pub struct StatsRegistry {
    entries: Mutex<Vec<Entry>>,
}

impl StatsRegistry {
    /// Registers (or finds) the counters of `listener` for one more core.
    pub fn register(&self, listener: &str, kind: &str, address: &str) -> Arc<ListenerStats> {
        let stats = Arc::new(ListenerStats::default());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.iter_mut().find(|e| e.name == listener) {
            Some(e) => e.per_core.push(stats.clone()),
            None => entries.push(Entry {
                name: listener.to_string(),
                kind: kind.to_string(),
                address: address.to_string(),
                per_core: vec![stats.clone()],
            }),
        }
        stats
    }

    /// Totals per listener, in registration order.
    pub fn totals(&self) -> Vec<ListenerTotals> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|e| {
                let mut t = ListenerTotals {
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    address: e.address.clone(),
                    ..Default::default()
                };
                for s in &e.per_core {
                    t.connections += s.connections.load(Relaxed);
                    t.accepted += s.accepted.load(Relaxed);
                    t.rejected += s.rejected.load(Relaxed);
                    t.requests += s.requests.load(Relaxed);
                    t.errors += s.errors.load(Relaxed);
                    t.bytes_in += s.bytes_in.load(Relaxed);
                    t.bytes_out += s.bytes_out.load(Relaxed);
                    s.latency.merge_into(&mut t.latency);
                }
                t
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_over_cores() {
        let r = StatsRegistry::default();
        let a = r.register("cache", "redis", "127.0.0.1:1");
        let b = r.register("cache", "redis", "127.0.0.1:1");
        ListenerStats::add(&a.requests, 3);
        ListenerStats::add(&b.requests, 4);
        ListenerStats::add(&b.connections, 2);
        ListenerStats::sub(&b.connections, 1);
        let t = r.totals();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].requests, 7);
        assert_eq!(t[0].connections, 1);
    }

    #[test]
    fn latency_buckets_are_log_scale_and_contiguous() {
        // Exact below 4 µs, then four per power of two.
        assert_eq!((0..4).map(latency_bucket).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(latency_bucket(4), 4);
        assert_eq!(latency_bucket(5), 5);
        assert_eq!(latency_bucket(7), 7);
        assert_eq!(latency_bucket(8), 8);
        assert_eq!(latency_bucket(9), 8);
        assert_eq!(latency_bucket(10), 9);
        assert_eq!(latency_bucket(1023), 35);
        assert_eq!(latency_bucket(1024), 36);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        // Every bucket's floor maps to it, the value below to the previous one, and widths stay <= 25 %.
        for i in 1..LATENCY_BUCKETS {
            let f = latency_bucket_floor(i);
            assert_eq!(latency_bucket(f), i, "floor of {i}");
            assert_eq!(latency_bucket(f - 1), i - 1, "below floor of {i}");
            if i >= 4 && i + 1 < LATENCY_BUCKETS {
                let w = latency_bucket_floor(i + 1) - f;
                assert!(w * 4 <= f, "bucket {i} [{f}, +{w}) wider than 25 %");
            }
        }
        // The last bucket starts at 2^36 µs and takes everything beyond.
        assert_eq!(latency_bucket_floor(LATENCY_BUCKETS - 1), 7 << 33);
        assert_eq!(latency_bucket(1 << 40), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn latency_quantiles_merge_and_windows() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.5), 0);
        // 1000 requests of 100 µs, 10 of 10 ms, 1 of 1 s.
        for _ in 0..1000 {
            h.record_us(100);
        }
        for _ in 0..10 {
            h.record_us(10_000);
        }
        h.record_us(1_000_000);
        assert_eq!(h.count(), 1011);
        // Within a bucket (at most 25 % wide) of the true value.
        let near = |got: u64, want: u64| got * 4 >= want * 3 && got * 4 <= want * 5;
        assert!(near(h.quantile_us(0.5), 100), "{}", h.quantile_us(0.5));
        assert!(near(h.quantile_us(0.98), 100), "{}", h.quantile_us(0.98));
        assert!(
            near(h.quantile_us(0.995), 10_000),
            "{}",
            h.quantile_us(0.995)
        );
        assert!(
            near(h.quantile_us(1.0), 1_000_000),
            "{}",
            h.quantile_us(1.0)
        );
        // Merging per-core histograms (as `totals` does) adds counts.
        let r = StatsRegistry::default();
        let a = r.register("db", "mysql", "127.0.0.1:1");
        let b = r.register("db", "mysql", "127.0.0.1:1");
        a.latency.record(std::time::Duration::from_micros(50));
        b.latency.record_us(50);
        b.latency.record_us(5000);
        let t = &r.totals()[0].latency;
        assert_eq!(t.count(), 3);
        assert!(near(t.quantile_us(0.5), 50));
        assert!(near(t.quantile_us(0.999), 5000));
        let mut m = h.clone();
        m.merge(t);
        assert_eq!(m.count(), 1014);
        // A window: the difference of two readings.
        let w = m.since(&h);
        assert_eq!(&w, t);
        // Prometheus buckets: cumulative at powers of two, exact.
        let c = t.cumulative_pow2();
        assert!(
            c.windows(2)
                .all(|x| x[0].0 * 2 == x[1].0 && x[0].1 <= x[1].1)
        );
        let le = |bound: u64| c.iter().find(|x| x.0 == bound).map(|x| x.1);
        assert_eq!(le(32), Some(0));
        assert_eq!(le(64), Some(2));
        assert_eq!(le(4096), Some(2));
        assert_eq!(le(8192), Some(3));
        assert_eq!(c.last().map(|x| x.1), Some(3));
    }
}
