//! Active health checks run by the center (Consul-style), for instances that cannot beat themselves: a
//! database, a cache, a server of someone else's.
//!
//! A service may carry a `check` (`tcp`, `http`, `redis` or `mysql`, every `interval_ms`, each probe
//! bounded by `timeout_ms`). Its results feed the same leases heartbeats do, so nothing new reaches the
//! store or the watchers:
//! - a passing probe **is** a heartbeat (`lease::beat` without the caller's permission check): it moves the
//!   lease deadline in memory, and writes the store only when the instance turns healthy or changes owner;
//! - a failing probe makes the lease run out now: the lease keeper's next round (≤ 50 ms) marks the
//!   instance unhealthy with the usual expiry write, pushed to the watchers.
//!
//! Each node probes the instances whose lease it holds (and those no node holds yet), so two nodes never
//! probe the same instance twice. At most [`MAX_IN_FLIGHT`] probes run at once; a probe never blocks the
//! store poll (it runs on the async workers, the verdicts are applied on the blocking pool).
//!
//! What a probe accepts:
//! - `tcp`: the connection is accepted;
//! - `http`: `GET path` answers with a 2xx or 3xx status line;
//! - `redis`: `PING` answers `+PONG` (or `-NOAUTH` / `-NOPERM`: the server is up and asks for a login);
//! - `mysql`: the server's first packet is a protocol-10 greeting (an ERR packet, e.g. "too many
//!   connections" or a blocked host, fails); with `user` (and `password`), a login as that user and a
//!   COM_PING answered OK (a wrong password, a locked account or a server that stopped serving fails).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::center::{Center, system_user};
use crate::error::{ControlError, Result};
use crate::model::now_ms;

/// The most probes one node runs at once (the others wait for the next round).
pub const MAX_IN_FLIGHT: usize = 256;

/// What a probe does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET answered 2xx/3xx.
    Http,
    /// A Redis PING.
    Redis,
    /// A MySQL/MariaDB greeting.
    Mysql,
}

/// A service's active health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The probe.
    pub kind: CheckKind,
    /// Between two probes of one instance, ms (1,000–3,600,000; default 5,000).
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Bound of one probe, ms (100–60,000 and below the interval; default 2,000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// `http`: the path (default `/`).
    #[serde(default)]
    pub path: String,
    /// `mysql`: log in as this user and send COM_PING (empty: the greeting is enough).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `mysql`: the password of `user`. Stored with the service; shown as `******` by the API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
}

/// What the API shows for a check password.
pub const MASKED: &str = "******";

fn default_interval() -> u64 {
    5_000
}

fn default_timeout() -> u64 {
    2_000
}

