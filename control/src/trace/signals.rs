//! Span signals: how many requests each process of a service answered, how many failed and how long they
//! took, per (service, host) and second — what release canary analysis compares between the canary hosts
//! and the baseline hosts (`release::engine`).
//!
//! Counted **before tail sampling**: the store keeps every error and slow trace but only a fraction of
//! the others, so error rates and latencies read from the store would be biased toward failure. Here every
//! entry span ([`SpanRec::is_entry`]: server or consumer spans, and roots) of a resource that names its
//! process (`host.name` or `service.instance.id`) is counted as it arrives, keyed by its service and
//! origin; spans without either cannot be told apart and are not counted.
//!
//! Bounded: buckets of one second, [`MAX_BUCKETS`] of them per series (older ones leave), a uniform sample
//! of at most [`LATENCIES_PER_BUCKET`] durations per bucket (reservoir sampling), at most [`MAX_SERIES`]
//! series (spans of further series are dropped and counted). Worst case ≈ 512 × 300 × (32 × 8 + 56) bytes
//! ≈ 48 MB; a series whose newest bucket is older than the retention is removed. In memory per control
//! node, like the agents' probe samples.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::model::{Origin, SpanRec};

/// Milliseconds per bucket.
pub const BUCKET_MS: u64 = 1_000;
/// Buckets kept per series (5 minutes).
pub const MAX_BUCKETS: usize = 300;
/// Durations sampled per bucket.
pub const LATENCIES_PER_BUCKET: usize = 32;
/// Series (service, origin) kept.
pub const MAX_SERIES: usize = 512;

/// Requests, errors and sampled latencies of some processes over some time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Entry spans.
    pub requests: u64,
    /// Failed ones among them.
    pub errors: u64,
    /// A uniform sample of their durations, µs.
    pub latencies_us: Vec<u64>,
}

struct Bucket {
    start_ms: u64,
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

/// The series key: service and origin (host, instance; the version is not part of it).
type Key = (Arc<str>, String, String);

/// The signals of every traced process, per second.
pub struct Signals {
    series: HashMap<Key, VecDeque<Bucket>>,
    rng: u64,
    /// Entry spans not counted because [`MAX_SERIES`] series exist.
    pub dropped: u64,
    /// Entry spans counted.
    pub counted: u64,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            series: HashMap::new(),
            rng: 0x2545_f491_4f6c_dd1d,
            dropped: 0,
            counted: 0,
        }
    }
}

/// Signals shared between the collector's worker (writes) and the release engine (reads).
pub type SharedSignals = Arc<Mutex<Signals>>;

