//! Governance rules in force on a proxy, as the data path sees them.
//!
//! The rules themselves are published on the proxy's registry service (`[registry] service`) and
//! translated by the proxy process into what the data path already enforces: per-user rate limits
//! become `limit` rules of every MySQL group, error-count circuit breakers become the groups'
//! `circuit_break_after` / `eject_after` settings. Only what has no place in the config so far lives
//! here: the client source lists (black/white lists of addresses), checked once per client connection
//! at accept, never per request, the caller lists (checked when a client logs in), the ratio breakers'
//! settings, and the rate and concurrency limits of Redis commands ([`CommandLimit`], decided by
//! [`Pacer`]s: token bucket, warm-up or leaky-bucket queue; [`ConcurrencyLimit`], counted by
//! [`InFlight`]; the MySQL `limit` rules use the same [`Pacer`]). A config without governance has
//! `None` here, and the check is one branch on an `Option`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Every list must admit a client's caller (its proxy user) when it logs in.
    pub callers: Vec<CallerList>,
    /// Logins refused by `callers` (shared by every version, so it only grows).
    pub refused_callers: Arc<AtomicU64>,
    /// The circuit breakers by error or slow-call ratio of every backend (each rule its own window
    /// and half-open probe; at most [`MAX_RATIO_BREAKERS`]).
    pub breakers: Vec<RatioBreaker>,
    /// Concurrency limits on the commands of Redis listeners (empty: none). MySQL listeners enforce
    /// theirs as `limit` rules of their groups.
    pub concurrency: Vec<ConcurrencyLimit>,
    /// Rate limits on the commands of Redis listeners (empty: none, and nothing is checked). MySQL
    /// listeners enforce theirs as `limit` rules of their groups.
    pub limits: Vec<CommandLimit>,
    /// The state of `limits`, shared by every core and kept across resolutions of the same rule set.
    pub budgets: Arc<PaceBudgets>,
}

/// One caller list (a governance `access` rule with `callers`): `allow` admits only the listed
/// callers, a deny list refuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerList {
    /// Allow list (true) or deny list (false).
    pub allow: bool,
    /// The callers (proxy users).
    pub callers: Vec<String>,
    /// Text added to the error clients get (names the rule and its version).
    pub message: String,
}

/// The most ratio breakers a backend carries (further rules are shown as not enforced).
pub const MAX_RATIO_BREAKERS: usize = 8;

/// A governance concurrency limit on the commands of Redis listeners: at most `max` commands awaiting
/// their replies at once, over every core (per user or for the whole proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    /// The rule's index in its rule set (the counter's key).
    pub rule: usize,
    /// Commands in flight at most.
    pub max: u32,
    /// One count per user (true) or one for the whole proxy (false).
    pub per_user: bool,
    /// The users it applies to (empty: all).
    pub users: Vec<String>,
    /// Text added to the error clients get (names the rule and its version).
    pub message: String,
}

/// How a rate limit treats a call above its rate (a governance rule's `control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// Refused at once (a token bucket holding one second of tokens).
    #[default]
    Reject,
    /// Sentinel's warm-up: the rate climbs linearly from a third of the limit to the limit over
    /// `warm_up_ms`, from the first call and again after a quiet period of that length (a cold
    /// backend is not hit with the full rate at once).
    WarmUp {
        /// How long the climb takes, ms.
        warm_up_ms: u64,
    },
    /// Leaky bucket: calls leave evenly spaced (`1/qps` apart) and wait for their turn up to
    /// `max_wait_ms`; a call whose turn is further away is refused.
    Queue {
        /// The longest wait, ms.
        max_wait_ms: u64,
    },
}

/// What a [`Pacer`] answers for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go now.
    Now,
    /// Go after this many microseconds (the call's turn in a queue is reserved).
    Wait(u64),
    /// Over the limit.
    Refused,
}

