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
    epoch: Instant,
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

    /// Whether requests may be sent now (not offline, not ejected).
    pub fn usable(&self) -> bool {
        !self.admin_offline.load(Relaxed) && !self.ejected()
    }

    /// Whether the server is ejected after failures (and its retry time has not come).
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// Records a success and its latency.
    pub fn record_ok(&self, latency: Duration) {
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
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= eject_after && !self.ejected() {
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
        } else if self.ejected() {
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

    #[test]
    fn ejection_expires() {
        let s = BackendState::new("g", "a", "127.0.0.1:1", Role::Shard, 1, Instant::now());
        assert!(s.record_failure(1, Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.usable());
    }
}
