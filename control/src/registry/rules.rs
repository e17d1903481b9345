//! Governance rules (after Sentinel's rule model and Polaris' routing): one versioned set per service,
//! published as a whole, audited with its old and new value, pushed to the service's watchers.
//!
//! Evaluation that needs no state lives here as pure functions shared by the service and the client
//! library: [`RuleSet::admits`] (black/white lists), [`RuleSet::route`] (version routing), and
//! [`TokenBucket`] (a QPS limit with warm-up). Circuit breakers keep per-backend windows in their user
//! (the client library or a proxy); their parameters are validated here.

use serde::{Deserialize, Serialize};

use crate::error::{ControlError, Result};

/// The most rules in one set.
pub const MAX_RULES: usize = 256;

/// The rules of one service, as published.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// 1 for the first publish, +1 for each one after (optimistic versioning on publish).
    pub version: u64,
    /// Who published it (for a reviewed change: who proposed it).
    pub author: String,
    /// Who approved it (a service whose rule publishes need review); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approver: String,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// Whom a rate limit counts separately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// One budget for the whole service.
    #[default]
    Service,
    /// One budget per calling application.
    Caller,
    /// One budget per user (e.g. a MySQL user at a proxy).
    User,
}

/// What happens to a call over a rate limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitMode {
    /// Refused at once.
    #[default]
    Reject,
    /// The allowed rate climbs from a third of `qps` to `qps` over `warm_up_s` after a quiet period.
    WarmUp {
        /// Seconds to reach the full rate.
        warm_up_s: u64,
    },
    /// Leaky bucket: calls are spaced evenly and wait up to `max_wait_ms` for their turn.
    Queue {
        /// The longest wait, ms.
        max_wait_ms: u64,
    },
}

/// What a circuit breaker measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerStrategy {
    /// Share of failed calls (threshold 0–1).
    ErrorRatio,
    /// Share of calls slower than `slow_ms` (threshold 0–1).
    SlowRatio,
    /// Failed calls (threshold: a count).
    ErrorCount,
}

/// One governance rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// A rate limit: calls per second and/or calls in flight.
    RateLimit {
        /// Calls per second (absent: no QPS limit).
        #[serde(default)]
        qps: Option<f64>,
        /// Calls in flight (absent: no concurrency limit).
        #[serde(default)]
        concurrency: Option<u32>,
        /// Who counts separately.
        #[serde(default)]
        scope: LimitScope,
        /// Only these callers or users (empty: everyone).
        #[serde(default)]
        only: Vec<String>,
        /// Over the limit.
        #[serde(default)]
        control: LimitMode,
        /// Whether the budget is cluster-wide (clients ask the center for tokens; they fall back to a local
        /// share when it is unreachable).
        #[serde(default)]
        cluster: bool,
    },
    /// A circuit breaker per backend instance over a sliding window; after `open_ms` one probe call is let
    /// through (half-open) and its outcome closes or reopens the breaker.
    CircuitBreaker {
        /// What is measured.
        strategy: BreakerStrategy,
        /// The ratio (0–1) or count that opens the breaker.
        threshold: f64,
        /// The window, ms.
        window_ms: u64,
        /// Calls needed in the window before it may open.
        #[serde(default = "default_min_calls")]
        min_calls: u32,
        /// A call slower than this is slow (slow_ratio only).
        #[serde(default)]
        slow_ms: Option<u64>,
        /// How long it stays open before a probe.
        open_ms: u64,
    },
    /// A black or white list by caller application and by source address.
    Access {
        /// `true`: only the listed callers/sources are admitted; `false`: the listed ones are refused.
        allow: bool,
        /// Caller applications.
        #[serde(default)]
        callers: Vec<String>,
        /// Source addresses: an IPv4/IPv6 address or a CIDR block.
        #[serde(default)]
        sources: Vec<String>,
    },
    /// Version routing: `percent` of the calls from `callers` (empty: everyone) go to instances whose
    /// version matches `version` (`2.*`: prefix), the rest to the others.
    Route {
        /// Caller applications (empty: all).
        #[serde(default)]
        callers: Vec<String>,
        /// A version, or a prefix ending in `*`.
        version: String,
        /// 0–100.
        percent: u8,
    },
    /// Intervention: send the traffic of cluster `from` (every other cluster when empty) to cluster `to`.
    /// An instance's cluster is its `cluster` tag. Discovery answers leave the switched instances out —
    /// unless `to` has no instance in the answer (a rule never blackholes traffic).
    ClusterSwitch {
        /// The cluster whose traffic moves (empty: all but `to`).
        #[serde(default)]
        from: String,
        /// Where it goes.
        to: String,
    },
    /// Intervention: move `percent` of cluster `from`'s share of the traffic to cluster `to`, by the
    /// weights in discovery answers (`from`'s instances lose that share, `to`'s gain it; the total stays).
    LoadShare {
        /// The cluster that gives traffic.
        from: String,
        /// The cluster that takes it.
        to: String,
        /// 0–100.
        percent: u8,
    },
}

