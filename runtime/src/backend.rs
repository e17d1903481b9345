//! Backend health and admin state shared by every executor.
//!
//! Executors look a server's [`BackendState`] up once when they build their per-core connections
//! (start-up and reload), then read and update it with relaxed atomics. The admin port flips
//! `admin_offline`; health checks and request failures drive ejection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use router::config::{Config, MAX_RATIO_BREAKERS};

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
    /// Answered requests by latency bucket (`router::latency`), for per-call statistics.
    pub latency_buckets: [AtomicU64; router::latency::BUCKETS],
    /// The answered requests' latencies added up, µs.
    pub latency_sum_us: AtomicU64,
    /// Replication lag in ms as last measured (MySQL replicas; u64::MAX: unknown).
    pub lag_ms: AtomicU64,
    /// Why the last failure failed (a connect error, a certificate refused ...), for the errors
    /// that tell clients a server is ejected. Written on failures only.
    last_error: std::sync::Mutex<Option<Box<str>>>,
    /// The ratio circuit breakers of the governance rules, each with its own window and half-open
    /// probe (set by [`BackendRegistry::sync`]; the first `ratio_n` are in use).
    ratio: [RatioState; MAX_RATIO_BREAKERS],
    /// How many of `ratio` are in use (0: none, and the data path checks nothing more).
    ratio_n: AtomicU32,
    /// Times a ratio breaker opened (tripped, or its half-open probe failed).
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
    /// Tripped: open until `open_until_ms`, then half-open until a probe's outcome closes it.
    tripped: AtomicBool,
    /// Open until this many ms after `epoch` (while tripped).
    open_until_ms: AtomicU64,
    /// When the half-open probe was let through (0: none yet).
    probe_at_ms: AtomicU64,
}

/// What one ratio breaker made of a call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RatioOutcome {
    /// Counted in the window; the breaker stayed closed.
    Counted,
    /// Counted, and the breaker opened on it (tripped, or its probe failed).
    Opened,
    /// The half-open probe succeeded: closed.
    Closed,
    /// A call that started before the breaker opened: decides nothing.
    Straggler,
}

impl RatioState {
    /// Sets this breaker (None: unused); a changed setting starts with an empty window.
    fn set(&self, b: Option<&router::config::RatioBreaker>) {
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
        let same = self.kind.load(Relaxed) == kind
            && self.threshold_ppm.load(Relaxed) == ppm
            && self.window_ms.load(Relaxed) == window
            && self.min_calls.load(Relaxed) == min
            && self.slow_us.load(Relaxed) == slow
            && self.open_ms.load(Relaxed) == open;
        if same {
            return;
        }
        self.kind.store(0, Relaxed);
        self.threshold_ppm.store(ppm, Relaxed);
        self.window_ms.store(window, Relaxed);
        self.min_calls.store(min, Relaxed);
        self.slow_us.store(slow, Relaxed);
        self.open_ms.store(open, Relaxed);
        for sl in &self.slices {
            sl.store(0, Relaxed);
        }
        self.tripped.store(false, Relaxed);
        self.open_until_ms.store(0, Relaxed);
        self.probe_at_ms.store(0, Relaxed);
        self.kind.store(kind, Relaxed);
    }

    /// Whether it holds requests back at `now` (open, or its half-open probe is out); otherwise
    /// `Some(probe_at)` when it waits for a probe (tripped, open time over), None when closed.
    fn blocks(&self, now: u64) -> Result<Option<u64>, ()> {
        if !self.tripped.load(Relaxed) {
            return Ok(None);
        }
        if now < self.open_until_ms.load(Relaxed) {
            return Err(());
        }
        let p = self.probe_at_ms.load(Relaxed);
        if p != 0 && now.saturating_sub(p) < self.open_ms.load(Relaxed) {
            return Err(());
        }
        Ok(Some(p))
    }

