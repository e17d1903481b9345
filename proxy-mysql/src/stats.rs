//! Process-wide, per-core, bounded statistics for the admin port: query digests (fingerprint → count,
//! errors, rows, latency histogram), the slow-query log and backend pool gauges.
//!
//! Each executor writes only its own [`CoreStats`] (an uncontended mutex: the admin port locks it
//! briefly to read). Everything is bounded: at most [`MAX_DIGESTS`] fingerprints per core (further
//! ones are counted in `overflow`), at most [`SLOW_LOG_MAX`] slow entries per core (oldest dropped
//! and counted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::pool::PoolStats;

/// Most distinct fingerprints kept per core.
pub const MAX_DIGESTS: usize = 4096;
/// Most slow-log entries kept per core.
pub const SLOW_LOG_MAX: usize = 512;
/// Latency histogram buckets: bucket i counts latencies below 2^(i+4) µs (the last one: the rest).
pub const HIST_BUCKETS: usize = 20;

/// Statistics of one fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestStats {
    /// Fingerprint hash.
    pub hash: u64,
    /// Normalised text.
    pub text: String,
    /// Executions.
    pub count: u64,
    /// Executions that ended in an error.
    pub errors: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Total latency in µs.
    pub total_us: u64,
    /// Largest latency in µs.
    pub max_us: u64,
    /// Latency histogram (see [`HIST_BUCKETS`]).
    pub hist: [u64; HIST_BUCKETS],
    /// The fingerprint's first statement, literals and all (for the admin port's `INDEX ADVICE`,
    /// which `EXPLAIN`s it; never shown by `SHOW DIGESTS`). Made once, when the fingerprint is new.
    pub sample: Option<Arc<DigestSample>>,
}

/// A statement of a fingerprint as it ran, with what is needed to run `EXPLAIN` on it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSample {
    /// The statement text (cut at 4 KiB; a cut statement is not explained).
    pub sql: String,
    /// Whether `sql` was cut.
    pub cut: bool,
    /// The group it ran in.
    pub group: String,
    /// The session's schema when it ran.
    pub schema: Option<String>,
    /// Whether it ran on a sharded listener (its table names are logical ones).
    pub sharded: bool,
}

/// Longest statement text kept as a digest's sample.
pub const SAMPLE_MAX: usize = 4096;

impl DigestSample {
    /// A sample of `sql` as run in `group` with `schema`.
    pub fn new(sql: &str, group: &str, schema: Option<&str>, sharded: bool) -> DigestSample {
        let mut end = sql.len().min(SAMPLE_MAX);
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        DigestSample {
            sql: sql[..end].to_string(),
            cut: end < sql.len(),
            group: group.to_string(),
            schema: schema.map(str::to_string),
            sharded,
        }
    }
}

/// One slow-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowEntry {
    /// When the statement finished.
    pub at: SystemTime,
    /// Proxy user.
    pub user: String,
    /// Server that ran it.
    pub backend: String,
    /// Latency in µs.
    pub took_us: u64,
    /// Statement text (truncated to 1 KiB).
    pub sql: String,
}

/// One core's statistics.
#[derive(Debug, Default)]
pub struct CoreStats {
    digests: router::FastMap<u64, DigestStats>,
    overflow: u64,
    slow: VecDeque<SlowEntry>,
    slow_dropped: u64,
    pools: Vec<PoolStats>,
    /// Statement cache hits and misses (plain listeners), as last published.
    stmt_cache: (u64, u64),
}