/// The cluster of an instance: its `cluster` tag (empty when it has none).
pub fn cluster_of(i: &super::model::RegInstance) -> &str {
    i.tags.get("cluster").map_or("", String::as_str)
}

/// The most weight an intervention gives an instance (the registry's own bound).
const MAX_WEIGHT: f64 = 10_000.0;

impl RuleSet {
    /// Applies the intervention rules (`cluster_switch`, then `load_share`, each in order) to the
    /// instances of a discovery answer: switched instances leave the list, shared weights move. A rule
    /// whose target cluster has no instance (or no weight) in the list changes nothing.
    pub fn intervene(
        &self,
        mut list: Vec<super::model::RegInstance>,
    ) -> Vec<super::model::RegInstance> {
        for r in &self.rules {
            if let Rule::ClusterSwitch { from, to } = r
                && list.iter().any(|i| cluster_of(i) == to)
            {
                list.retain(|i| {
                    let c = cluster_of(i);
                    c == to || (!from.is_empty() && c != from)
                });
            }
        }
        for r in &self.rules {
            let Rule::LoadShare { from, to, percent } = r else {
                continue;
            };
            let sum = |c: &str| -> f64 {
                list.iter()
                    .filter(|i| cluster_of(i) == c)
                    .map(|i| f64::from(i.weight))
                    .sum()
            };
            let (wa, wb) = (sum(from), sum(to));
            if wa <= 0.0 || wb <= 0.0 || from == to {
                continue;
            }
            let p = f64::from(*percent) / 100.0;
            let (fa, fb) = (1.0 - p, (wb + p * wa) / wb);
            let mut w: Vec<f64> = list
                .iter()
                .map(|i| {
                    let c = cluster_of(i);
                    f64::from(i.weight)
                        * if c == from {
                            fa
                        } else if c == to {
                            fb
                        } else {
                            1.0
                        }
                })
                .collect();
            let max = w.iter().copied().fold(0.0, f64::max);
            if max > MAX_WEIGHT {
                w.iter_mut().for_each(|x| *x *= MAX_WEIGHT / max);
            }
            for (i, x) in list.iter_mut().zip(w) {
                i.weight = x.round() as u32;
            }
        }
        list
    }
}

fn default_min_calls() -> u32 {
    5
}

fn bad(i: usize, field: &str, msg: impl Into<String>) -> ControlError {
    ControlError::bad(&format!("rules/{i}/{field}"), msg)
}

/// A parsed source address or CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/BITS`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { addr, bits })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let mask = |bits: u8, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                (!0u128) << (width - bits as u32)
            }
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                let m = mask(self.bits, 32) as u32;
                u32::from(a) & m == u32::from(b) & m
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
                let m = mask(self.bits, 128);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