    /// Feeds one call's outcome at `now`.
    fn record(&self, failed: bool, latency: Duration, now: u64) -> RatioOutcome {
        let bad = match self.kind.load(Relaxed) {
            // Being set.
            0 => return RatioOutcome::Counted,
            1 => failed,
            _ => failed || latency.as_micros() as u64 > self.slow_us.load(Relaxed),
        };
        let open = self.open_ms.load(Relaxed);
        if self.tripped.load(Relaxed) {
            if now < self.open_until_ms.load(Relaxed) || self.probe_at_ms.load(Relaxed) == 0 {
                return RatioOutcome::Straggler;
            }
            if bad {
                self.open_until_ms.store(now + open, Relaxed);
                self.probe_at_ms.store(0, Relaxed);
                return RatioOutcome::Opened;
            }
            for sl in &self.slices {
                sl.store(0, Relaxed);
            }
            self.tripped.store(false, Relaxed);
            self.probe_at_ms.store(0, Relaxed);
            self.open_until_ms.store(0, Relaxed);
            return RatioOutcome::Closed;
        }
        let window = self.window_ms.load(Relaxed);
        let width = (window / SLICES as u64).max(1);
        let slice = now / width;
        let cell = &self.slices[(slice % SLICES as u64) as usize];
        let _ = cell.fetch_update(Relaxed, Relaxed, |v| {
            let (s, c, b) = unpack(v);
            Some(if s == slice & 0xff_ffff && v != 0 {
                pack(s, c + 1, b + bad as u64)
            } else {
                pack(slice, 1, bad as u64)
            })
        });
        let (mut calls, mut bads) = (0u64, 0u64);
        for sl in &self.slices {
            let (s, c, b) = unpack(sl.load(Relaxed));
            if (slice & 0xff_ffff).wrapping_sub(s) & 0xff_ffff < SLICES as u64 {
                calls += c;
                bads += b;
            }
        }
        if calls >= u64::from(self.min_calls.load(Relaxed))
            && calls > 0
            && bads * 1_000_000 >= calls * u64::from(self.threshold_ppm.load(Relaxed))
            && !self.tripped.swap(true, Relaxed)
        {
            self.probe_at_ms.store(0, Relaxed);
            self.open_until_ms.store(now + open, Relaxed);
            return RatioOutcome::Opened;
        }
        RatioOutcome::Counted
    }
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
            latency_buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            lag_ms: AtomicU64::new(u64::MAX),
            last_error: std::sync::Mutex::new(None),
            ratio: Default::default(),
            ratio_n: AtomicU32::new(0),
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

    /// The ratio breakers in use.
    #[inline]
    fn ratios(&self) -> &[RatioState] {
        let n = (self.ratio_n.load(Relaxed) as usize).min(MAX_RATIO_BREAKERS);
        &self.ratio[..n]
    }

