//! Per-version call statistics: clients (the library's [`CallRecorder`]) and proxies report the calls they
//! made to a service's instances, by instance version, with a latency histogram (`router::latency`); the
//! center adds them up and answers them per service (`GET SVC/calls`), with a last-minute view beside the
//! totals.
//!
//! Where they live: with the jobs runtime attached (`furrow control` always attaches it), in the runtime
//! tables next to the store ([`SharedCalls`]: `furrow_call_stats`, `furrow_call_reporters`), so that every
//! node over the same MariaDB answers the same numbers and a restart loses nothing; otherwise (a center
//! embedded in a test) in this node's memory ([`CallStats`]). Bounded either way: at most
//! [`MAX_VERSIONS`] versions per service, [`MAX_REPORT`] entries per report; in memory at most
//! [`MAX_SERVICES`] services; in the tables one totals row per version plus the slices of the last two
//! minutes (older slices are deleted by the next report of the service) and the reporters of the last
//! minute.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use router::latency::BUCKETS;
use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::error::{ControlError, Result};

/// The most versions counted per service (a report naming more is refused).
pub const MAX_VERSIONS: usize = 256;
/// The most services counted per node in memory (the idlest ones are dropped first).
pub const MAX_SERVICES: usize = 10_000;
/// The most entries in one report.
pub const MAX_REPORT: usize = 256;
/// Slices of the last-minute view.
const SLICES: usize = 6;
/// One slice, ms.
const SLICE_MS: u64 = 10_000;

/// Calls to the instances of one version, as reported (counts since the reporter's last report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionCalls {
    /// The instances' version (`""` for instances without one).
    pub version: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    #[serde(default)]
    pub errors: u64,
    /// The calls' latencies added up, µs.
    #[serde(default)]
    pub latency_us: u64,
    /// The slowest call, µs.
    #[serde(default)]
    pub max_latency_us: u64,
    /// The calls by latency bucket (`router::latency::BOUNDS_US`, then the overflow: 17 counts), or
    /// empty when the reporter keeps no histogram.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
}

impl VersionCalls {
    /// Adds `c`'s counts (histograms summed).
    fn add(&mut self, c: &VersionCalls) {
        self.calls = self.calls.saturating_add(c.calls);
        self.errors = self.errors.saturating_add(c.errors);
        self.latency_us = self.latency_us.saturating_add(c.latency_us);
        self.max_latency_us = self.max_latency_us.max(c.max_latency_us);
        if c.buckets.len() == BUCKETS {
            self.buckets.resize(BUCKETS, 0);
            for (a, b) in self.buckets.iter_mut().zip(&c.buckets) {
                *a = a.saturating_add(*b);
            }
        }
    }
}

/// A report (`POST SVC/calls`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallReport {
    /// Who reports (an application instance, a proxy): counted, not trusted.
    pub reporter: String,
    /// Counts per version since the reporter's last report.
    pub calls: Vec<VersionCalls>,
}

/// The sums of one version: in total, and per slice of the last minute.
#[derive(Clone, Debug, Default)]
struct Sums {
    total: VersionCalls,
    /// (slice number, its sums)
    slices: [(u64, VersionCalls); SLICES],
}

#[derive(Debug, Default)]
struct ServiceCalls {
    versions: BTreeMap<String, Sums>,
    /// Reporter → when it last reported, ms.
    reporters: HashMap<String, u64>,
    last_ms: u64,
}

/// What `GET SVC/calls` answers for one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// The version.
    pub version: String,
    /// Calls in total (since the node started, in memory; since the statistics began, in the store).
    pub calls: u64,
    /// Failed calls in total.
    pub errors: u64,
    /// errors / calls.
    pub error_ratio: f64,
    /// Mean latency, ms.
    pub avg_latency_ms: f64,
    /// The slowest call reported, ms.
    pub max_latency_ms: f64,
    /// Calls in the last minute.
    pub minute_calls: u64,
    /// Failed calls in the last minute.
    pub minute_errors: u64,
    /// Mean latency in the last minute, ms.
    pub minute_avg_latency_ms: f64,
    /// The median latency in total (the upper bound of its histogram bucket), ms; None when no
    /// reporter sent a histogram.
    #[serde(default)]
    pub p50_latency_ms: Option<f64>,
    /// The 99th percentile latency in total (the upper bound of its bucket), ms.
    #[serde(default)]
    pub p99_latency_ms: Option<f64>,
    /// The median latency in the last minute, ms.
    #[serde(default)]
    pub minute_p50_latency_ms: Option<f64>,
    /// The 99th percentile latency in the last minute, ms.
    #[serde(default)]
    pub minute_p99_latency_ms: Option<f64>,
}