/// Whether `version` matches a pattern: equal, or `PREFIX*`.
pub fn version_matches(pattern: &str, version: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => version.starts_with(prefix),
        None => pattern == version,
    }
}

/// Checks a rule list; errors name the field (`rules/3/threshold`).
pub fn validate(rules: &[Rule]) -> Result<()> {
    if rules.len() > MAX_RULES {
        return Err(ControlError::bad(
            "rules",
            format!("at most {MAX_RULES} rules per service"),
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        match r {
            Rule::RateLimit {
                qps,
                concurrency,
                control,
                cluster,
                ..
            } => {
                if *cluster && (qps.is_none() || !matches!(control, LimitMode::Reject)) {
                    return Err(bad(
                        i,
                        "cluster",
                        "a cluster-wide limit is a qps budget with the reject control \
                         (concurrency, warm_up and queue are per client)",
                    ));
                }
                if qps.is_none() && concurrency.is_none() {
                    return Err(bad(i, "qps", "a rate limit needs qps, concurrency or both"));
                }
                if let Some(q) = qps
                    && !(q.is_finite() && *q > 0.0)
                {
                    return Err(bad(i, "qps", "qps must be a positive number"));
                }
                if *concurrency == Some(0) {
                    return Err(bad(i, "concurrency", "concurrency must be at least 1"));
                }
                if !matches!(control, LimitMode::Reject) && qps.is_none() {
                    return Err(bad(i, "control", "warm_up and queue need qps"));
                }
                if let LimitMode::WarmUp { warm_up_s } = control
                    && !(1..=3600).contains(warm_up_s)
                {
                    return Err(bad(i, "control/warm_up_s", "warm_up_s must be 1 to 3600"));
                }
                if let LimitMode::Queue { max_wait_ms } = control
                    && *max_wait_ms > 60_000
                {
                    // A queued call holds its client's connection while it waits.
                    return Err(bad(
                        i,
                        "control/max_wait_ms",
                        "max_wait_ms must be at most 60000",
                    ));
                }
            }
            Rule::CircuitBreaker {
                strategy,
                threshold,
                window_ms,
                slow_ms,
                open_ms,
                ..
            } => {
                let ratio = matches!(
                    strategy,
                    BreakerStrategy::ErrorRatio | BreakerStrategy::SlowRatio
                );
                if !threshold.is_finite()
                    || *threshold <= 0.0
                    || (ratio && *threshold > 1.0)
                    || (!ratio && threshold.fract() != 0.0)
                {
                    return Err(bad(
                        i,
                        "threshold",
                        "threshold is a ratio in (0, 1] or, for error_count, a whole count above 0",
                    ));
                }
                if *window_ms == 0 || *open_ms == 0 {
                    return Err(bad(i, "window_ms", "window_ms and open_ms must be above 0"));
                }
                if (*strategy == BreakerStrategy::SlowRatio) != slow_ms.is_some() {
                    return Err(bad(
                        i,
                        "slow_ms",
                        "slow_ms is required by slow_ratio, and only by it",
                    ));
                }
            }
            Rule::Access {
                callers, sources, ..
            } => {
                if callers.is_empty() && sources.is_empty() {
                    return Err(bad(i, "callers", "an access rule needs callers or sources"));
                }
                for (j, s) in sources.iter().enumerate() {
                    if Cidr::parse(s).is_none() {
                        return Err(bad(
                            i,
                            &format!("sources/{j}"),
                            format!("{s:?} is not an IP address or CIDR block"),
                        ));
                    }
                }
            }
            Rule::Route {
                version, percent, ..
            } => {
                if version.is_empty() || version[..version.len() - 1].contains('*') {
                    return Err(bad(i, "version", "a version, or a prefix ending in *"));
                }
                if *percent > 100 {
                    return Err(bad(i, "percent", "percent is 0-100"));
                }
            }
            Rule::ClusterSwitch { from, to } => {
                if to.is_empty() || to.len() > 128 || from.len() > 128 {
                    return Err(bad(i, "to", "to is a cluster name of 1-128 bytes"));
                }
                if from == to {
                    return Err(bad(i, "from", "from and to are the same cluster"));
                }
            }
            Rule::LoadShare { from, to, percent } => {
                if from.is_empty() || from.len() > 128 {
                    return Err(bad(i, "from", "from is a cluster name of 1-128 bytes"));
                }
                if to.is_empty() || to.len() > 128 {
                    return Err(bad(i, "to", "to is a cluster name of 1-128 bytes"));
                }
                if from == to {
                    return Err(bad(i, "to", "from and to are the same cluster"));
                }
                if *percent > 100 {
                    return Err(bad(i, "percent", "percent is 0-100"));
                }
            }
        }
    }
    Ok(())
}

/// FNV-1a 64 (the bucket function the configuration center's `percent` condition uses too).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl RuleSet {
    /// Whether the access rules admit a call from `caller` (application, may be empty) at `source`.
    ///
    /// A deny rule refuses a listed caller or source. An allow rule admits only its listed callers or
    /// sources. Every rule must admit the call.
    pub fn admits(&self, caller: &str, source: Option<std::net::IpAddr>) -> bool {
        self.rules.iter().all(|r| match r {
            Rule::Access {
                allow,
                callers,
                sources,
            } => {
                let listed = (!caller.is_empty() && callers.iter().any(|c| c == caller))
                    || source.is_some_and(|ip| {
                        sources
                            .iter()
                            .filter_map(|s| Cidr::parse(s))
                            .any(|c| c.contains(ip))
                    });
                listed == *allow
            }
            _ => true,
        })
    }

    /// The version pattern a call from `caller` with routing key `key` (e.g. a request id) must go to, and
    /// whether it must match it (`true`) or avoid it (`false`); `None` when no route rule applies.
    ///
    /// The first route rule whose callers include `caller` decides: the call lands in bucket
    /// `fnv1a(key) % 100`, below `percent` → the version, else → the others. Every client computes the same
    /// bucket for the same key.
    pub fn route(&self, caller: &str, key: &str) -> Option<(&str, bool)> {
        self.rules.iter().find_map(|r| match r {
            Rule::Route {
                callers,
                version,
                percent,
            } if callers.is_empty() || callers.iter().any(|c| c == caller) => {
                Some((version.as_str(), fnv1a(key) % 100 < *percent as u64))
            }
            _ => None,
        })
    }
}

/// A QPS limiter (token bucket refilled continuously), with Sentinel-style warm-up: after an idle period
/// the rate starts at a third of `qps` and climbs linearly to `qps` over the warm-up time.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    qps: f64,
    warm_up_ms: u64,
    tokens: f64,
    last_ms: u64,
    /// When the current warm-up started (a quiet period restarts it).
    warm_from_ms: u64,
}

