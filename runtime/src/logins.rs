//! Failed logins per client address, shared by every executor: after `max` failures within
//! `window`, an address is refused at connect for the rest of that window (MySQL's
//! `max_connect_errors`, per address, expiring by itself). A successful login clears its address.
//! Memory is bounded: at most [`LoginThrottle::CAPACITY`] addresses are remembered; when full,
//! expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed-login counts by client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    map: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the first failure of the current window happened.
    since: Instant,
}

impl LoginThrottle {
    /// Most addresses remembered.
    pub const CAPACITY: usize = 10_000;

    /// How much longer `ip` is refused, if it reached `max` failures within `window` (`max` 0:
    /// never).
    pub fn blocked(&self, ip: IpAddr, max: u32, window: Duration) -> Option<Duration> {
        if max == 0 {
            return None;
        }
        let map = self.map.lock().ok()?;
        let f = map.get(&ip)?;
        let left = window.checked_sub(f.since.elapsed())?;
        (f.count >= max && !left.is_zero()).then_some(left)
    }

    /// Counts a failed login of `ip`.
    pub fn failed(&self, ip: IpAddr, window: Duration) {
        let Ok(mut map) = self.map.lock() else { return };
        let now = Instant::now();
        if map.len() >= Self::CAPACITY && !map.contains_key(&ip) {
            map.retain(|_, f| now.duration_since(f.since) < window);
            if map.len() >= Self::CAPACITY
                && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.duration_since(f.since) >= window {
            *f = Failures {
                count: 0,
                since: now,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// A successful login of `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&ip);
        }
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_expires() {
        let t = LoginThrottle::default();
        let ip: IpAddr = [127, 0, 0, 9].into();
        let w = Duration::from_millis(200);
        for _ in 0..2 {
            t.failed(ip, w);
            assert!(t.blocked(ip, 3, w).is_none());
        }
        t.failed(ip, w);
        assert!(t.blocked(ip, 3, w).is_some());
        assert!(t.blocked(ip, 0, w).is_none(), "0 turns it off");
        assert!(t.blocked([127, 0, 0, 8].into(), 3, w).is_none());
        std::thread::sleep(w);
        assert!(t.blocked(ip, 3, w).is_none(), "the window expired");
        t.failed(ip, w);
        assert!(t.blocked(ip, 3, w).is_none(), "a new window");
        t.succeeded(ip);
        assert!(t.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let t = LoginThrottle::default();
        let w = Duration::from_secs(60);
        for i in 0..(LoginThrottle::CAPACITY as u32 + 50) {
            t.failed(IpAddr::from(i.to_be_bytes()), w);
        }
        assert_eq!(t.len(), LoginThrottle::CAPACITY);
    }
}