/// What `GET SVC/calls` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallsView {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// Reporters heard from in the last minute.
    pub reporters: usize,
    /// Per version, by version.
    pub versions: Vec<VersionView>,
    /// Where the statistics live: `"store"` (the runtime tables: shared by every node over the same
    /// database, kept across restarts) or `"memory"` (this node only, since it started).
    #[serde(default)]
    pub kept_in: String,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn quantile_ms(buckets: &[u64], q: f64) -> Option<f64> {
    router::latency::quantile_us(buckets, q).map(|us| us as f64 / 1000.0)
}

/// The view of one version from its totals and its last minute's sums.
fn version_view(total: &VersionCalls, minute: &VersionCalls) -> VersionView {
    VersionView {
        version: total.version.clone(),
        calls: total.calls,
        errors: total.errors,
        error_ratio: ratio(total.errors, total.calls),
        avg_latency_ms: ratio(total.latency_us, total.calls) / 1000.0,
        max_latency_ms: total.max_latency_us as f64 / 1000.0,
        minute_calls: minute.calls,
        minute_errors: minute.errors,
        minute_avg_latency_ms: ratio(minute.latency_us, minute.calls) / 1000.0,
        p50_latency_ms: quantile_ms(&total.buckets, 0.5),
        p99_latency_ms: quantile_ms(&total.buckets, 0.99),
        minute_p50_latency_ms: quantile_ms(&minute.buckets, 0.5),
        minute_p99_latency_ms: quantile_ms(&minute.buckets, 0.99),
    }
}

/// Checks a report: refused (400 naming the field) when it is too large, names a version longer than
/// 128 bytes, counts more errors than calls, or carries a histogram that is not one.
pub fn check_report(r: &CallReport) -> Result<()> {
    if r.reporter.is_empty() || r.reporter.len() > 256 {
        return Err(ControlError::bad("reporter", "reporter is 1-256 bytes"));
    }
    if r.calls.len() > MAX_REPORT {
        return Err(ControlError::bad(
            "calls",
            format!("at most {MAX_REPORT} entries per report"),
        ));
    }
    for (i, c) in r.calls.iter().enumerate() {
        if c.version.len() > 128 {
            return Err(ControlError::bad(
                &format!("calls/{i}/version"),
                "a version is at most 128 bytes",
            ));
        }
        if c.errors > c.calls {
            return Err(ControlError::bad(
                &format!("calls/{i}/errors"),
                "errors cannot exceed calls",
            ));
        }
        if !c.buckets.is_empty()
            && (c.buckets.len() != BUCKETS
                || c.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b)) > c.calls)
        {
            return Err(ControlError::bad(
                &format!("calls/{i}/buckets"),
                format!(
                    "a histogram is {BUCKETS} counts (router::latency) adding up to at most calls"
                ),
            ));
        }
    }
    Ok(())
}

/// A node's call statistics in memory (when no runtime tables are attached).
#[derive(Debug, Default)]
pub struct CallStats {
    inner: Mutex<HashMap<(String, String), ServiceCalls>>,
}

