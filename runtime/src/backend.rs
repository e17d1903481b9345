//! Backend health and admin state shared by every executor.
//!
//! Executors look a server's [`BackendState`] up once when they build their per-core connections
//! (start-up and reload), then read and update it with relaxed atomics. The admin port flips
//! `admin_offline`; health checks and request failures drive ejection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use router::config::Config;

/// What a server is to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Redis shard.
    Shard,
    /// A MySQL primary.
    Primary,
    /// A MySQL replica.
    Replica,
}

impl Role {
    /// Name used in admin output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shard => "shard",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Live state of one backend server.
#[derive(Debug)]
pub struct BackendState {
    /// Group name.
    pub group: String,
    /// Server name (unique in its group).
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Role in the group.
    pub role: Role,
    /// Configured weight.
    pub weight: AtomicU32,
    /// Set by `BACKEND OFFLINE name`: no new requests are sent to it.
    pub admin_offline: AtomicBool,
    /// Consecutive failures (reset by a success).
    pub consecutive_failures: AtomicU32,
    /// Ejected until this many ms after `epoch` (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Failures (connect errors, timeouts, broken connections).
    pub errors: AtomicU64,
    /// Exponentially weighted latency in µs.
    pub latency_us: AtomicU64,
    /// Replication lag in ms as last measured (MySQL replicas; u64::MAX: unknown).
    pub lag_ms: AtomicU64,
    /// Why the last failure failed (a connect error, a certificate refused ...), for the errors
    /// that tell clients a server is ejected. Written on failures only.
    last_error: std::sync::Mutex<Option<Box<str>>>,
    /// The ratio circuit breaker of the governance rules (none unless set by [`BackendRegistry::sync`]).
    ratio: RatioState,
    /// Times the ratio breaker opened (tripped, or its half-open probe failed).
    pub ratio_trips: AtomicU64,
    epoch: Instant,
}

/// Slices of a ratio breaker's sliding window.
const SLICES: usize = 10;

/// A ratio circuit breaker's settings and window, as atomics (read on every recorded call, so no lock).
/// A slice packs `(slice number: 24 bits, calls: 20 bits, bad calls: 20 bits)`.
#[derive(Debug, Default)]
struct RatioState {
    /// 0: none; 1: error ratio; 2: slow-call ratio.
    kind: AtomicU32,
    threshold_ppm: AtomicU32,
    window_ms: AtomicU64,
    min_calls: AtomicU32,
    slow_us: AtomicU64,
    open_ms: AtomicU64,
    slices: [AtomicU64; SLICES],
    /// Tripped: open until `ejected_until_ms`, then half-open until a probe's outcome closes it.
    tripped: AtomicBool,
    /// When the half-open probe was let through (0: none yet).
    probe_at_ms: AtomicU64,
}

const CALLS_BITS: u32 = 20;
const CALLS_MAX: u64 = (1 << CALLS_BITS) - 1;

fn pack(slice: u64, calls: u64, bad: u64) -> u64 {
    ((slice & 0xff_ffff) << 40) | (calls.min(CALLS_MAX) << 20) | bad.min(CALLS_MAX)
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 40, (v >> 20) & CALLS_MAX, v & CALLS_MAX)
}

impl BackendState {
    fn new(
        group: &str,
        name: &str,
        address: &str,
        role: Role,
        weight: u32,
        epoch: Instant,
    ) -> Self {
        Self {
            group: group.to_string(),
            name: name.to_string(),
            address: address.to_string(),
            role,
            weight: AtomicU32::new(weight),
            admin_offline: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            lag_ms: AtomicU64::new(u64::MAX),
            last_error: std::sync::Mutex::new(None),
            ratio: RatioState::default(),
            ratio_trips: AtomicU64::new(0),
            epoch,
        }
    }

