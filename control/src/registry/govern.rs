//! Enforcing a service's rules in the caller (client library; the proxies will use the same): rate limits
//! (QPS with reject / warm-up / queue, concurrency) per service, caller or user, and circuit breakers per
//! backend instance with half-open probing. Pure and clock-free: every call takes `now_ms`, so tests and
//! callers control time; one `Governor` per rule set version (rebuild it when the rules change).
//!
//! Cluster-wide limits (`"cluster": true`) take their tokens from the center's token service through a
//! [`ClusterTokens`] given to [`Governor::with_cluster`] (leases of tokens, a local share when the center
//! is unreachable); without one they are enforced locally at the full rate.

use std::collections::HashMap;

use std::sync::Arc;

use super::rules::{BreakerStrategy, LimitMode, LimitScope, Rule, RuleSet, TokenBucket};
use super::tokens::ClusterTokens;

/// Who is calling.
#[derive(Clone, Debug, Default)]
pub struct Call<'a> {
    /// The calling application.
    pub caller: &'a str,
    /// The user (e.g. a MySQL user at a proxy).
    pub user: &'a str,
    /// The source address.
    pub source: Option<std::net::IpAddr>,
}

/// Why a call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An access rule (black/white list).
    Access,
    /// Rule `rule` (its index) is over its QPS or concurrency limit.
    RateLimited {
        /// The rule index.
        rule: usize,
    },
}

/// An admitted call: release it when done (concurrency limits); `wait_ms` is how long a queueing limit
/// asks the caller to wait before sending.
#[derive(Debug, Default)]
#[must_use = "release the permit when the call ends"]
pub struct Permit {
    /// Wait this long first (leaky-bucket queueing).
    pub wait_ms: u64,
    slots: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { probing: bool },
}

/// One breaker: counts over `BUCKETS` slices of the window.
#[derive(Debug, Clone)]
struct Breaker {
    state: BreakerState,
    /// (slice start ms, calls, errors, slow calls)
    buckets: [(u64, u32, u32, u32); BUCKETS],
}

const BUCKETS: usize = 10;

/// The rule enforcement state of one rule set.
#[derive(Debug)]
pub struct Governor {
    rules: RuleSet,
    buckets: HashMap<(usize, String), TokenBucket>,
    /// Leaky-bucket queues: the time the next call may go.
    next_slot: HashMap<(usize, String), u64>,
    inflight: HashMap<(usize, String), u32>,
    breakers: HashMap<(usize, String), Breaker>,
    /// The token service client for the cluster-wide limits.
    cluster: Option<Arc<ClusterTokens>>,
}

fn scope_key(scope: LimitScope, call: &Call) -> String {
    match scope {
        LimitScope::Service => String::new(),
        LimitScope::Caller => call.caller.to_string(),
        LimitScope::User => call.user.to_string(),
    }
}

impl Governor {
    /// Enforcement of `rules`, starting empty.
    pub fn new(rules: RuleSet) -> Self {
        Governor {
            rules,
            buckets: HashMap::new(),
            next_slot: HashMap::new(),
            inflight: HashMap::new(),
            breakers: HashMap::new(),
            cluster: None,
        }
    }

    /// Enforcement of `rules` whose cluster-wide limits take tokens from `cluster` (made for the same rule
    /// set version with [`ClusterTokens::start`]).
    pub fn with_cluster(rules: RuleSet, cluster: Option<Arc<ClusterTokens>>) -> Self {
        let mut g = Governor::new(rules);
        g.cluster = cluster;
        g
    }