/// The state of one rate budget: a token bucket (with warm-up) or a leaky-bucket queue, depending on
/// the [`Pace`] it is asked with. Pure: the clock (microseconds from any fixed origin) is passed in,
/// so tests control time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    tokens: f64,
    last_us: u64,
    /// When the current warm-up began.
    warm_from_us: u64,
    /// The queue's next free turn, µs.
    next_us: f64,
}

impl Pacer {
    /// A budget first used at `now_us`: a full second of tokens for `Reject` at `qps`, one token for a
    /// cold `WarmUp`, an empty queue.
    pub fn new(qps: f64, pace: Pace, now_us: u64) -> Self {
        Pacer {
            tokens: match pace {
                Pace::WarmUp { .. } => 1.0,
                _ => qps.max(1.0),
            },
            last_us: now_us,
            warm_from_us: now_us,
            next_us: now_us as f64,
        }
    }

    /// The rate in force at `now_us` (below `qps` while warming up).
    pub fn rate(&self, qps: f64, pace: Pace, now_us: u64) -> f64 {
        match pace {
            Pace::WarmUp { warm_up_ms } if warm_up_ms > 0 => {
                let t = now_us.saturating_sub(self.warm_from_us) as f64 / (warm_up_ms as f64 * 1e3);
                qps * (1.0 + 2.0 * t.min(1.0)) / 3.0
            }
            _ => qps,
        }
    }

    /// Decides one call at `now_us` against `qps` (> 0). A refusal changes nothing; an admitted
    /// call takes its token or its turn.
    pub fn take(&mut self, qps: f64, pace: Pace, now_us: u64) -> Admit {
        let qps = if qps > 0.0 { qps } else { f64::MIN_POSITIVE };
        match pace {
            Pace::Queue { max_wait_ms } => {
                let now = now_us as f64;
                let at = self.next_us.max(now);
                let wait = at - now;
                if wait > max_wait_ms as f64 * 1e3 {
                    return Admit::Refused;
                }
                self.next_us = at + 1e6 / qps;
                if wait < 1.0 {
                    Admit::Now
                } else {
                    Admit::Wait(wait as u64)
                }
            }
            Pace::Reject | Pace::WarmUp { .. } => {
                let mut elapsed = now_us.saturating_sub(self.last_us);
                if let Pace::WarmUp { warm_up_ms } = pace
                    && elapsed >= warm_up_ms.saturating_mul(1000)
                    && now_us > self.warm_from_us
                {
                    // Quiet for a whole warm-up period: the backend is cold again, and the quiet
                    // time earns no burst.
                    self.warm_from_us = now_us;
                    self.tokens = 1.0;
                    elapsed = 0;
                }
                let rate = self.rate(qps, pace, now_us);
                let cap = rate.max(1.0);
                self.tokens = (self.tokens + elapsed as f64 * rate / 1e6).min(cap);
                self.last_us = self.last_us.max(now_us);
                if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    Admit::Now
                } else {
                    Admit::Refused
                }
            }
        }
    }
}

/// A governance rate limit on the commands of Redis listeners.
#[derive(Debug, Clone)]
pub struct CommandLimit {
    /// The rule's index in its rule set (the budget's key and the error's text).
    pub rule: usize,
    /// Commands per second.
    pub qps: f64,
    /// One budget per user (true) or one for the whole listener set (false).
    pub per_user: bool,
    /// The users it applies to (empty: all).
    pub users: Vec<String>,
    /// What happens above the rate.
    pub pace: Pace,
    /// A cluster-wide budget that replaces the local one.
    pub cluster: Option<Arc<dyn ClusterBudget>>,
    /// Text added to the error clients get (names the rule and its version).
    pub message: String,
}

impl CommandLimit {
    /// Whether the limit counts `user`'s commands.
    pub fn applies_to(&self, user: &str) -> bool {
        self.users.is_empty() || self.users.iter().any(|u| u == user)
    }
}