impl CallStats {
    /// Adds a report for `(env, service)` at `now_ms`. Refused (400 naming the field) as
    /// [`check_report`] says, or when it would take the service past [`MAX_VERSIONS`].
    pub fn report(&self, env: &str, service: &str, r: &CallReport, now_ms: u64) -> Result<()> {
        check_report(r)?;
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (env.to_string(), service.to_string());
        if !m.contains_key(&key) && m.len() >= MAX_SERVICES {
            let idlest = m
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = idlest {
                m.remove(&k);
            }
        }
        let s = m.entry(key).or_default();
        let new = r
            .calls
            .iter()
            .filter(|c| !s.versions.contains_key(&c.version))
            .map(|c| &c.version)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if s.versions.len() + new > MAX_VERSIONS {
            return Err(ControlError::bad(
                "calls",
                format!("at most {MAX_VERSIONS} versions per service"),
            ));
        }
        let slice = now_ms / SLICE_MS;
        for c in &r.calls {
            let v = s.versions.entry(c.version.clone()).or_default();
            v.total.version.clone_from(&c.version);
            v.total.add(c);
            let at = &mut v.slices[(slice % SLICES as u64) as usize];
            if at.0 != slice {
                *at = (slice, VersionCalls::default());
            }
            at.1.add(c);
        }
        if s.reporters.len() >= 1024 {
            s.reporters
                .retain(|_, at| now_ms.saturating_sub(*at) < 60_000);
        }
        if s.reporters.len() < 1024 || s.reporters.contains_key(&r.reporter) {
            s.reporters.insert(r.reporter.clone(), now_ms);
        }
        s.last_ms = now_ms;
        Ok(())
    }

    /// The statistics of `(env, service)` at `now_ms` (no versions when nothing was reported).
    pub fn read(&self, env: &str, service: &str, now_ms: u64) -> CallsView {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = m.get(&(env.to_string(), service.to_string()));
        let slice = now_ms / SLICE_MS;
        let versions = s
            .map(|s| {
                s.versions
                    .values()
                    .map(|v| {
                        let mut minute = VersionCalls::default();
                        for (n, sums) in &v.slices {
                            if *n + SLICES as u64 > slice {
                                minute.add(sums);
                            }
                        }
                        version_view(&v.total, &minute)
                    })
                    .collect()
            })
            .unwrap_or_default();
        CallsView {
            env: env.into(),
            service: service.into(),
            reporters: s.map_or(0, |s| {
                s.reporters
                    .values()
                    .filter(|at| now_ms.saturating_sub(**at) < 60_000)
                    .count()
            }),
            versions,
            kept_in: "memory".into(),
        }
    }
}

/// The runtime tables of call statistics (next to the store, in the jobs runtime database): one row
/// per `(env, service, version, slice)` — slice 0 holds the totals, others a 10 s slice of the last two
/// minutes — and one per reporter heard from in the last minute. A report is one transaction of
/// upserts that add to the rows (every node adds to the same rows, so two nodes agree); reads sum the
/// minute's slices.
pub struct SharedCalls;

const SHARED_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS furrow_call_stats (env VARCHAR(128) NOT NULL, service VARCHAR(128) NOT NULL, \
     version VARCHAR(128) NOT NULL, slice BIGINT NOT NULL, calls BIGINT NOT NULL, errors BIGINT NOT NULL, \
     latency_us BIGINT NOT NULL, max_latency_us BIGINT NOT NULL, buckets VARCHAR(512) NOT NULL, \
     PRIMARY KEY (env, service, version, slice))",
    "CREATE TABLE IF NOT EXISTS furrow_call_reporters (env VARCHAR(128) NOT NULL, service VARCHAR(128) NOT NULL, \
     reporter VARCHAR(256) NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (env, service, reporter))",
];

fn db_err(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(
        crate::error::ErrorCode::StoreUnavailable,
        format!("call statistics: {e}"),
    )
}