impl HealthCheck {
    /// Checks the bounds; errors name the field (`check.timeout_ms`).
    pub fn validate(&self) -> Result<()> {
        if !(1_000..=3_600_000).contains(&self.interval_ms) {
            return Err(ControlError::bad(
                "check.interval_ms",
                "interval_ms is 1000-3600000",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) || self.timeout_ms >= self.interval_ms {
            return Err(ControlError::bad(
                "check.timeout_ms",
                "timeout_ms is 100-60000 and below interval_ms",
            ));
        }
        if self.kind == CheckKind::Http {
            if !self.path.is_empty() && !self.path.starts_with('/') {
                return Err(ControlError::bad("check.path", "path starts with /"));
            }
            if self.path.len() > 1024 || self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(ControlError::bad(
                    "check.path",
                    "path is at most 1024 characters without spaces or control characters",
                ));
            }
        } else if !self.path.is_empty() {
            return Err(ControlError::bad("check.path", "path is for http checks"));
        }
        if self.kind != CheckKind::Mysql && !(self.user.is_empty() && self.password.is_empty()) {
            return Err(ControlError::bad(
                "check.user",
                "user and password are for mysql checks",
            ));
        }
        if self.user.is_empty() && !self.password.is_empty() {
            return Err(ControlError::bad("check.user", "a password needs a user"));
        }
        if self.user.len() > 80 || self.password.len() > 256 {
            return Err(ControlError::bad(
                "check.user",
                "user is at most 80 bytes, password at most 256",
            ));
        }
        Ok(())
    }

    /// The check as the API shows it: the password masked.
    pub fn masked(&self) -> HealthCheck {
        let mut c = self.clone();
        if !c.password.is_empty() {
            c.password = MASKED.into();
        }
        c
    }
}

/// Runs one probe of `kind` against `ip:port`; `Err` says why it failed.
pub async fn probe(check: &HealthCheck, ip: &str, port: u16) -> std::result::Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms);
    let host = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let work = async {
        let mut s = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        match check.kind {
            CheckKind::Tcp => Ok(()),
            CheckKind::Http => {
                let path = if check.path.is_empty() {
                    "/"
                } else {
                    &check.path
                };
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: furrow-health\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let head = read_some(&mut s, 12).await?;
                let status = head
                    .strip_prefix(b"HTTP/1.")
                    .and_then(|r| r.get(2..5))
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or("not an HTTP response")?;
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP status {status}"))
                }
            }
            CheckKind::Redis => {
                s.write_all(b"*1\r\n$4\r\nPING\r\n")
                    .await
                    .map_err(|e| e.to_string())?;
                let reply = read_some(&mut s, 7).await?;
                if reply.starts_with(b"+PONG")
                    || reply.starts_with(b"-NOAUTH")
                    || reply.starts_with(b"-NOPERM")
                {
                    Ok(())
                } else {
                    Err(format!(
                        "PING answered {:?}",
                        String::from_utf8_lossy(&reply)
                    ))
                }
            }
            CheckKind::Mysql if !check.user.is_empty() => {
                // Log in and COM_PING with the blocking client (bounded by the probe's timeout on
                // every read and write, so the thread never outlives the probe by much).
                drop(s);
                let url = crate::mysql::MysqlUrl {
                    user: check.user.clone(),
                    password: check.password.clone(),
                    addr: host.clone(),
                    database: String::new(),
                };
                tokio::task::spawn_blocking(move || {
                    let mut c = crate::mysql::Conn::connect_within(&url, timeout, timeout)
                        .map_err(|e| format!("login: {e}"))?;
                    c.ping().map_err(|e| format!("COM_PING: {e}"))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            CheckKind::Mysql => {
                // Packet header (3 bytes length, 1 byte sequence), then the payload's first byte:
                // 10 for a protocol-10 greeting, 0xff for an ERR packet.
                let first = read_some(&mut s, 5).await?;
                match first.get(4) {
                    Some(10) => Ok(()),
                    Some(0xff) => Err("the server answered with an error packet".into()),
                    _ => Err("not a MySQL greeting".into()),
                }
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", check.timeout_ms)),
    }
}

/// Reads until `want` bytes arrived (or the peer closed).
async fn read_some(
    s: &mut tokio::net::TcpStream,
    want: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match s.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    buf.truncate(got);
    if got == 0 {
        return Err("the connection closed without an answer".into());
    }
    Ok(buf)
}

/// `(env, service, instance id)`.
type Key = (String, String, String);

/// A probe's outcome: the instance, pass or why not, and the lease a pass gives (ms).
type Verdict = (Key, std::result::Result<(), String>, u64);

/// An instance to probe: `(key, ip, port, check, lease ms)`.
type Target = (Key, String, u16, HealthCheck, u64);

/// Instance → when it is next due, ms.
type Due = HashMap<Key, u64>;

/// The checker: every 200 ms, probes the instances of services with a `check` that are due and that this
/// node holds (or no node holds), and applies the verdicts. Runs until aborted.
pub async fn run(center: Arc<Center>) {
    let mut due: Due = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = now_ms();
        let node = center.registry.node().to_string();
        let work: Vec<Target> = center
            .read(|st| {
                let r = &st.registry;
                r.services
                    .values()
                    .filter_map(|svc| svc.check.as_ref().map(|c| (svc, c)))
                    .flat_map(|(svc, c)| {
                        r.instances
                            .get(&(svc.env.clone(), svc.name.clone()))
                            .into_iter()
                            .flat_map(|m| m.values())
                            .filter(|i| i.owner_node.is_empty() || i.owner_node == node)
                            .map(move |i| {
                                (
                                    (i.env.clone(), i.service.clone(), i.id.clone()),
                                    i.ip.clone(),
                                    i.port,
                                    c.clone(),
                                    svc.ttl_ms,
                                )
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Forget instances that left (bounded memory), then take the due ones.
        due.retain(|k, _| work.iter().any(|w| w.0 == *k));
        let mut probes = tokio::task::JoinSet::new();
        for (key, ip, port, check, ttl) in work {
            if due.get(&key).is_some_and(|at| *at > now) || probes.len() >= MAX_IN_FLIGHT {
                continue;
            }
            due.insert(key.clone(), now + check.interval_ms);
            probes.spawn(async move {
                let r = probe(&check, &ip, port).await;
                (key, r, ttl.max(check.interval_ms * 2))
            });
        }
        let mut verdicts = Vec::new();
        while let Some(r) = probes.join_next().await {
            if let Ok(v) = r {
                verdicts.push(v);
            }
        }
        if verdicts.is_empty() {
            continue;
        }
        let c = center.clone();
        let applied = tokio::task::spawn_blocking(move || apply(&c, verdicts)).await;
        if let Ok(Err(e)) = applied {
            tracing::warn!(error = %e, "health check verdicts not applied");
        }
    }
}

/// Applies probe verdicts: a pass extends the lease (and turns the instance healthy / takes it over when
/// needed, one commit for all), a failure makes the lease run out now.
fn apply(center: &Center, verdicts: Vec<Verdict>) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let leases = &center.registry;
    let node = leases.node().to_string();
    let mut turn_healthy = Vec::new();
    for (key, r, ttl) in verdicts {
        let state = center.read(|st| {
            st.registry
                .instance(&key.0, &key.1, &key.2)
                .map(|i| (i.healthy, i.owner_node == node))
        })?;
        let Some((healthy, mine)) = state else {
            continue;
        };
        match r {
            Ok(()) => {
                leases.checks_passed.fetch_add(1, Relaxed);
                leases.extend(key.clone(), ttl);
                if !(healthy && mine) {
                    turn_healthy.push((key.0, key.1, key.2, true));
                }
            }
            Err(why) => {
                leases.checks_failed.fetch_add(1, Relaxed);
                tracing::debug!(env = %key.0, service = %key.1, instance = %key.2, %why, "health check failed");
                if healthy && mine {
                    leases.extend(key, 0);
                }
            }
        }
    }
    if !turn_healthy.is_empty() {
        center.mutate(&system_user(), |tx| tx.set_health(&turn_healthy, &node))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            interval_ms: 1000,
            timeout_ms: 500,
            path: String::new(),
            user: String::new(),
            password: String::new(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(check(CheckKind::Tcp).validate().is_ok());
        let mut c = check(CheckKind::Http);
        c.timeout_ms = 1000;
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err(Some("check.timeout_ms".into()))
        );
        c.timeout_ms = 100;
        c.path = "health".into();
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err(Some("check.path".into()))
        );
        c.path = "/health".into();
        assert!(c.validate().is_ok());
        let mut r = check(CheckKind::Redis);
        r.path = "/x".into();
        assert!(r.validate().is_err());
        r.path.clear();
        r.interval_ms = 10;
        assert_eq!(
            r.validate().map_err(|e| e.field),
            Err(Some("check.interval_ms".into()))
        );
    }
}