/// `(rule, user)` → its pacer.
type PacerMap = HashMap<(usize, String), Pacer>;

/// `(rule, user)` → commands in flight.
type CounterMap = HashMap<(usize, String), Arc<AtomicU64>>;

/// The most budgets kept (per-user budgets of many users cannot grow without bound).
pub const MAX_PACE_BUDGETS: usize = 100_000;

/// The budgets of [`CommandLimit`]s, shared by every core: `(rule, user)` → [`Pacer`], for one rule
/// set version at a time (a new version starts afresh).
#[derive(Debug, Default)]
pub struct PaceBudgets {
    /// The rule set version and its budgets.
    inner: Mutex<(u64, PacerMap)>,
    /// Commands refused by a limit (over every version).
    pub refused: AtomicU64,
    /// Commands that waited for their turn in a queueing limit.
    pub queued: AtomicU64,
    /// The in-flight counters of concurrency limits, `(rule, user)` → commands in flight, for one
    /// rule set version at a time (sessions hold their counters, so a new version's counts start
    /// at zero while the old commands still give theirs back).
    inflight: Mutex<(u64, CounterMap)>,
    /// Commands refused by a concurrency limit (over every version).
    pub over_concurrency: AtomicU64,
    /// MySQL statements refused by a governance rate limit (its `limit` rule).
    pub statements_refused: AtomicU64,
    /// MySQL statements refused by a governance concurrency limit.
    pub statements_over_concurrency: AtomicU64,
}

impl PaceBudgets {
    /// Decides a call of `user` against `limit` of rule set `version` at `now_us`.
    pub fn take(&self, version: u64, limit: &CommandLimit, user: &str, now_us: u64) -> Admit {
        let who = if limit.per_user { user } else { "" };
        if let Some(c) = &limit.cluster {
            return if c.try_take(who) {
                Admit::Now
            } else {
                Admit::Refused
            };
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (v, map) = &mut *g;
        if *v != version {
            *v = version;
            map.clear();
        }
        if map.len() >= MAX_PACE_BUDGETS && !map.contains_key(&(limit.rule, who.to_string())) {
            // Idle budgets are the ones a restart loses least with; dropping all is bounded and rare.
            map.clear();
        }
        map.entry((limit.rule, who.to_string()))
            .or_insert_with(|| Pacer::new(limit.qps, limit.pace, now_us))
            .take(limit.qps, limit.pace, now_us)
    }
}

/// One session's hold on the concurrency limits that count its user's commands: the counters it
/// raised, given back as the replies come (and all of them when it is dropped).
#[derive(Debug)]
pub struct InFlight {
    version: u64,
    user: String,
    /// `(counter, max, index in Governance::concurrency)`.
    counters: Vec<(Arc<AtomicU64>, u32, usize)>,
    held: u64,
}

impl InFlight {
    /// Whether this hold was made for `user` under rule set `version`.
    pub fn is_for(&self, version: u64, user: &str) -> bool {
        self.version == version && self.user == user
    }

    /// Commands of this session counted in flight.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Counts one more command in flight on every counter, or none and `Err(index of the limit)`
    /// when one is full.
    pub fn acquire(&mut self) -> Result<(), usize> {
        for (i, (c, max, limit)) in self.counters.iter().enumerate() {
            let taken = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v < u64::from(*max)).then_some(v + 1)
            });
            if taken.is_err() {
                for (c, _, _) in &self.counters[..i] {
                    c.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(*limit);
            }
        }
        self.held += 1;
        Ok(())
    }

    /// Gives back what is held above `pending` (the session's replies still awaited).
    pub fn release_to(&mut self, pending: u64) {
        if self.held > pending {
            let n = self.held - pending;
            for (c, _, _) in &self.counters {
                let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    Some(v.saturating_sub(n))
                });
            }
            self.held = pending;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// Microseconds on a process-wide monotonic clock (the time base of the proxies' [`Pacer`]s).