    /// Remembers why the last failure failed.
    pub fn note_error(&self, why: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why.into());
        }
    }

    /// Why the last failure failed, if known.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .ok()
            .and_then(|e| e.as_deref().map(str::to_string))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether requests may be sent now (not offline, not ejected). On the data path: a half-open ratio
    /// breaker lets the one caller that gets `true` send the probe.
    pub fn usable(&self) -> bool {
        !self.admin_offline.load(Relaxed) && !self.ejected()
    }

    /// Whether the server is ejected after failures (and its retry time has not come). On the data
    /// path: when a tripped ratio breaker's open time is over, exactly one caller gets `false` (the
    /// half-open probe) until the probe's outcome is recorded, or `open_ms` passed without one.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        let now = self.now_ms();
        if until != 0 && now < until {
            return true;
        }
        if !self.ratio.tripped.load(Relaxed) {
            return false;
        }
        let p = self.ratio.probe_at_ms.load(Relaxed);
        if p != 0 && now.saturating_sub(p) < self.ratio.open_ms.load(Relaxed) {
            return true;
        }
        // The probe: the caller that wins the exchange goes.
        self.ratio
            .probe_at_ms
            .compare_exchange(p, now.max(1), Relaxed, Relaxed)
            .is_err()
    }

    /// [`Self::ejected`] without taking a half-open probe (for admin output).
    fn ejected_view(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        let now = self.now_ms();
        (until != 0 && now < until)
            || (self.ratio.tripped.load(Relaxed) && {
                let p = self.ratio.probe_at_ms.load(Relaxed);
                p != 0 && now.saturating_sub(p) < self.ratio.open_ms.load(Relaxed)
            })
    }

    /// Sets the ratio circuit breaker (None: none); a changed setting starts with an empty window.
    pub fn set_ratio_breaker(&self, b: Option<&router::config::RatioBreaker>) {
        let r = &self.ratio;
        let (kind, ppm, window, min, slow, open) = match b {
            None => (0, 0, 0, 0, 0, 0),
            Some(b) => (
                if b.slow_ms.is_some() { 2 } else { 1 },
                (b.threshold * 1e6).round() as u32,
                b.window_ms.max(SLICES as u64),
                b.min_calls,
                b.slow_ms.unwrap_or(0).saturating_mul(1000),
                b.open_ms.max(1),
            ),
        };
        let same = r.kind.load(Relaxed) == kind
            && r.threshold_ppm.load(Relaxed) == ppm
            && r.window_ms.load(Relaxed) == window
            && r.min_calls.load(Relaxed) == min
            && r.slow_us.load(Relaxed) == slow
            && r.open_ms.load(Relaxed) == open;
        if same {
            return;
        }
        r.kind.store(0, Relaxed);
        r.threshold_ppm.store(ppm, Relaxed);
        r.window_ms.store(window, Relaxed);
        r.min_calls.store(min, Relaxed);
        r.slow_us.store(slow, Relaxed);
        r.open_ms.store(open, Relaxed);
        for sl in &r.slices {
            sl.store(0, Relaxed);
        }
        if r.tripped.swap(false, Relaxed) {
            self.ejected_until_ms.store(0, Relaxed);
        }
        r.probe_at_ms.store(0, Relaxed);
        r.kind.store(kind, Relaxed);
    }

    /// Feeds the ratio breaker one call's outcome; returns true when the call was the half-open
    /// probe or a straggler of an open breaker (then the count-based logic leaves the state alone).
    fn ratio_record(&self, failed: bool, latency: Duration) -> bool {
        let r = &self.ratio;
        let kind = r.kind.load(Relaxed);
        if kind == 0 {
            return false;
        }
        let bad = match kind {
            1 => failed,
            _ => failed || latency.as_micros() as u64 > r.slow_us.load(Relaxed),
        };
        let now = self.now_ms();
        let open = r.open_ms.load(Relaxed);
        if r.tripped.load(Relaxed) {
            let until = self.ejected_until_ms.load(Relaxed);
            if (until != 0 && now < until) || r.probe_at_ms.load(Relaxed) == 0 {
                // A call that started before the breaker opened: its outcome decides nothing.
                return true;
            }
            if bad {
                self.ejected_until_ms.store(now + open, Relaxed);
                r.probe_at_ms.store(0, Relaxed);
                self.ratio_trips.fetch_add(1, Relaxed);
            } else {
                for sl in &r.slices {
                    sl.store(0, Relaxed);
                }
                r.tripped.store(false, Relaxed);
                r.probe_at_ms.store(0, Relaxed);
                self.ejected_until_ms.store(0, Relaxed);
                self.consecutive_failures.store(0, Relaxed);
            }
            return true;
        }
        let window = r.window_ms.load(Relaxed);
        let width = (window / SLICES as u64).max(1);
        let slice = now / width;
        let cell = &r.slices[(slice % SLICES as u64) as usize];
        let _ = cell.fetch_update(Relaxed, Relaxed, |v| {
            let (s, c, b) = unpack(v);
            Some(if s == slice & 0xff_ffff && v != 0 {
                pack(s, c + 1, b + bad as u64)
            } else {
                pack(slice, 1, bad as u64)
            })
        });
        let (mut calls, mut bads) = (0u64, 0u64);
        for sl in &r.slices {
            let (s, c, b) = unpack(sl.load(Relaxed));
            if (slice & 0xff_ffff).wrapping_sub(s) & 0xff_ffff < SLICES as u64 {
                calls += c;
                bads += b;
            }
        }
        if calls >= u64::from(r.min_calls.load(Relaxed))
            && calls > 0
            && bads * 1_000_000 >= calls * u64::from(r.threshold_ppm.load(Relaxed))
            && !r.tripped.swap(true, Relaxed)
        {
            r.probe_at_ms.store(0, Relaxed);
            self.ejected_until_ms.store(now + open, Relaxed);
            self.ratio_trips.fetch_add(1, Relaxed);
        }
        false
    }

    /// Records a successful health check: clears the failure count and a count-based ejection, but
    /// leaves a tripped ratio breaker to its probe (a server that answers pings may still fail or be
    /// slow for requests).
    pub fn record_check_ok(&self, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        if !self.ratio.tripped.load(Relaxed) {
            self.ejected_until_ms.store(0, Relaxed);
        }
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.latency_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_us.store(new, Relaxed);
    }

    /// Records a success and its latency.
    pub fn record_ok(&self, latency: Duration) {
        if self.ratio_record(false, latency) {
            self.requests.fetch_add(1, Relaxed);
            return;
        }
        if self.ratio.tripped.load(Relaxed) {
            // Opened by this very call's window: no count-based reset.
            self.requests.fetch_add(1, Relaxed);
            return;
        }
        self.requests.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until_ms.store(0, Relaxed);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.latency_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_us.store(new, Relaxed);
    }

    /// Forgets past failures and any ejection (the server's address changed, as after a
    /// Sentinel failover: the new address starts with a clean record).
    pub fn clear_failures(&self) {
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until_ms.store(0, Relaxed);
    }

    /// Records a failure; ejects the server for `retry_after` once `eject_after` failures in a row
    /// happened. Returns whether this call ejected it.
    pub fn record_failure(&self, eject_after: u32, retry_after: Duration) -> bool {
        self.errors.fetch_add(1, Relaxed);
        let was = self.ejected_view();
        if self.ratio_record(true, Duration::ZERO) {
            return false;
        }
        if !was && self.ejected_view() {
            // The ratio breaker opened on this failure.
            return true;
        }
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= eject_after && !self.ejected_view() {
            let until = self.now_ms() + retry_after.as_millis() as u64;
            self.ejected_until_ms.store(until.max(1), Relaxed);
            return true;
        }
        false
    }

    /// A short state word for admin output: `offline`, `ejected` or `up`.
    pub fn state_word(&self) -> &'static str {
        if self.admin_offline.load(Relaxed) {
            "offline"
        } else if self.ejected_view() {
            "ejected"
        } else {
            "up"
        }
    }
}