/// The statistics of every core of the process (in [`crate::core::MysqlShared`]; read by
/// [`crate::metrics`]).
pub struct Registry {
    cores: Mutex<Vec<Arc<Mutex<CoreStats>>>>,
    slow_threshold_us: Arc<AtomicU64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            cores: Mutex::new(Vec::new()),
            slow_threshold_us: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

/// One core's statistics as its code writes them (in [`crate::core::CoreCtx`]): its own
/// [`CoreStats`] and the process-wide slow-log override.
pub struct Local {
    own: Arc<Mutex<CoreStats>>,
    slow_threshold_us: Arc<AtomicU64>,
}

impl Registry {
    /// A new core's statistics, registered for the admin port.
    pub(crate) fn add_core(&self) -> Local {
        let cs = Arc::new(Mutex::new(CoreStats::default()));
        self.cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cs.clone());
        Local {
            own: cs,
            slow_threshold_us: self.slow_threshold_us.clone(),
        }
    }

    fn cores(&self) -> Vec<Arc<Mutex<CoreStats>>> {
        self.cores.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn with_local<R>(core: &Local, f: impl FnOnce(&mut CoreStats) -> R) -> R {
    let mut g = core.own.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

fn bucket(us: u64) -> usize {
    let b = (64 - us.leading_zeros()) as usize;
    b.saturating_sub(4).min(HIST_BUCKETS - 1)
}

/// Records one executed statement on this core; `sample` is called only for a new fingerprint.
pub fn record(
    core: &Local,
    d: &router::sql::Digest,
    took: Duration,
    rows: u64,
    error: bool,
    sample: impl FnOnce() -> DigestSample,
) {
    let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
    with_local(core, |cs| {
        let len = cs.digests.len();
        let e = match cs.digests.get_mut(&d.hash) {
            Some(e) => e,
            None if len < MAX_DIGESTS => cs.digests.entry(d.hash).or_insert_with(|| DigestStats {
                hash: d.hash,
                text: d.text.clone(),
                sample: Some(Arc::new(sample())),
                ..Default::default()
            }),
            None => {
                cs.overflow += 1;
                return;
            }
        };
        e.count += 1;
        e.errors += u64::from(error);
        e.rows += rows;
        e.total_us += us;
        e.max_us = e.max_us.max(us);
        e.hist[bucket(us)] += 1;
    });
}

/// Records a slow statement if `took` is at least `threshold` (the group's `slow_query_ms`) or the
/// process-wide override set by [`set_slow_threshold`], whichever is lower.
pub fn maybe_slow(
    core: &Local,
    user: &str,
    backend: &str,
    sql: &str,
    took: Duration,
    threshold: Duration,
) {
    let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
    let limit = (threshold.as_micros().min(u128::from(u64::MAX)) as u64)
        .min(core.slow_threshold_us.load(Relaxed));
    if us < limit {
        return;
    }
    let mut end = sql.len().min(1024);
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    let entry = SlowEntry {
        at: SystemTime::now(),
        user: user.to_string(),
        backend: backend.to_string(),
        took_us: us,
        sql: sql[..end].to_string(),
    };
    with_local(core, |cs| {
        if cs.slow.len() >= SLOW_LOG_MAX {
            cs.slow.pop_front();
            cs.slow_dropped += 1;
        }
        cs.slow.push_back(entry);
    });
}

/// Publishes this core's pool gauges.
pub fn publish_pools(core: &Local, p: Vec<PoolStats>) {
    with_local(core, |cs| cs.pools = p);
}

/// Publishes this core's statement-cache counters (hits, misses) for the admin port.
pub fn publish_stmt_cache(core: &Local, hits_misses: (u64, u64)) {
    with_local(core, |cs| cs.stmt_cache = hits_misses);
}

/// The admin port's reads (through [`crate::metrics`]): sums over the cores.
impl Registry {
    /// Statement-cache hits and misses summed over cores (as last published, once a second).
    pub(crate) fn stmt_cache(&self) -> (u64, u64) {
        self.cores().iter().fold((0, 0), |(h, m), c| {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            (h + c.stmt_cache.0, m + c.stmt_cache.1)
        })
    }

    /// Lowers the slow-log threshold of every group to `t`.
    pub(crate) fn set_slow_threshold(&self, t: Duration) {
        self.slow_threshold_us
            .store(t.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// Query digests merged over cores, most executed first, and the executions not tracked.
    pub(crate) fn digests(&self) -> (Vec<DigestStats>, u64) {
        let mut merged: HashMap<u64, DigestStats> = HashMap::new();
        let mut overflow = 0;
        for c in self.cores() {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            overflow += c.overflow;
            for (h, d) in &c.digests {
                let m = merged.entry(*h).or_insert_with(|| DigestStats {
                    hash: *h,
                    text: d.text.clone(),
                    ..Default::default()
                });
                if m.sample.is_none() {
                    m.sample = d.sample.clone();
                }
                m.count += d.count;
                m.errors += d.errors;
                m.rows += d.rows;
                m.total_us += d.total_us;
                m.max_us = m.max_us.max(d.max_us);
                for (a, b) in m.hist.iter_mut().zip(d.hist.iter()) {
                    *a += b;
                }
            }
        }
        let mut v: Vec<_> = merged.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.hash.cmp(&b.hash)));
        (v, overflow)
    }

    /// Clears the digest tables of every core.
    pub(crate) fn reset_digests(&self) {
        for c in self.cores() {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            c.digests.clear();
            c.overflow = 0;
        }
    }

    /// The newest `limit` slow-log entries over all cores (newest first) and the number dropped.
    pub(crate) fn slow_log(&self, limit: usize) -> (Vec<SlowEntry>, u64) {
        let mut all = Vec::new();
        let mut dropped = 0;
        for c in self.cores() {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            dropped += c.slow_dropped;
            all.extend(c.slow.iter().cloned());
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.at));
        all.truncate(limit);
        (all, dropped)
    }

    /// Backend pool gauges of every core (one row per core and server).
    pub(crate) fn pool_stats(&self) -> Vec<PoolStats> {
        let mut out = Vec::new();
        for c in self.cores() {
            out.extend(
                c.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pools
                    .iter()
                    .cloned(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CoreCtx, MysqlShared};

    #[test]
    fn buckets_are_log2() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(15), 0);
        assert_eq!(bucket(16), 1);
        assert_eq!(bucket(1000), 6);
        assert_eq!(bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn digests_merge_and_bound() {
        let shared = Arc::new(MysqlShared::default());
        let core = CoreCtx::with_registry(shared.clone());
        let d = router::sql::digest("SELECT 1 FROM stats_test_table");
        let sample = || DigestSample::new("SELECT 1 FROM stats_test_table", "g", Some("db"), false);
        record(
            &core.stats,
            &d,
            Duration::from_micros(100),
            1,
            false,
            sample,
        );
        record(&core.stats, &d, Duration::from_micros(300), 2, true, || {
            unreachable!("a known fingerprint takes no new sample")
        });
        let (all, _) = shared.stats.digests();
        let e = all
            .iter()
            .find(|e| e.hash == d.hash)
            .cloned()
            .unwrap_or_default();
        assert_eq!((e.count, e.errors, e.rows, e.max_us), (2, 1, 3, 300));
        let kept = e.sample.expect("a sample");
        assert_eq!(
            (kept.group.as_str(), kept.schema.as_deref()),
            ("g", Some("db"))
        );
        let long = format!("SELECT '{}'", "é".repeat(SAMPLE_MAX));
        let cut = DigestSample::new(&long, "g", None, true);
        assert!(cut.cut && cut.sql.len() <= SAMPLE_MAX && long.starts_with(&cut.sql));
        shared.stats.set_slow_threshold(Duration::from_micros(50));
        maybe_slow(
            &core.stats,
            "u",
            "b",
            "SELECT slow",
            Duration::from_micros(60),
            Duration::from_secs(1),
        );
        assert!(
            shared
                .stats
                .slow_log(10)
                .0
                .iter()
                .any(|s| s.sql == "SELECT slow")
        );
    }
}
