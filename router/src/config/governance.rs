//! Governance rules in force on a proxy, as the data path sees them.
//!
//! The rules themselves are published on the proxy's registry service (`[registry] service`) and
//! translated by the proxy process into what the data path already enforces: per-user rate limits
//! become `limit` rules of every MySQL group, error-count circuit breakers become the groups'
//! `circuit_break_after` / `eject_after` settings. Only what has no place in the config so far lives
//! here: the client source lists (black/white lists of addresses), checked once per client connection
//! at accept, never per request. A config without governance has `None` here, and the check is one
//! branch on an `Option`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::model::IpNet;

/// One source list: `allow` admits only the listed networks, a deny list refuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceList {
    /// Allow list (true) or deny list (false).
    pub allow: bool,
    /// The networks.
    pub nets: Vec<IpNet>,
}

/// A rate budget shared by several proxies (a cluster-wide limit: the control center's token service),
/// consulted by the data path in place of its local token bucket. Implementations never wait on the
/// network: they take from a local pool and fall back to a local share when the center is unreachable.
pub trait ClusterBudget: Send + Sync + std::fmt::Debug {
    /// Takes one token for `key` (the user for per-user budgets, empty for one budget per rule); false
    /// when the budget is spent.
    fn try_take(&self, key: &str) -> bool;
}

/// The governance rules a proxy enforces at accept, with the counters its metrics show.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    /// The rule set version in force (for metrics and `INFO`).
    pub version: u64,
    /// Every list must admit a client address.
    pub sources: Vec<SourceList>,
    /// Client connections refused by `sources` (shared by every version, so it only grows).
    pub refused: Arc<AtomicU64>,
    /// A circuit breaker by error or slow-call ratio for every backend (the first such rule).
    pub breaker: Option<RatioBreaker>,
}

/// A circuit breaker per backend by error ratio or slow-call ratio over a sliding window, with a
/// half-open probe after `open_ms` (a governance `circuit_breaker` rule, `error_ratio` or `slow_ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioBreaker {
    /// `Some`: the slow-call ratio (calls slower than this many ms, failures included); `None`: the
    /// error ratio.
    pub slow_ms: Option<u64>,
    /// The ratio (0-1] that opens the breaker.
    pub threshold: f64,
    /// The window, ms (10 slices).
    pub window_ms: u64,
    /// Calls needed in the window before it may open.
    pub min_calls: u32,
    /// How long it stays open before the probe.
    pub open_ms: u64,
}

impl Governance {
    /// Whether a client from `ip` may connect (counts the refusal when not). IPv4-mapped IPv6
    /// addresses are checked as IPv4.
    pub fn admits_source(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ok = self
            .sources
            .iter()
            .all(|l| l.nets.iter().any(|n| n.contains(ip)) == l.allow);
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lists_admit_and_refuse() {
        let net = |s: &str| IpNet::parse(s).expect("net");
        let mut g = Governance {
            version: 3,
            sources: vec![SourceList {
                allow: false,
                nets: vec![net("10.9.0.0/16"), net("::1")],
            }],
            ..Default::default()
        };
        assert!(g.admits_source("127.0.0.1".parse().unwrap()));
        assert!(!g.admits_source("10.9.3.4".parse().unwrap()));
        assert!(!g.admits_source("::1".parse().unwrap()));
        assert!(!g.admits_source("::ffff:10.9.0.1".parse().unwrap()));
        g.sources.push(SourceList {
            allow: true,
            nets: vec![net("127.0.0.0/8")],
        });
        assert!(g.admits_source("127.0.0.2".parse().unwrap()));
        assert!(!g.admits_source("192.168.1.1".parse().unwrap()));
        assert_eq!(g.refused.load(Ordering::Relaxed), 4);
    }
}
