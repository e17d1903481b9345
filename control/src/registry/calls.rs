//! Per-version call statistics: clients (the library's [`CallRecorder`]) and proxies report the calls they
//! made to a service's instances, by instance version; the center adds them up in memory and answers them
//! per service (`GET SVC/calls`), with a last-minute view beside the totals since the node started.
//!
//! Like the token service, this lives in the memory of one node (statistics are not worth a store write per
//! report): point the reporters of a service at one node, or read every node. Bounded: at most
//! [`MAX_VERSIONS`] versions per service, [`MAX_SERVICES`] services, [`MAX_REPORT`] entries per report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::error::{ControlError, Result};

/// The most versions counted per service (a report naming more is refused).
pub const MAX_VERSIONS: usize = 256;
/// The most services counted per node (the idlest ones are dropped first).
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

/// The sums of one version: since the node started, and per slice of the last minute.
#[derive(Clone, Debug, Default)]
struct Sums {
    total: VersionCalls,
    /// (slice number, calls, errors, latency µs)
    slices: [(u64, u64, u64, u64); SLICES],
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
    /// Calls since this node started.
    pub calls: u64,
    /// Failed calls since this node started.
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
}

/// A node's call statistics.
#[derive(Debug, Default)]
pub struct CallStats {
    inner: Mutex<HashMap<(String, String), ServiceCalls>>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl CallStats {
    /// Adds a report for `(env, service)` at `now_ms`. Refused (400 naming the field) when it is too
    /// large, names a version longer than 128 bytes, or would take the service past [`MAX_VERSIONS`].
    pub fn report(&self, env: &str, service: &str, r: &CallReport, now_ms: u64) -> Result<()> {
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
        }
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
            v.total.calls = v.total.calls.saturating_add(c.calls);
            v.total.errors = v.total.errors.saturating_add(c.errors);
            v.total.latency_us = v.total.latency_us.saturating_add(c.latency_us);
            v.total.max_latency_us = v.total.max_latency_us.max(c.max_latency_us);
            let at = &mut v.slices[(slice % SLICES as u64) as usize];
            if at.0 != slice {
                *at = (slice, 0, 0, 0);
            }
            at.1 = at.1.saturating_add(c.calls);
            at.2 = at.2.saturating_add(c.errors);
            at.3 = at.3.saturating_add(c.latency_us);
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
                        let (mut calls, mut errors, mut lat) = (0, 0, 0);
                        for (n, c, e, l) in &v.slices {
                            if *n + SLICES as u64 > slice {
                                calls += c;
                                errors += e;
                                lat += l;
                            }
                        }
                        let t = &v.total;
                        VersionView {
                            version: t.version.clone(),
                            calls: t.calls,
                            errors: t.errors,
                            error_ratio: ratio(t.errors, t.calls),
                            avg_latency_ms: ratio(t.latency_us, t.calls) / 1000.0,
                            max_latency_ms: t.max_latency_us as f64 / 1000.0,
                            minute_calls: calls,
                            minute_errors: errors,
                            minute_avg_latency_ms: ratio(lat, calls) / 1000.0,
                        }
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
        }
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
    }

    /// Adds counts gathered elsewhere (a proxy's backend counters).
    pub fn add(&self, c: &VersionCalls) {
        let mut m = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&c.version) && m.len() >= MAX_REPORT {
            return;
        }
        let v = m.entry(c.version.clone()).or_insert_with(|| VersionCalls {
            version: c.version.clone(),
            ..Default::default()
        });
        v.calls = v.calls.saturating_add(c.calls);
        v.errors = v.errors.saturating_add(c.errors);
        v.latency_us = v.latency_us.saturating_add(c.latency_us);
        v.max_latency_us = v.max_latency_us.max(c.max_latency_us);
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
            }
        );
        assert_eq!(m[""].calls, 1);
    }
}
