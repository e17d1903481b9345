//! Server-side chart history: the health windows the proxies already send with their reports (requests and
//! errors of their clients per window, every 10 s by default; `Center::report`) kept per instance as a
//! bounded time series, so the console's charts show the last hour as soon as a page opens instead of
//! only what the open page sampled.
//!
//! Bounds: [`MAX_POINTS`] windows per series (an hour at the default 10 s window) and [`MAX_SERIES`] series
//! (the one whose newest window is the oldest goes first). Memory only, per control node: each node keeps
//! the windows of the reports it receives, and a restart starts empty.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::model::{HealthWindow, ListenerLatency};

/// Windows kept per series.
pub const MAX_POINTS: usize = 360;
/// Series kept (instance × namespace path).
pub const MAX_SERIES: usize = 4096;

/// Listeners kept per window (a proxy with more sends its busiest first; the rest are dropped).
pub const MAX_LISTENERS: usize = 32;

/// One health window as received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    /// When the center received it (ms since the epoch): the end of the window.
    pub at_ms: u64,
    /// Requests in the window.
    pub requests: u64,
    /// Errors in the window.
    pub errors: u64,
    /// The window's length, ms (0 when the sender did not say).
    pub window_ms: u64,
    /// Request latency per listener over the window (empty when the sender did not say).
    pub latency: Vec<ListenerLatency>,
}

/// The series, by (namespace path `app/env/cluster/ns`, instance id).
#[derive(Default, Debug)]
pub struct History {
    series: Mutex<HashMap<(String, String), VecDeque<Point>>>,
}

impl History {
    /// Records a window of `instance` reporting on `ns_path`, received at `at_ms`, with its listeners'
    /// latencies (at most [`MAX_LISTENERS`] kept).
    pub fn record(
        &self,
        ns_path: &str,
        instance: &str,
        w: &HealthWindow,
        latency: &[ListenerLatency],
        at_ms: u64,
    ) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let key = (ns_path.to_string(), instance.to_string());
        if !series.contains_key(&key)
            && series.len() >= MAX_SERIES
            && let Some(stalest) = series
                .iter()
                .min_by_key(|(_, v)| v.back().map_or(0, |p| p.at_ms))
                .map(|(k, _)| k.clone())
        {
            series.remove(&stalest);
        }
        let v = series.entry(key).or_default();
        if v.len() >= MAX_POINTS {
            v.pop_front();
        }
        v.push_back(Point {
            at_ms,
            requests: w.requests,
            errors: w.errors,
            window_ms: w.window_ms,
            latency: latency.iter().take(MAX_LISTENERS).cloned().collect(),
        });
    }

    /// The windows of `instance` on `ns_path` received at or after `since_ms`, oldest first.
    pub fn series(&self, ns_path: &str, instance: &str, since_ms: u64) -> Vec<Point> {
        let Ok(series) = self.series.lock() else {
            return Vec::new();
        };
        series
            .get(&(ns_path.to_string(), instance.to_string()))
            .map(|v| v.iter().filter(|p| p.at_ms >= since_ms).cloned().collect())
            .unwrap_or_default()
    }

    /// How many series are kept.
    pub fn len(&self) -> usize {
        self.series.lock().map_or(0, |s| s.len())
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(requests: u64, errors: u64) -> HealthWindow {
        HealthWindow {
            requests,
            errors,
            window_ms: 10_000,
        }
    }

    #[test]
    fn a_series_keeps_the_newest_windows_in_order() {
        let h = History::default();
        for i in 0..(MAX_POINTS as u64 + 5) {
            h.record("shop/DEV/default/proxy", "p1", &w(i, i / 10), &[], 1000 + i);
        }
        let s = h.series("shop/DEV/default/proxy", "p1", 0);
        assert_eq!(s.len(), MAX_POINTS);
        assert_eq!(s[0].requests, 5);
        assert_eq!(s.last().unwrap().requests, MAX_POINTS as u64 + 4);
        assert!(s.windows(2).all(|p| p[0].at_ms < p[1].at_ms));
        // A window in time: only the newer points.
        let recent = h.series("shop/DEV/default/proxy", "p1", 1000 + MAX_POINTS as u64);
        assert_eq!(recent.len(), 5);
        // Other instances and paths are separate series.
        assert!(h.series("shop/DEV/default/proxy", "p2", 0).is_empty());
        assert!(h.series("shop/DEV/other/proxy", "p1", 0).is_empty());
    }

    #[test]
    fn the_stalest_series_goes_first_when_full() {
        let h = History::default();
        for i in 0..MAX_SERIES as u64 {
            // Series 0 is the stalest: its newest window is the oldest.
            h.record("a/b/c/d", &format!("p{i}"), &w(1, 0), &[], 10 + i);
        }
        h.record("a/b/c/d", "p1", &w(1, 0), &[], 100_000);
        assert_eq!(h.len(), MAX_SERIES);
        h.record("a/b/c/d", "new", &w(7, 1), &[], 100_001);
        assert_eq!(h.len(), MAX_SERIES);
        assert!(h.series("a/b/c/d", "p0", 0).is_empty());
        assert_eq!(h.series("a/b/c/d", "p1", 0).len(), 2);
        assert_eq!(h.series("a/b/c/d", "new", 0)[0].errors, 1);
    }

    #[test]
    fn windows_keep_their_listeners_latency() {
        let h = History::default();
        let lat = |name: &str, p99: u64| ListenerLatency {
            listener: name.into(),
            count: 10,
            p50_us: p99 / 4,
            p99_us: p99,
            p999_us: p99 * 2,
        };
        let many: Vec<_> = (0..MAX_LISTENERS as u64 + 3)
            .map(|i| lat(&format!("l{i}"), 100 + i))
            .collect();
        h.record("a/b/c/d", "p", &w(10, 0), &many[..2], 1);
        h.record("a/b/c/d", "p", &w(10, 0), &many, 2);
        let s = h.series("a/b/c/d", "p", 0);
        assert_eq!(s[0].latency, many[..2]);
        assert_eq!(s[1].latency.len(), MAX_LISTENERS);
        assert_eq!(s[1].latency[1].p99_us, 101);
    }
}