pub fn pace_clock_us() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
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
    /// Decides one Redis command of `user` at `now_us` against every limit that counts it: `Ok` with
    /// the wait in µs (0: go now), or `Err` with the limit that refused it. All limits are checked
    /// in order; a refusal by a later one does not give back what an earlier one took.
    pub fn admit_command(&self, user: &str, now_us: u64) -> Result<u64, &CommandLimit> {
        let mut wait = 0;
        for l in &self.limits {
            if !l.applies_to(user) {
                continue;
            }
            match self.budgets.take(self.version, l, user, now_us) {
                Admit::Now => {}
                Admit::Wait(us) => wait = wait.max(us),
                Admit::Refused => {
                    self.budgets.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(l);
                }
            }
        }
        if wait > 0 {
            self.budgets.queued.fetch_add(1, Ordering::Relaxed);
        }
        Ok(wait)
    }

    /// A hold on the concurrency limits that count `user`'s commands (with no counter when none
    /// counts them: then every command is admitted).
    pub fn in_flight(&self, user: &str) -> InFlight {
        let applies: Vec<(usize, &ConcurrencyLimit)> = self
            .concurrency
            .iter()
            .enumerate()
            .filter(|(_, l)| l.users.is_empty() || l.users.iter().any(|u| u == user))
            .collect();
        let mut g = self
            .budgets
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (v, map) = &mut *g;
        if *v != self.version {
            *v = self.version;
            map.clear();
        }
        if map.len() >= MAX_PACE_BUDGETS {
            // Counters nobody holds are the only ones that can go.
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let counters = applies
            .into_iter()
            .map(|(i, l)| {
                let who = if l.per_user { user } else { "" };
                let c = map.entry((l.rule, who.to_string())).or_default().clone();
                (c, l.max, i)
            })
            .collect();
        InFlight {
            version: self.version,
            user: user.to_string(),
            counters,
            held: 0,
        }
    }

    /// Whether a client logging in as `caller` is admitted: `Err` with the list that refused it
    /// (the refusal is counted).
    pub fn admits_caller(&self, caller: &str) -> Result<(), &CallerList> {
        for l in &self.callers {
            if l.callers.iter().any(|c| c == caller) != l.allow {
                self.refused_callers.fetch_add(1, Ordering::Relaxed);
                return Err(l);
            }
        }
        Ok(())
    }

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

    /// Calls admitted when one is tried every `step_us` from `from_us` to `to_us` (exclusive).
    fn admitted(
        p: &mut Pacer,
        qps: f64,
        pace: Pace,
        from_us: u64,
        to_us: u64,
        step_us: u64,
    ) -> u32 {
        (from_us..to_us)
            .step_by(step_us as usize)
            .filter(|t| p.take(qps, pace, *t) == Admit::Now)
            .count() as u32
    }

    #[test]
    fn reject_allows_a_second_of_burst_then_the_rate() {
        let mut p = Pacer::new(10.0, Pace::Reject, 0);
        // A full bucket: 10 at once, then refused without taking anything.
        assert_eq!(admitted(&mut p, 10.0, Pace::Reject, 0, 20, 1), 10);
        assert_eq!(p.take(10.0, Pace::Reject, 50_000), Admit::Refused);
        // Then one per 100 ms.
        assert_eq!(p.take(10.0, Pace::Reject, 100_100), Admit::Now);
        assert_eq!(p.take(10.0, Pace::Reject, 150_000), Admit::Refused);
        assert_eq!(
            admitted(&mut p, 10.0, Pace::Reject, 200_000, 10_200_000, 1_000),
            100
        );
    }

    #[test]
    fn warm_up_climbs_from_a_third_to_the_full_rate() {
        let pace = Pace::WarmUp { warm_up_ms: 10_000 };
        let mut p = Pacer::new(300.0, pace, 0);
        assert!((p.rate(300.0, pace, 0) - 100.0).abs() < 1e-9);
        assert!((p.rate(300.0, pace, 5_000_000) - 200.0).abs() < 1e-9);
        assert!((p.rate(300.0, pace, 20_000_000) - 300.0).abs() < 1e-9);
        // Offered 1,000 calls a second: the first second admits about a third of the limit (no
        // burst of a full bucket), the tenth about the whole limit, and later seconds the limit.
        let first = admitted(&mut p, 300.0, pace, 0, 1_000_000, 1_000);
        assert!((95..=120).contains(&first), "first second: {first}");
        let mid = admitted(&mut p, 300.0, pace, 1_000_000, 9_000_000, 1_000);
        let tenth = admitted(&mut p, 300.0, pace, 9_000_000, 10_000_000, 1_000);
        assert!((280..=301).contains(&tenth), "tenth second: {tenth}");
        assert!(mid > 8 * first && mid < 8 * tenth, "seconds 2-9: {mid}");
        let warm = admitted(&mut p, 300.0, pace, 10_000_000, 12_000_000, 1_000);
        assert!((598..=601).contains(&warm), "warm: {warm}");
        // Quiet for a whole warm-up period: cold again.
        let again = admitted(&mut p, 300.0, pace, 30_000_000, 31_000_000, 1_000);
        assert!((95..=120).contains(&again), "after a quiet period: {again}");
    }

    #[test]
    fn queue_paces_calls_evenly_and_refuses_beyond_the_longest_wait() {
        let pace = Pace::Queue { max_wait_ms: 500 };
        let mut p = Pacer::new(10.0, pace, 1_000_000);
        // A burst of 8 at once: turns 100 ms apart, the 6th waits 500 ms, the 7th would wait 600.
        let answers: Vec<Admit> = (0..8).map(|_| p.take(10.0, pace, 1_000_000)).collect();
        assert_eq!(answers[0], Admit::Now);
        for (i, a) in answers.iter().enumerate().take(6).skip(1) {
            assert_eq!(*a, Admit::Wait(i as u64 * 100_000), "call {i}");
        }
        assert_eq!(answers[6], Admit::Refused);
        assert_eq!(answers[7], Admit::Refused);
        // A refusal took no turn: 550 ms later the next turn (at +600 ms) is 50 ms away.
        assert_eq!(p.take(10.0, pace, 1_550_000), Admit::Wait(50_000));
        // After the queue drained, a call goes at once.
        assert_eq!(p.take(10.0, pace, 5_000_000), Admit::Now);
        // A zero wait is plain rate limiting with even spacing.
        let strict = Pace::Queue { max_wait_ms: 0 };
        let mut p = Pacer::new(10.0, strict, 0);
        assert_eq!(admitted(&mut p, 10.0, strict, 0, 1_000_000, 1_000), 10);
    }

    #[test]
    fn command_limits_count_per_user_and_reset_with_a_new_version() {
        let limit = |rule, per_user, users: &[&str], pace| CommandLimit {
            rule,
            qps: 2.0,
            per_user,
            users: users.iter().map(|u| u.to_string()).collect(),
            pace,
            cluster: None,
            message: String::new(),
        };
        let mut g = Governance {
            version: 1,
            limits: vec![limit(0, true, &[], Pace::Reject)],
            ..Default::default()
        };
        assert_eq!(g.admit_command("a", 0).map_err(|l| l.rule), Ok(0));
        assert_eq!(g.admit_command("a", 1).map_err(|l| l.rule), Ok(0));
        assert_eq!(g.admit_command("a", 2).map_err(|l| l.rule), Err(0));
        // Another user has a budget of its own.
        assert_eq!(g.admit_command("b", 3).map_err(|l| l.rule), Ok(0));
        // A limit for some users only; a queueing one answers the wait.
        g.limits
            .push(limit(1, false, &["c"], Pace::Queue { max_wait_ms: 600 }));
        assert_eq!(g.admit_command("c", 10).map_err(|l| l.rule), Ok(0));
        assert_eq!(g.admit_command("c", 20).map_err(|l| l.rule), Ok(499_990));
        assert_eq!(g.admit_command("c", 30).map_err(|l| l.rule), Err(0));
        assert_eq!(g.admit_command("b", 40).map_err(|l| l.rule), Ok(0));
        // A new version: fresh budgets.
        g.version = 2;
        assert_eq!(g.admit_command("a", 600_000).map_err(|l| l.rule), Ok(0));
        assert_eq!(g.budgets.refused.load(Ordering::Relaxed), 2);
        assert_eq!(g.budgets.queued.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn concurrency_limits_count_commands_in_flight_per_user_and_in_all() {
        let limit = |rule, max, per_user, users: &[&str]| ConcurrencyLimit {
            rule,
            max,
            per_user,
            users: users.iter().map(|u| u.to_string()).collect(),
            message: String::new(),
        };
        let g = Governance {
            version: 1,
            concurrency: vec![limit(0, 2, true, &[]), limit(3, 3, false, &["a", "b"])],
            ..Default::default()
        };
        let mut a1 = g.in_flight("a");
        let mut a2 = g.in_flight("a");
        let mut b = g.in_flight("b");
        assert!(a1.is_for(1, "a") && !a1.is_for(2, "a") && !a1.is_for(1, "b"));
        assert_eq!(a1.acquire(), Ok(()));
        assert_eq!(a2.acquire(), Ok(()));
        // Two sessions of `a` fill its per-user count: the third is refused by rule 0.
        assert_eq!(a2.acquire(), Err(0));
        assert_eq!(a2.held(), 1, "a refusal holds nothing");
        // `b` has its own per-user count but shares rule 3's three with `a`.
        assert_eq!(b.acquire(), Ok(()));
        assert_eq!(b.acquire(), Err(1));
        // A reply came back to a1: its slot is free again, on both counters.
        a1.release_to(0);
        assert_eq!(b.acquire(), Ok(()));
        assert_eq!(b.held(), 2);
        // A session that ends gives back everything it held.
        drop(b);
        assert_eq!(a1.acquire(), Ok(()));
        // Another user is not in rule 3's list: only its own per-user count applies.
        let mut c = g.in_flight("c");
        assert_eq!(
            (c.acquire(), c.acquire(), c.acquire()),
            (Ok(()), Ok(()), Err(0))
        );
        // A new version starts with fresh counts.
        let g2 = Governance {
            version: 2,
            budgets: g.budgets.clone(),
            ..g.clone()
        };
        let mut c2 = g2.in_flight("c");
        assert_eq!(c2.acquire(), Ok(()));
        // A user no limit counts is always admitted.
        let free = Governance {
            concurrency: vec![limit(0, 1, true, &["a"])],
            ..g.clone()
        };
        let mut d = free.in_flight("d");
        assert_eq!((d.acquire(), d.acquire()), (Ok(()), Ok(())));
    }

    #[test]
    fn caller_lists_admit_and_refuse_logins() {
        let g = Governance {
            callers: vec![
                CallerList {
                    allow: false,
                    callers: vec!["crawler".into()],
                    message: "rule 0".into(),
                },
                CallerList {
                    allow: true,
                    callers: vec!["web".into(), "crawler".into(), "batch".into()],
                    message: "rule 1".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(g.admits_caller("web"), Ok(()));
        assert_eq!(
            g.admits_caller("crawler").map_err(|l| l.message.as_str()),
            Err("rule 0")
        );
        assert_eq!(
            g.admits_caller("other").map_err(|l| l.message.as_str()),
            Err("rule 1")
        );
        assert_eq!(g.refused_callers.load(Ordering::Relaxed), 2);
    }
}