fn buckets_text(b: &[u64]) -> String {
    b.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn buckets_parse(s: &str) -> Vec<u64> {
    if s.is_empty() {
        return Vec::new();
    }
    let v: Vec<u64> = s.split(',').filter_map(|x| x.parse().ok()).collect();
    if v.len() == BUCKETS { v } else { Vec::new() }
}

fn cell_u64(row: &[Option<String>], i: usize) -> u64 {
    row.get(i)
        .and_then(|c| c.as_deref())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl SharedCalls {
    /// Creates the tables when missing.
    pub fn init(db: &crate::jobs::db::JobDb) -> Result<()> {
        let mysql = db.dialect() == crate::jobs::db::Dialect::Mysql;
        db.tx(|s| {
            for q in SHARED_SCHEMA {
                if mysql {
                    s.q(&format!("{q} ENGINE=InnoDB"))?;
                } else {
                    s.q(q)?;
                }
            }
            Ok(())
        })
    }

    /// Adds a report for `(env, service)` at `now_ms`, as [`CallStats::report`] does, to the tables.
    pub fn report(
        db: &crate::jobs::db::JobDb,
        env: &str,
        service: &str,
        r: &CallReport,
        now_ms: u64,
    ) -> Result<()> {
        check_report(r)?;
        // Reports from one reporter name each version once; merge repeats anyway.
        let mut merged: BTreeMap<&str, VersionCalls> = BTreeMap::new();
        for c in &r.calls {
            merged.entry(&c.version).or_default().add(c);
        }
        let slice = now_ms / SLICE_MS;
        let mysql = db.dialect() == crate::jobs::db::Dialect::Mysql;
        let refused = std::cell::Cell::new(false);
        db.tx(|s| {
            let (e, svc) = (s.lit(env), s.lit(service));
            let known: std::collections::BTreeSet<String> = s
                .q(&format!(
                    "SELECT version FROM furrow_call_stats WHERE env = {e} AND service = {svc} AND slice = 0"
                ))?
                .into_iter()
                .filter_map(|row| row.into_iter().next().flatten())
                .collect();
            let new = merged.keys().filter(|v| !known.contains(**v)).count();
            if known.len() + new > MAX_VERSIONS {
                refused.set(true);
                return Err(crate::jobs::db::DbError("too many versions".into(), true));
            }
            for (version, c) in &merged {
                let v = s.lit(version);
                    for at in [0, slice] {
                    // Histograms are added up cell by cell here: make sure the row exists (two nodes
                    // may add it at once: the second insert is ignored), lock and read it, write the
                    // sums back.
                    s.q(&format!(
                        "INSERT {} INTO furrow_call_stats VALUES ({e}, {svc}, {v}, {at}, 0, 0, 0, 0, '')",
                        if mysql { "IGNORE" } else { "OR IGNORE" }
                    ))?;
                    let old = s.q(&format!(
                        "SELECT calls, errors, latency_us, max_latency_us, buckets FROM furrow_call_stats \
                         WHERE env = {e} AND service = {svc} AND version = {v} AND slice = {at}{}",
                        if mysql { " FOR UPDATE" } else { "" }
                    ))?;
                    let row = old.first().cloned().unwrap_or_default();
                    let mut sum = VersionCalls {
                        calls: cell_u64(&row, 0),
                        errors: cell_u64(&row, 1),
                        latency_us: cell_u64(&row, 2),
                        max_latency_us: cell_u64(&row, 3),
                        buckets: buckets_parse(row.get(4).and_then(|c| c.as_deref()).unwrap_or("")),
                        ..Default::default()
                    };
                    sum.add(c);
                    s.q(&format!(
                        "UPDATE furrow_call_stats SET calls = {}, errors = {}, latency_us = {}, \
                         max_latency_us = {}, buckets = {} WHERE env = {e} AND service = {svc} \
                         AND version = {v} AND slice = {at}",
                        sum.calls.min(i64::MAX as u64),
                        sum.errors.min(i64::MAX as u64),
                        sum.latency_us.min(i64::MAX as u64),
                        sum.max_latency_us.min(i64::MAX as u64),
                        s.lit(&buckets_text(&sum.buckets))
                    ))?;
                }
            }
            // Retention: slices older than two minutes, reporters silent for a minute.
            s.q(&format!(
                "DELETE FROM furrow_call_stats WHERE env = {e} AND service = {svc} AND slice > 0 AND slice < {}",
                slice.saturating_sub(2 * SLICES as u64)
            ))?;
            s.q(&format!(
                "DELETE FROM furrow_call_reporters WHERE env = {e} AND service = {svc} AND at_ms < {}",
                now_ms.saturating_sub(60_000)
            ))?;
            let who = s.lit(&r.reporter);
            s.q(&format!(
                "INSERT {} INTO furrow_call_reporters VALUES ({e}, {svc}, {who}, {now_ms})",
                if mysql { "IGNORE" } else { "OR IGNORE" }
            ))?;
            s.q(&format!(
                "UPDATE furrow_call_reporters SET at_ms = {now_ms} WHERE env = {e} AND service = {svc} \
                 AND reporter = {who}"
            ))?;
            Ok(())
        })
        .map_err(|err| {
            if refused.get() {
                ControlError::bad(
                    "calls",
                    format!("at most {MAX_VERSIONS} versions per service"),
                )
            } else {
                db_err(err)
            }
        })
    }

    /// The statistics of `(env, service)` at `now_ms`, as every node sees them.
    pub fn read(
        db: &crate::jobs::db::JobDb,
        env: &str,
        service: &str,
        now_ms: u64,
    ) -> Result<CallsView> {
        let slice = now_ms / SLICE_MS;
        let (rows, reporters) = db
            .tx(|s| {
                let (e, svc) = (s.lit(env), s.lit(service));
                let rows = s.q(&format!(
                    "SELECT version, slice, calls, errors, latency_us, max_latency_us, buckets \
                     FROM furrow_call_stats WHERE env = {e} AND service = {svc} \
                     AND (slice = 0 OR slice > {}) ORDER BY version, slice",
                    slice.saturating_sub(SLICES as u64)
                ))?;
                let reporters = s.q(&format!(
                    "SELECT COUNT(*) FROM furrow_call_reporters WHERE env = {e} AND service = {svc} AND at_ms >= {}",
                    now_ms.saturating_sub(60_000)
                ))?;
                Ok((rows, reporters))
            })
            .map_err(db_err)?;
        let mut by: BTreeMap<String, (VersionCalls, VersionCalls)> = BTreeMap::new();
        for row in &rows {
            let version = row.first().cloned().flatten().unwrap_or_default();
            let c = VersionCalls {
                version: version.clone(),
                calls: cell_u64(row, 2),
                errors: cell_u64(row, 3),
                latency_us: cell_u64(row, 4),
                max_latency_us: cell_u64(row, 5),
                buckets: buckets_parse(row.get(6).and_then(|c| c.as_deref()).unwrap_or("")),
            };
            let e = by.entry(version.clone()).or_default();
            e.0.version.clone_from(&version);
            if cell_u64(row, 1) == 0 {
                e.0.add(&c);
            } else {
                e.1.add(&c);
            }
        }
        Ok(CallsView {
            env: env.into(),
            service: service.into(),
            reporters: reporters.first().map_or(0, |r| cell_u64(r, 0) as usize),
            versions: by.values().map(|(t, m)| version_view(t, m)).collect(),
            kept_in: "store".into(),
        })
    }
}

/// The client side: counts calls by instance version and reports them to the center from a thread of
/// its own every `every`. [`CallRecorder::record`] takes a mutex for a map update and never waits on the
/// network; a report that fails is kept and sent with the next one.
#[derive(Debug)]
pub struct CallRecorder {
    acc: Mutex<BTreeMap<String, VersionCalls>>,
    stop: AtomicBool,
}

impl CallRecorder {
    /// A recorder reporting the calls to `service` in `env` as `reporter` every `every` (≥ 100 ms).
    pub fn start(
        api: ApiClient,
        env: &str,
        service: &str,
        reporter: &str,
        every: Duration,
    ) -> std::io::Result<Arc<CallRecorder>> {
        let me = Arc::new(CallRecorder {
            acc: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let (rec, path, reporter) = (me.clone(), calls_path(env, service), reporter.to_string());
        let every = every.max(Duration::from_millis(100));
        std::thread::Builder::new()
            .name("furrow-calls".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    while !rec.stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(every).await;
                        let _ = rec.flush(&api, &path, &reporter).await;
                    }
                });
            })?;
        Ok(me)
    }

    /// Counts one call to an instance of `version` that took `latency` (failed or not).
    pub fn record(&self, version: &str, failed: bool, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut m = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(version) && m.len() >= MAX_REPORT {
            return;
        }
        let v = m
            .entry(version.to_string())
            .or_insert_with(|| VersionCalls {
                version: version.to_string(),
                ..Default::default()
            });
        v.calls += 1;
        v.errors += u64::from(failed);
        v.latency_us = v.latency_us.saturating_add(us);
        v.max_latency_us = v.max_latency_us.max(us);
        v.buckets.resize(BUCKETS, 0);
        v.buckets[router::latency::bucket(us)] += 1;
    }

    /// Adds counts gathered elsewhere (a proxy's backend counters).
    pub fn add(&self, c: &VersionCalls) {
        let mut m = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&c.version) && m.len() >= MAX_REPORT {
            return;
        }
        m.entry(c.version.clone())
            .or_insert_with(|| VersionCalls {
                version: c.version.clone(),
                ..Default::default()
            })
            .add(c);
    }

    /// Sends what was counted since the last report now (nothing when nothing was counted).
    pub async fn flush(
        &self,
        api: &ApiClient,
        path: &str,
        reporter: &str,
    ) -> std::result::Result<(), crate::client::ClientError> {
        let taken = std::mem::take(&mut *self.acc.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let report = CallReport {
            reporter: reporter.to_string(),
            calls: taken.values().cloned().collect(),
        };
        let body = serde_json::to_value(&report).unwrap_or_default();
        let sent = api.call("POST", path, Some(&body)).await;
        if sent.is_err() {
            // Keep the counts for the next report.
            for c in taken.values() {
                self.add(c);
            }
        }
        sent.map(|_| ())
    }

    /// Stops the reporting thread (after its current sleep).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `SVC/calls` of `(env, service)`.
pub fn calls_path(env: &str, service: &str) -> String {
    format!(
        "/v1/registry/{}/services/{}/calls",
        crate::client::encode(env),
        crate::client::encode(service)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(version: &str, calls: u64, errors: u64, latency_us: u64) -> VersionCalls {
        VersionCalls {
            version: version.into(),
            calls,
            errors,
            latency_us,
            max_latency_us: latency_us / calls.max(1) * 2,
            buckets: Vec::new(),
        }
    }

    fn report(reporter: &str, calls: Vec<VersionCalls>) -> CallReport {
        CallReport {
            reporter: reporter.into(),
            calls,
        }
    }

    #[test]
    fn reports_add_up_per_version_with_a_last_minute_view() {
        let s = CallStats::default();
        s.report(
            "DEV",
            "orders",
            &report("a", vec![vc("1.0", 10, 1, 10_000), vc("2.0", 4, 0, 8_000)]),
            1_000,
        )
        .unwrap();
        s.report(
            "DEV",
            "orders",
            &report("b", vec![vc("2.0", 6, 3, 12_000)]),
            2_000,
        )
        .unwrap();
        let v = s.read("DEV", "orders", 3_000);
        assert_eq!(v.reporters, 2);
        assert_eq!(v.versions.len(), 2);
        let two = &v.versions[1];
        assert_eq!(
            (two.version.as_str(), two.calls, two.errors),
            ("2.0", 10, 3)
        );
        assert!((two.error_ratio - 0.3).abs() < 1e-9);
        assert!((two.avg_latency_ms - 2.0).abs() < 1e-9);
        assert!((two.max_latency_ms - 4.0).abs() < 1e-9);
        assert_eq!((two.minute_calls, two.minute_errors), (10, 3));
        // Two minutes later the minute view is empty; the totals stay.
        let later = s.read("DEV", "orders", 130_000);
        assert_eq!(later.versions[1].minute_calls, 0);
        assert_eq!(later.versions[1].calls, 10);
        assert_eq!(later.reporters, 0);
        // Another service, another environment: nothing.
        assert!(s.read("PRO", "orders", 3_000).versions.is_empty());
    }

    #[test]
    fn bad_reports_are_refused_naming_the_field() {
        let s = CallStats::default();
        let field = |r: CallReport| s.report("DEV", "x", &r, 0).map_err(|e| e.field);
        assert_eq!(field(report("", vec![])), Err(Some("reporter".into())));
        assert_eq!(
            field(report("a", vec![vc("1", 1, 2, 0)])),
            Err(Some("calls/0/errors".into()))
        );
        assert_eq!(
            field(report("a", vec![vc(&"v".repeat(129), 1, 0, 0)])),
            Err(Some("calls/0/version".into()))
        );
        let many: Vec<_> = (0..MAX_REPORT)
            .map(|i| vc(&i.to_string(), 1, 0, 0))
            .collect();
        assert_eq!(field(report("a", many)), Ok(()));
        assert_eq!(
            field(report("a", vec![vc("one more", 1, 0, 0)])),
            Err(Some("calls".into())),
            "at most MAX_VERSIONS versions per service"
        );
    }

    #[test]
    fn the_recorder_counts_by_version() {
        let r = CallRecorder {
            acc: Mutex::default(),
            stop: AtomicBool::new(false),
        };
        r.record("2.1", false, Duration::from_millis(3));
        r.record("2.1", true, Duration::from_millis(5));
        r.record("", false, Duration::from_micros(10));
        let m = r.acc.lock().unwrap();
        assert_eq!(
            m["2.1"],
            VersionCalls {
                version: "2.1".into(),
                calls: 2,
                errors: 1,
                latency_us: 8_000,
                max_latency_us: 5_000,
                buckets: {
                    let mut b = vec![0; BUCKETS];
                    b[router::latency::bucket(3_000)] += 1;
                    b[router::latency::bucket(5_000)] += 1;
                    b
                },
            }
        );
        assert_eq!(m[""].calls, 1);
    }

    fn hist(fast: u64, slow: u64) -> Vec<u64> {
        let mut b = vec![0; BUCKETS];
        b[router::latency::bucket(800)] = fast;
        b[router::latency::bucket(40_000)] = slow;
        b
    }

    #[test]
    fn the_tables_add_up_reports_with_histograms_and_keep_them_bounded() {
        let db = crate::jobs::db::JobDb::open("sqlite::memory:").unwrap();
        SharedCalls::init(&db).unwrap();
        let with = |version: &str, calls, errors, fast, slow| VersionCalls {
            buckets: hist(fast, slow),
            ..vc(version, calls, errors, calls * 1_000)
        };
        let t0 = 1_000_000;
        SharedCalls::report(
            &db,
            "DEV",
            "orders",
            &report("a", vec![with("1.0", 100, 2, 99, 1)]),
            t0,
        )
        .unwrap();
        SharedCalls::report(
            &db,
            "DEV",
            "orders",
            &report("b", vec![with("1.0", 100, 0, 90, 10)]),
            t0 + 5_000,
        )
        .unwrap();
        SharedCalls::report(
            &db,
            "DEV",
            "orders",
            &report("a", vec![vc("2.0", 4, 1, 400)]),
            t0 + 6_000,
        )
        .unwrap();
        let v = SharedCalls::read(&db, "DEV", "orders", t0 + 7_000).unwrap();
        assert_eq!((v.reporters, v.kept_in.as_str()), (2, "store"));
        let one = &v.versions[0];
        assert_eq!(
            (one.version.as_str(), one.calls, one.errors),
            ("1.0", 200, 2)
        );
        assert_eq!((one.minute_calls, one.minute_errors), (200, 2));
        // 189 of 200 calls ≤ 1 ms, 11 ≤ 50 ms: the median is the first bucket, the 99th the second.
        assert_eq!(one.p50_latency_ms, Some(1.0));
        assert_eq!(one.p99_latency_ms, Some(50.0));
        assert_eq!(one.minute_p99_latency_ms, Some(50.0));
        assert_eq!(
            (v.versions[1].calls, v.versions[1].p50_latency_ms),
            (4, None)
        );
        // Three minutes later: the minute view is empty, the totals stay; the old slices are gone
        // after the next report.
        let later = t0 + 180_000;
        SharedCalls::report(
            &db,
            "DEV",
            "orders",
            &report("c", vec![vc("2.0", 1, 0, 10)]),
            later,
        )
        .unwrap();
        let v = SharedCalls::read(&db, "DEV", "orders", later).unwrap();
        assert_eq!((v.versions[0].calls, v.versions[0].minute_calls), (200, 0));
        assert_eq!(v.reporters, 1);
        let rows = db
            .tx(|s| s.q("SELECT COUNT(*) FROM furrow_call_stats WHERE slice > 0"))
            .unwrap();
        assert_eq!(
            rows[0][0].as_deref(),
            Some("1"),
            "only the new slice is kept"
        );
        // Bad reports are refused as in memory, a bad histogram too.
        let bad = VersionCalls {
            buckets: vec![1, 2],
            ..vc("1.0", 5, 0, 5)
        };
        let e =
            SharedCalls::report(&db, "DEV", "orders", &report("a", vec![bad]), later).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("calls/0/buckets"));
        let many: Vec<_> = (0..MAX_VERSIONS - 1)
            .map(|i| vc(&format!("v{i}"), 1, 0, 0))
            .collect();
        let e = SharedCalls::report(&db, "DEV", "orders", &report("a", many), later).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("calls"),
            "at most MAX_VERSIONS versions"
        );
        // Another service: nothing.
        assert!(
            SharedCalls::read(&db, "DEV", "other", later)
                .unwrap()
                .versions
                .is_empty()
        );
    }
}