impl Signals {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: a reservoir needs uniform indices, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Counts the entry spans of a batch that arrived at `now_ms`, and forgets what is older than the
    /// retention.
    pub fn add(&mut self, spans: &[SpanRec], now_ms: u64) {
        let start = now_ms - now_ms % BUCKET_MS;
        for s in spans {
            if !s.is_entry() || s.origin.key().is_empty() {
                continue;
            }
            let key: Key = (
                s.service.clone(),
                s.origin.host.clone(),
                s.origin.instance.clone(),
            );
            if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
                self.dropped += 1;
                continue;
            }
            let pick = self.next_random();
            let q = self.series.entry(key).or_default();
            if q.back().is_none_or(|b| b.start_ms != start) {
                if q.len() >= MAX_BUCKETS {
                    q.pop_front();
                }
                q.push_back(Bucket {
                    start_ms: start,
                    requests: 0,
                    errors: 0,
                    latencies_us: Vec::new(),
                });
            }
            let Some(b) = q.back_mut() else { continue };
            b.requests += 1;
            b.errors += u64::from(s.is_error());
            let us = s.duration_ns() / 1000;
            if b.latencies_us.len() < LATENCIES_PER_BUCKET {
                b.latencies_us.push(us);
            } else {
                // Reservoir: the n-th span replaces a random kept one with probability k/n.
                let j = (pick % b.requests) as usize;
                if let Some(slot) = b.latencies_us.get_mut(j) {
                    *slot = us;
                }
            }
            self.counted += 1;
        }
        let keep_from = start.saturating_sub(MAX_BUCKETS as u64 * BUCKET_MS);
        self.series
            .retain(|_, q| q.back().is_some_and(|b| b.start_ms >= keep_from));
    }

    /// The signals of `service` from processes on `hosts` (by `host.name` or `service.instance.id`) in
    /// the buckets that began at or after `since_ms` (a bucket that began before holds spans from before
    /// and is left out). None when none of those processes sent an entry span then.
    pub fn since(&self, service: &str, hosts: &[String], since_ms: u64) -> Option<Counts> {
        let mut out = Counts::default();
        let mut seen = false;
        for ((svc, host, instance), q) in &self.series {
            let origin = Origin {
                host: host.clone(),
                instance: instance.clone(),
                version: String::new(),
            };
            if &**svc != service || !hosts.iter().any(|h| origin.is_on(h)) {
                continue;
            }
            for b in q.iter().filter(|b| b.start_ms >= since_ms) {
                seen = true;
                out.requests += b.requests;
                out.errors += b.errors;
                out.latencies_us.extend_from_slice(&b.latencies_us);
            }
        }
        seen.then_some(out)
    }

    /// Series held now.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::otlp::Span;

    fn span(service: &str, host: &str, kind: u8, parent: u64, dur_us: u64, error: bool) -> SpanRec {
        SpanRec {
            service: Arc::from(service),
            origin: Arc::new(Origin {
                host: host.into(),
                instance: String::new(),
                version: "1".into(),
            }),
            span: Span {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_id: parent.to_be_bytes(),
                kind,
                start_ns: 1_000,
                end_ns: 1_000 + dur_us * 1_000,
                status: if error { 2 } else { 0 },
                ..Default::default()
            },
        }
    }

    #[test]
    fn entry_spans_are_counted_per_service_and_host_from_whole_buckets() {
        let mut s = Signals::default();
        // Before the window: left out with their bucket.
        s.add(&[span("web", "h1", 2, 7, 100, true)], 10_400);
        s.add(
            &[
                span("web", "h1", 2, 7, 100, false),
                span("web", "h1", 2, 7, 300, true),
                // A client span inside the service is not a request to it.
                span("web", "h1", 3, 7, 900, true),
                // A root of any kind is.
                span("web", "h1", 1, 0, 200, false),
                span("web", "h2", 2, 7, 50, false),
                span("db", "h1", 2, 7, 50, true),
                // No host: cannot be attributed.
                span("web", "", 2, 7, 50, true),
            ],
            11_200,
        );
        let h1 = s.since("web", &["h1".into()], 10_700).unwrap();
        assert_eq!((h1.requests, h1.errors), (3, 1));
        let mut l = h1.latencies_us.clone();
        l.sort_unstable();
        assert_eq!(l, vec![100, 200, 300]);
        let both = s.since("web", &["h1".into(), "h2".into()], 0).unwrap();
        assert_eq!((both.requests, both.errors), (5, 2));
        assert!(s.since("web", &["h3".into()], 0).is_none());
        assert!(s.since("web", &["h1".into()], 12_000).is_none());
        assert_eq!(s.counted, 6);
    }

    #[test]
    fn instance_ids_match_hosts_too() {
        let mut s = Signals::default();
        let mut x = span("web", "", 2, 7, 10, false);
        x.origin = Arc::new(Origin {
            host: String::new(),
            instance: "h9".into(),
            version: String::new(),
        });
        s.add(&[x], 5_000);
        assert_eq!(s.since("web", &["h9".into()], 0).unwrap().requests, 1);
    }

    #[test]
    fn memory_is_bounded_by_buckets_samples_series_and_age() {
        let mut s = Signals::default();
        let many: Vec<SpanRec> = (0..1_000)
            .map(|i| span("web", "h1", 2, 7, i, false))
            .collect();
        s.add(&many, 1_000);
        let c = s.since("web", &["h1".into()], 0).unwrap();
        assert_eq!(c.requests, 1_000);
        assert_eq!(c.latencies_us.len(), LATENCIES_PER_BUCKET);
        // The reservoir is a sample of the whole second, not its first spans.
        assert!(
            c.latencies_us.iter().any(|&l| l >= 500),
            "{:?}",
            c.latencies_us
        );
        for t in 0..(MAX_BUCKETS as u64 + 20) {
            s.add(&[span("web", "h1", 2, 7, 1, false)], 2_000 + t * BUCKET_MS);
        }
        let c = s.since("web", &["h1".into()], 0).unwrap();
        assert_eq!(c.requests, MAX_BUCKETS as u64);
        for i in 0..MAX_SERIES + 10 {
            s.add(&[span("web", &format!("x{i}"), 2, 7, 1, false)], 400_000);
        }
        assert_eq!(s.len(), MAX_SERIES);
        assert!(s.dropped >= 10);
        // Ten minutes later only the series that still send are kept.
        s.add(&[span("web", "h1", 2, 7, 1, false)], 1_000_000);
        assert_eq!(s.len(), 1);
    }
}