    /// The rules enforced.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Admits or refuses a call at `now_ms`. Nothing is counted for a refused call.
    pub fn admit(&mut self, call: &Call, now_ms: u64) -> Result<Permit, Refusal> {
        if !self.rules.admits(call.caller, call.source) {
            return Err(Refusal::Access);
        }
        let mut permit = Permit::default();
        // Check every limit before counting anything, so a refusal by a later rule costs no tokens.
        for (i, r) in self.rules.rules.iter().enumerate() {
            let Rule::RateLimit {
                concurrency,
                scope,
                only,
                ..
            } = r
            else {
                continue;
            };
            let who = match scope {
                LimitScope::User => call.user,
                _ => call.caller,
            };
            if !only.is_empty() && !only.iter().any(|o| o == who) {
                continue;
            }
            let key = (i, scope_key(*scope, call));
            if let Some(max) = concurrency
                && self.inflight.get(&key).copied().unwrap_or(0) >= *max
            {
                return Err(Refusal::RateLimited { rule: i });
            }
        }
        for (i, r) in self.rules.rules.iter().enumerate() {
            let Rule::RateLimit {
                qps,
                concurrency,
                scope,
                only,
                control,
                ..
            } = r
            else {
                continue;
            };
            let who = match scope {
                LimitScope::User => call.user,
                _ => call.caller,
            };
            if !only.is_empty() && !only.iter().any(|o| o == who) {
                continue;
            }
            let key = (i, scope_key(*scope, call));
            let clustered = self.cluster.as_ref().is_some_and(|c| c.covers(i));
            if let Some(qps) = qps
                && !clustered
            {
                let ok = match control {
                    LimitMode::Queue { max_wait_ms } => {
                        let gap = (1000.0 / qps).max(0.0) as u64;
                        let slot = self.next_slot.entry(key.clone()).or_insert(now_ms);
                        let at = (*slot).max(now_ms);
                        if at - now_ms > *max_wait_ms {
                            false
                        } else {
                            *slot = at + gap;
                            permit.wait_ms = permit.wait_ms.max(at - now_ms);
                            true
                        }
                    }
                    LimitMode::Reject => self
                        .buckets
                        .entry(key.clone())
                        .or_insert_with(|| TokenBucket::new(*qps, 0, now_ms))
                        .try_acquire(now_ms),
                    LimitMode::WarmUp { warm_up_s } => self
                        .buckets
                        .entry(key.clone())
                        .or_insert_with(|| TokenBucket::new(*qps, *warm_up_s, now_ms))
                        .try_acquire(now_ms),
                };
                if !ok {
                    self.release(permit);
                    return Err(Refusal::RateLimited { rule: i });
                }
            }
            if concurrency.is_some() {
                *self.inflight.entry(key.clone()).or_insert(0) += 1;
                permit.slots.push(key);
            }
        }
        // Cluster-wide budgets last: a token leased from the center is the dearest to waste.
        if let Some(c) = &self.cluster {
            for (i, r) in self.rules.rules.iter().enumerate() {
                let Rule::RateLimit { scope, only, .. } = r else {
                    continue;
                };
                let who = match scope {
                    LimitScope::User => call.user,
                    _ => call.caller,
                };
                if !c.covers(i) || (!only.is_empty() && !only.iter().any(|o| o == who)) {
                    continue;
                }
                if !c.try_take(i, &scope_key(*scope, call), now_ms) {
                    self.release(permit);
                    return Err(Refusal::RateLimited { rule: i });
                }
            }
        }
        Ok(permit)
    }