/// Every backend of the current config, by (group, server name).
pub struct BackendRegistry {
    map: RwLock<BTreeMap<(String, String), Arc<BackendState>>>,
    epoch: Instant,
}

impl BackendRegistry {
    /// Builds the registry for `config`.
    pub fn new(config: &Config) -> Self {
        let r = Self {
            map: RwLock::new(BTreeMap::new()),
            epoch: Instant::now(),
        };
        r.sync(config);
        r
    }

    /// Brings the registry in line with a new config: keeps the state of servers that remain (same
    /// group, name and address), adds new ones, drops removed ones.
    pub fn sync(&self, config: &Config) {
        let mut want: Vec<(&str, &router::config::Server, Role)> = Vec::new();
        // Redis replicas are entries of their own, named `server@host:port`.
        let redis_replicas: Vec<(&str, Vec<router::config::Server>)> = config
            .redis_groups
            .iter()
            .map(|g| {
                let list = g.servers.iter().flat_map(|s| s.replica_servers());
                (g.name.as_str(), list.collect())
            })
            .collect();
        for g in &config.redis_groups {
            want.extend(g.servers.iter().map(|s| (g.name.as_str(), s, Role::Shard)));
        }
        for (group, list) in &redis_replicas {
            want.extend(list.iter().map(|s| (*group, s, Role::Replica)));
        }
        for g in &config.mysql_groups {
            want.push((g.name.as_str(), &g.primary, Role::Primary));
            want.extend(
                g.replicas
                    .iter()
                    .map(|s| (g.name.as_str(), s, Role::Replica)),
            );
        }
        let ratio = config
            .proxy
            .governance
            .as_ref()
            .and_then(|g| g.breaker.as_ref());
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for (group, s, role) in want {
            let key = (group.to_string(), s.name.clone());
            let state = match map.remove(&key) {
                Some(old) if old.address == s.address && old.role == role => {
                    old.weight.store(s.weight, Relaxed);
                    old
                }
                _ => Arc::new(BackendState::new(
                    group, &s.name, &s.address, role, s.weight, self.epoch,
                )),
            };
            state.set_ratio_breaker(ratio);
            next.insert(key, state);
        }
        *map = next;
    }