    /// Whether the server is ejected after failures (and its retry time has not come). On the data
    /// path: when every tripped ratio breaker's open time is over, exactly one caller gets `false`
    /// (the half-open probe of each of them) until the probe's outcome is recorded, or `open_ms`
    /// passed without one.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        let ratios = self.ratios();
        // A healthy server without ratio breakers (every request's case) needs no clock read:
        // on a VM a read costs 40-60 ns, about 1 % of a proxied MySQL query.
        if until == 0 && ratios.is_empty() {
            return false;
        }
        let now = self.now_ms();
        if until != 0 && now < until {
            return true;
        }
        if ratios.is_empty() {
            return false;
        }
        // Any breaker that is open (or has its probe out) holds the request back; only then are the
        // probes of the half-open ones taken, so that one request probes them all.
        let mut probes = [None; MAX_RATIO_BREAKERS];
        for (i, r) in ratios.iter().enumerate() {
            match r.blocks(now) {
                Err(()) => return true,
                Ok(p) => probes[i] = p,
            }
        }
        for (r, p) in ratios.iter().zip(probes) {
            let Some(p) = p else { continue };
            // The probe: the caller that wins the exchange goes.
            if r.probe_at_ms
                .compare_exchange(p, now.max(1), Relaxed, Relaxed)
                .is_err()
            {
                return true;
            }
        }
        false
    }

    /// [`Self::ejected`] without taking a half-open probe (for admin output).
    fn ejected_view(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        if until == 0 && self.ratios().is_empty() {
            return false;
        }
        let now = self.now_ms();
        (until != 0 && now < until) || self.ratios().iter().any(|r| r.blocks(now).is_err())
    }

    /// Whether a ratio breaker is tripped (open or half-open).
    fn ratio_tripped(&self) -> bool {
        self.ratios().iter().any(|r| r.tripped.load(Relaxed))
    }

    /// Sets the ratio circuit breakers (the first [`MAX_RATIO_BREAKERS`] of `bs`); a changed setting
    /// starts with an empty window, an unchanged one keeps its state.
    pub fn set_ratio_breakers(&self, bs: &[router::config::RatioBreaker]) {
        let n = bs.len().min(MAX_RATIO_BREAKERS);
        if n < self.ratio_n.load(Relaxed) as usize {
            self.ratio_n.store(n as u32, Relaxed);
        }
        for (i, r) in self.ratio.iter().enumerate() {
            r.set(bs.get(i));
        }
        self.ratio_n.store(n as u32, Relaxed);
    }

    /// Feeds the ratio breakers one call's outcome: `(opened, decided)`: whether one opened on it,
    /// and whether it was a half-open probe or a straggler of an open breaker for one of them (then
    /// the count-based logic leaves the state alone).
    fn ratio_record(&self, failed: bool, latency: Duration) -> (bool, bool) {
        let ratios = self.ratios();
        if ratios.is_empty() {
            return (false, false);
        }
        let now = self.now_ms();
        let (mut opened, mut decided) = (false, false);
        for r in ratios {
            match r.record(failed, latency, now) {
                RatioOutcome::Counted => {}
                RatioOutcome::Opened => {
                    opened = true;
                    self.ratio_trips.fetch_add(1, Relaxed);
                }
                RatioOutcome::Closed => {
                    decided = true;
                    self.consecutive_failures.store(0, Relaxed);
                }
                RatioOutcome::Straggler => decided = true,
            }
        }
        (opened, decided)
    }

    /// Records a successful health check: clears the failure count and a count-based ejection, but
    /// leaves a tripped ratio breaker to its probe (a server that answers pings may still fail or be
    /// slow for requests).
    pub fn record_check_ok(&self, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until_ms.store(0, Relaxed);
        self.note_latency(latency);
    }

    fn note_latency(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.latency_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_us.store(new, Relaxed);
    }

    /// Records a success and its latency.
    pub fn record_ok(&self, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_buckets[router::latency::bucket(us)].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        let (_, decided) = self.ratio_record(false, latency);
        if decided || self.ratio_tripped() {
            // A probe or a straggler, or a breaker opened (by this very call's window): no
            // count-based reset.
            return;
        }
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until_ms.store(0, Relaxed);
        self.note_latency(latency);
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
        let (opened, decided) = self.ratio_record(true, Duration::ZERO);
        if opened {
            // A ratio breaker opened on this failure.
            return !was;
        }
        if decided {
            return false;
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
        let ratios = config
            .proxy
            .governance
            .as_ref()
            .map_or(&[][..], |g| g.breakers.as_slice());
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
            state.set_ratio_breakers(ratios);
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
        s.set_ratio_breakers(&[ratio(None, 30)]);
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
        s.set_ratio_breakers(&[ratio(Some(10), 60_000)]);
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
        s.set_ratio_breakers(&[]);
        assert!(s.usable());
        // Without a ratio breaker, nothing changes: consecutive failures eject, a check lifts it.
        assert!(s.record_failure(1, Duration::from_secs(60)));
        s.record_check_ok(Duration::from_millis(1));
        assert!(s.usable());
    }

    #[test]
    fn every_ratio_breaker_has_its_own_window_and_probe() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        // An error-ratio breaker that needs many calls, and a slow-ratio one that opens soon.
        let errors = router::config::RatioBreaker {
            min_calls: 6,
            ..ratio(None, 30)
        };
        let slow = ratio(Some(10), 80);
        s.set_ratio_breakers(&[errors, slow]);
        let (fast, late) = (Duration::from_millis(1), Duration::from_millis(50));
        s.record_ok(fast);
        s.record_ok(fast);
        s.record_ok(late);
        s.record_ok(late);
        assert!(!s.usable(), "2 slow of 4: the slow-ratio breaker opened");
        assert_eq!(s.ratio_trips.load(Relaxed), 1);
        // The error-ratio breaker counted the same calls in its own window (4 calls, no error).
        std::thread::sleep(Duration::from_millis(90));
        assert!(s.usable(), "the slow breaker's probe");
        assert!(!s.usable(), "one probe at a time");
        s.record_ok(fast);
        assert!(s.usable(), "the probe closed it");
        // Now failures. The error-ratio window holds 5 good calls; the slow one starts afresh.
        for _ in 0..3 {
            assert!(!s.record_failure(100, Duration::from_secs(60)));
        }
        assert!(
            s.usable(),
            "3 of 8 failed; the slow window has 3 calls (min 4)"
        );
        assert!(
            s.record_failure(100, Duration::from_secs(60)),
            "4 bad of 4: the slow breaker (failures are bad calls) opened again"
        );
        assert_eq!(s.ratio_trips.load(Relaxed), 2);
        std::thread::sleep(Duration::from_millis(90));
        assert!(s.usable(), "the slow breaker's probe");
        s.record_failure(100, Duration::from_secs(60));
        assert_eq!(
            s.ratio_trips.load(Relaxed),
            4,
            "the probe failed (slow opens again), and 5 of 10 opened the error breaker"
        );
        // Both open: the error one for 30 ms, the slow one for 80 ms.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!s.usable(), "the slow breaker is still open");
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.usable(), "both half-open: one probe for both");
        assert!(!s.usable());
        s.record_ok(fast);
        assert!(s.usable() && s.usable(), "the probe closed both");
        // Fewer rules: the breakers beyond are gone with their state.
        s.set_ratio_breakers(&[errors]);
        assert_eq!(s.ratios().len(), 1);
        s.set_ratio_breakers(&[]);
        assert!(s.ratios().is_empty());
    }

    #[test]
    fn ejection_expires() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        assert!(s.record_failure(1, Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.usable());
    }
}