impl TokenBucket {
    /// A bucket of `qps`, full at `now_ms`; `warm_up_s` 0 for none.
    pub fn new(qps: f64, warm_up_s: u64, now_ms: u64) -> Self {
        TokenBucket {
            qps,
            warm_up_ms: warm_up_s * 1000,
            tokens: if warm_up_s > 0 { 0.0 } else { qps.max(1.0) },
            last_ms: now_ms,
            warm_from_ms: now_ms,
        }
    }

    /// The rate in force at `now_ms`.
    pub fn rate(&self, now_ms: u64) -> f64 {
        if self.warm_up_ms == 0 {
            return self.qps;
        }
        let t = now_ms.saturating_sub(self.warm_from_ms) as f64 / self.warm_up_ms as f64;
        self.qps * (1.0 + 2.0 * t.min(1.0)) / 3.0
    }

    /// Takes one token at `now_ms`; false when over the limit.
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if self.warm_up_ms > 0 && elapsed >= self.warm_up_ms {
            // A quiet period: warm up again rather than letting a cold backend take the full rate.
            self.warm_from_ms = now_ms;
            self.tokens = 0.0;
        }
        let cap = self.rate(now_ms).max(1.0);
        self.tokens = (self.tokens + elapsed as f64 * self.rate(now_ms) / 1000.0).min(cap);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: Vec<Rule>) -> RuleSet {
        RuleSet {
            rules,
            ..Default::default()
        }
    }

    fn at(id: &str, cluster: &str, weight: u32) -> super::super::model::RegInstance {
        let mut i = super::super::model::RegInstance {
            id: id.into(),
            weight,
            ..Default::default()
        };
        if !cluster.is_empty() {
            i.tags.insert("cluster".into(), cluster.into());
        }
        i
    }

    fn shape(list: &[super::super::model::RegInstance]) -> Vec<(String, u32)> {
        list.iter().map(|i| (i.id.clone(), i.weight)).collect()
    }

    #[test]
    fn interventions_switch_clusters_and_share_load_by_weight() {
        let list = vec![
            at("a1", "a", 100),
            at("a2", "a", 100),
            at("b1", "b", 100),
            at("n", "", 50),
        ];
        let parse = |j: serde_json::Value| -> RuleSet {
            let r: Vec<Rule> = serde_json::from_value(j).unwrap();
            validate(&r).unwrap();
            set(r)
        };
        // Switch a → b: a's instances leave; the others stay.
        let rs = parse(serde_json::json!([{"kind": "cluster_switch", "from": "a", "to": "b"}]));
        assert_eq!(
            shape(&rs.intervene(list.clone())),
            [("b1".into(), 100), ("n".into(), 50)]
        );
        // Switch everything to b.
        let rs = parse(serde_json::json!([{"kind": "cluster_switch", "to": "b"}]));
        assert_eq!(shape(&rs.intervene(list.clone())), [("b1".into(), 100)]);
        // To a cluster with no instance: nothing changes (never blackhole).
        let rs = parse(serde_json::json!([{"kind": "cluster_switch", "to": "c"}]));
        assert_eq!(rs.intervene(list.clone()), list);
        // Share 30 % of a's traffic (weight 200) with b (100): a 140, b 160, total kept.
        let rs = parse(
            serde_json::json!([{"kind": "load_share", "from": "a", "to": "b", "percent": 30}]),
        );
        let out = shape(&rs.intervene(list.clone()));
        assert_eq!(
            out,
            [
                ("a1".into(), 70),
                ("a2".into(), 70),
                ("b1".into(), 160),
                ("n".into(), 50)
            ]
        );
        // 100 %: a gets weight 0 (no traffic); weights stay within the registry's bound.
        let big = vec![at("a1", "a", 10_000), at("b1", "b", 1)];
        let rs = parse(
            serde_json::json!([{"kind": "load_share", "from": "a", "to": "b", "percent": 100}]),
        );
        assert_eq!(
            shape(&rs.intervene(big)),
            [("a1".into(), 0), ("b1".into(), 10_000)]
        );
        // Validation names the field.
        let bad = |j: serde_json::Value| {
            let r: Vec<Rule> = serde_json::from_value(j).unwrap();
            validate(&r).map_err(|e| e.field)
        };
        assert_eq!(
            bad(serde_json::json!([{"kind": "cluster_switch", "from": "a", "to": "a"}])),
            Err(Some("rules/0/from".into()))
        );
        assert_eq!(
            bad(
                serde_json::json!([{"kind": "load_share", "from": "a", "to": "b", "percent": 101}])
            ),
            Err(Some("rules/0/percent".into()))
        );
        assert_eq!(
            bad(serde_json::json!([{"kind": "load_share", "from": "", "to": "b", "percent": 1}])),
            Err(Some("rules/0/from".into()))
        );
    }

    #[test]
    fn validation_names_the_field() {
        let parse = |j: serde_json::Value| -> Result<Vec<Rule>> {
            let r: Vec<Rule> =
                serde_json::from_value(j).map_err(|e| ControlError::bad("rules", e.to_string()))?;
            validate(&r)?;
            Ok(r)
        };
        let e = parse(serde_json::json!([{"kind": "rate_limit", "scope": "user"}])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules/0/qps"));
        let e = parse(serde_json::json!([
            {"kind": "access", "allow": false, "callers": ["x"]},
            {"kind": "access", "allow": true, "sources": ["10.0.0.0/33"]}
        ]))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules/1/sources/0"));
        let e = parse(
            serde_json::json!([{"kind": "circuit_breaker", "strategy": "error_ratio",
            "threshold": 1.5, "window_ms": 1000, "open_ms": 1000}]),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules/0/threshold"));
        assert!(
            parse(serde_json::json!([{"kind": "rate_limit", "qps": 10, "burst": 3}])).is_err(),
            "unknown fields are refused"
        );
        parse(serde_json::json!([
            {"kind": "rate_limit", "qps": 100, "scope": "user", "control": {"mode": "warm_up", "warm_up_s": 10}},
            {"kind": "circuit_breaker", "strategy": "slow_ratio", "threshold": 0.5, "window_ms": 1000,
             "slow_ms": 200, "open_ms": 5000},
            {"kind": "route", "callers": ["web"], "version": "2.*", "percent": 10}
        ]))
        .unwrap();
    }

    #[test]
    fn access_lists() {
        let ip = |s: &str| Some(s.parse().unwrap());
        let deny = set(vec![Rule::Access {
            allow: false,
            callers: vec!["bad".into()],
            sources: vec!["10.1.0.0/16".into()],
        }]);
        assert!(deny.admits("web", ip("10.2.0.1")));
        assert!(!deny.admits("bad", ip("10.2.0.1")));
        assert!(!deny.admits("web", ip("10.1.200.3")));
        let allow = set(vec![Rule::Access {
            allow: true,
            callers: vec![],
            sources: vec!["127.0.0.1".into(), "::1".into()],
        }]);
        assert!(allow.admits("", ip("127.0.0.1")));
        assert!(allow.admits("", ip("::1")));
        assert!(!allow.admits("", ip("127.0.0.2")));
        assert!(!allow.admits("", None));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn routing_shares_follow_percent() {
        let rs = set(vec![Rule::Route {
            callers: vec!["web".into()],
            version: "2.*".into(),
            percent: 10,
        }]);
        assert_eq!(rs.route("batch", "k"), None);
        let hits = (0..10_000)
            .filter(|i| rs.route("web", &format!("req-{i}")) == Some(("2.*", true)))
            .count();
        assert!((800..1200).contains(&hits), "{hits} of 10000");
        assert!(version_matches("2.*", "2.3.1") && !version_matches("2.*", "1.9"));
        assert!(version_matches("1.0", "1.0") && !version_matches("1.0", "1.0.1"));
    }

    #[test]
    fn token_bucket_limits_and_warms_up() {
        let mut b = TokenBucket::new(10.0, 0, 0);
        let taken = (0..100).filter(|_| b.try_acquire(0)).count();
        assert_eq!(taken, 10, "a full bucket holds one second");
        let taken = (0..100).filter(|_| b.try_acquire(500)).count();
        assert_eq!(taken, 5, "half a second refills half");
        let mut w = TokenBucket::new(300.0, 10, 0);
        assert!((w.rate(0) - 100.0).abs() < 1e-9);
        assert!((w.rate(10_000) - 300.0).abs() < 1e-9);
        let first_second = (0..1000).filter(|i| w.try_acquire(*i)).count();
        assert!(first_second < 150, "cold: {first_second}");
    }
}