    /// The state of `server` in `group`.
    pub fn get(&self, group: &str, server: &str) -> Option<Arc<BackendState>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(group.to_string(), server.to_string())).cloned()
    }

    /// Every backend whose server name (or `group/name`) is `name`.
    pub fn find(&self, name: &str) -> Vec<Arc<BackendState>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|s| {
                s.name == name || format!("{}/{}", s.group, s.name) == name || s.address == name
            })
            .cloned()
            .collect()
    }

    /// All backends, ordered by group then name.
    pub fn all(&self) -> Vec<Arc<BackendState>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_after_consecutive_failures_and_recovery() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        assert!(s.usable());
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        assert!(!s.record_failure(3, Duration::from_secs(60)));
        assert!(s.record_failure(3, Duration::from_secs(60)));
        assert!(!s.usable());
        assert_eq!(s.state_word(), "ejected");
        s.record_ok(Duration::from_micros(100));
        assert!(s.usable());
        s.admin_offline.store(true, Relaxed);
        assert_eq!(s.state_word(), "offline");
    }

    #[test]
    fn clear_failures_lifts_ejection() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        assert!(s.record_failure(1, Duration::from_secs(60)));
        assert!(!s.usable());
        s.clear_failures();
        assert!(s.usable());
        assert_eq!(s.consecutive_failures.load(Relaxed), 0);
    }

    #[test]
    fn redis_replicas_get_replica_entries() {
        let config = router::config::parse(
            "t.toml",
            r#"
[[listeners]]
name = "c"
kind = "redis"
address = "127.0.0.1:1"
group = "g"
[redis_groups.g]
read_from = "replica"
servers = [{ name = "r1", address = "127.0.0.1:2", replicas = ["127.0.0.1:3"] }]
"#,
        )
        .expect("valid config");
        let reg = BackendRegistry::new(&config);
        let shard = reg.get("g", "r1").expect("shard entry");
        assert_eq!(shard.role, Role::Shard);
        let replica = reg.get("g", "r1@127.0.0.1:3").expect("replica entry");
        assert_eq!(replica.role, Role::Replica);
        assert_eq!(replica.address, "127.0.0.1:3");
        assert_eq!(reg.all().len(), 2);
    }

    fn ratio(slow_ms: Option<u64>, open_ms: u64) -> router::config::RatioBreaker {
        router::config::RatioBreaker {
            slow_ms,
            threshold: 0.5,
            window_ms: 60_000,
            min_calls: 4,
            open_ms,
        }
    }

    #[test]
    fn error_ratio_breaker_opens_probes_once_and_closes() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        s.set_ratio_breaker(Some(&ratio(None, 30)));
        let ms = Duration::from_millis(1);
        s.record_ok(ms);
        // Count-based ejection is far away: only the ratio can open it.
        assert!(!s.record_failure(100, Duration::from_secs(60)));
        s.record_ok(ms);
        assert!(s.usable(), "1 of 3 failed, below min_calls anyway");
        assert!(
            s.record_failure(100, Duration::from_secs(60)),
            "2 of 4: the ratio reached 0.5"
        );
        assert!(!s.usable());
        assert_eq!(s.state_word(), "ejected");
        assert_eq!(s.ratio_trips.load(Relaxed), 1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.state_word(), "up", "open time over, no probe taken yet");
        assert!(s.usable(), "the probe");
        assert!(!s.usable(), "one probe at a time");
        assert_eq!(s.state_word(), "ejected");
        s.record_failure(100, Duration::from_secs(60));
        assert!(!s.usable(), "the probe failed: open again");
        assert_eq!(s.ratio_trips.load(Relaxed), 2);
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.usable(), "the next probe");
        s.record_ok(ms);
        assert!(s.usable() && s.usable(), "closed");
        // A closed breaker starts with an empty window.
        s.record_failure(100, Duration::from_secs(60));
        assert!(s.usable());
    }

    #[test]
    fn slow_ratio_breaker_and_health_checks() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        s.set_ratio_breaker(Some(&ratio(Some(10), 60_000)));
        for _ in 0..2 {
            s.record_ok(Duration::from_millis(1));
        }
        s.record_ok(Duration::from_millis(50));
        assert!(s.usable());
        s.record_ok(Duration::from_millis(50));
        assert!(!s.usable(), "2 of 4 calls were slow");
        s.record_check_ok(Duration::from_millis(1));
        assert!(
            !s.usable(),
            "a passing health check does not close a ratio breaker"
        );
        // Removing the rule lifts it.
        s.set_ratio_breaker(None);
        assert!(s.usable());
        // Without a ratio breaker, nothing changes: consecutive failures eject, a check lifts it.
        assert!(s.record_failure(1, Duration::from_secs(60)));
        s.record_check_ok(Duration::from_millis(1));
        assert!(s.usable());
    }

    #[test]
    fn ejection_expires() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        assert!(s.record_failure(1, Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.usable());
    }
}
