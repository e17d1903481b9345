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
}