    /// Ends an admitted call (frees its concurrency slots).
    pub fn release(&mut self, permit: Permit) {
        for key in permit.slots {
            if let Some(n) = self.inflight.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Whether every breaker lets a call to `instance` through at `now_ms` (an open breaker past its
    /// `open_ms` lets exactly one probe through: half-open).
    pub fn breaker_allows(&mut self, instance: &str, now_ms: u64) -> bool {
        let mut ok = true;
        for (i, r) in self.rules.rules.iter().enumerate() {
            if !matches!(r, Rule::CircuitBreaker { .. }) {
                continue;
            }
            let b = self
                .breakers
                .entry((i, instance.to_string()))
                .or_insert_with(Breaker::new);
            match b.state {
                BreakerState::Closed => {}
                BreakerState::Open { until_ms } if now_ms >= until_ms => {
                    b.state = BreakerState::HalfOpen { probing: true };
                }
                BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => ok = false,
                BreakerState::HalfOpen { probing: false } => {
                    b.state = BreakerState::HalfOpen { probing: true };
                }
            }
        }
        ok
    }

    /// Records the outcome of a call to `instance`: may open a breaker (threshold reached over the window
    /// with at least `min_calls`), and closes or reopens a half-open one.
    pub fn record(&mut self, instance: &str, failed: bool, latency_ms: u64, now_ms: u64) {
        for (i, r) in self.rules.rules.iter().enumerate() {
            let Rule::CircuitBreaker {
                strategy,
                threshold,
                window_ms,
                min_calls,
                slow_ms,
                open_ms,
            } = r
            else {
                continue;
            };
            let b = self
                .breakers
                .entry((i, instance.to_string()))
                .or_insert_with(Breaker::new);
            let slow = slow_ms.is_some_and(|s| latency_ms > s);
            let bad = match strategy {
                BreakerStrategy::SlowRatio => slow,
                _ => failed,
            };
            if let BreakerState::HalfOpen { .. } = b.state {
                b.state = if bad {
                    BreakerState::Open {
                        until_ms: now_ms + open_ms,
                    }
                } else {
                    b.buckets = [(0, 0, 0, 0); BUCKETS];
                    BreakerState::Closed
                };
                continue;
            }
            let slice = (window_ms / BUCKETS as u64).max(1);
            let start = now_ms - now_ms % slice;
            let idx = ((now_ms / slice) % BUCKETS as u64) as usize;
            if b.buckets[idx].0 != start {
                b.buckets[idx] = (start, 0, 0, 0);
            }
            b.buckets[idx].1 += 1;
            b.buckets[idx].2 += failed as u32;
            b.buckets[idx].3 += slow as u32;
            let live = b
                .buckets
                .iter()
                .filter(|(s, ..)| now_ms.saturating_sub(*s) < *window_ms);
            let (calls, errors, slows) = live.fold((0u32, 0u32, 0u32), |a, (_, c, e, s)| {
                (a.0 + c, a.1 + e, a.2 + s)
            });
            if calls < *min_calls {
                continue;
            }
            let trip = match strategy {
                BreakerStrategy::ErrorRatio => errors as f64 / calls as f64 >= *threshold,
                BreakerStrategy::SlowRatio => slows as f64 / calls as f64 >= *threshold,
                BreakerStrategy::ErrorCount => errors as f64 >= *threshold,
            };
            if trip && matches!(b.state, BreakerState::Closed) {
                b.state = BreakerState::Open {
                    until_ms: now_ms + open_ms,
                };
            }
        }
    }
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            state: BreakerState::Closed,
            buckets: [(0, 0, 0, 0); BUCKETS],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gov(rules: serde_json::Value) -> Governor {
        let rules: Vec<Rule> = serde_json::from_value(rules).unwrap();
        super::super::rules::validate(&rules).unwrap();
        Governor::new(RuleSet {
            rules,
            ..Default::default()
        })
    }

    #[test]
    fn per_user_qps_and_concurrency() {
        let mut g = gov(serde_json::json!([
            {"kind": "rate_limit", "qps": 5, "scope": "user"},
            {"kind": "rate_limit", "concurrency": 2, "scope": "service"}
        ]));
        let alice = Call {
            user: "alice",
            ..Default::default()
        };
        let bob = Call {
            user: "bob",
            ..Default::default()
        };
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(g.admit(&alice, 0).unwrap());
        }
        assert_eq!(
            g.admit(&bob, 0).unwrap_err(),
            Refusal::RateLimited { rule: 1 },
            "concurrency is per service"
        );
        for p in held.drain(..) {
            g.release(p);
        }
        let mut ok = 0;
        for _ in 0..10 {
            if let Ok(p) = g.admit(&alice, 0) {
                ok += 1;
                g.release(p);
            }
        }
        assert_eq!(ok, 3, "alice had used 2 of her 5 tokens");
        let p = g.admit(&bob, 0).expect("bob has his own budget");
        g.release(p);
    }

    #[test]
    fn queueing_spaces_calls_and_refuses_beyond_max_wait() {
        let mut g = gov(serde_json::json!([
            {"kind": "rate_limit", "qps": 10, "control": {"mode": "queue", "max_wait_ms": 250}}
        ]));
        let c = Call::default();
        let waits: Vec<u64> = (0..3).map(|_| g.admit(&c, 1000).unwrap().wait_ms).collect();
        assert_eq!(waits, [0, 100, 200]);
        assert!(g.admit(&c, 1000).is_err(), "a 300 ms wait exceeds 250");
        assert_eq!(
            g.admit(&c, 1100).unwrap().wait_ms,
            200,
            "a refusal takes no slot"
        );
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let mut g = gov(serde_json::json!([
            {"kind": "circuit_breaker", "strategy": "error_ratio", "threshold": 0.5,
             "window_ms": 1000, "min_calls": 4, "open_ms": 500}
        ]));
        for t in 0..3 {
            g.record("b1", true, 1, t);
        }
        assert!(g.breaker_allows("b1", 3), "below min_calls");
        g.record("b1", false, 1, 4);
        assert!(!g.breaker_allows("b1", 5), "3 of 4 failed");
        assert!(g.breaker_allows("b2", 5), "per instance");
        assert!(g.breaker_allows("b1", 505), "half-open: one probe");
        assert!(!g.breaker_allows("b1", 506), "only one probe");
        g.record("b1", true, 1, 507);
        assert!(!g.breaker_allows("b1", 600), "the probe failed: open again");
        assert!(g.breaker_allows("b1", 1008));
        g.record("b1", false, 1, 1009);
        assert!(
            g.breaker_allows("b1", 1010) && g.breaker_allows("b1", 1011),
            "closed"
        );
    }

    #[test]
    fn access_rules_refuse_first() {
        let mut g = gov(serde_json::json!([
            {"kind": "access", "allow": true, "sources": ["127.0.0.0/8"]}
        ]));
        let outside = Call {
            source: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(g.admit(&outside, 0).unwrap_err(), Refusal::Access);
        let inside = Call {
            source: Some("127.0.0.9".parse().unwrap()),
            ..Default::default()
        };
        let p = g.admit(&inside, 0).unwrap();
        g.release(p);
    }
}
