//! Health probes on the metrics port: `GET /healthz` (liveness) and `GET /readyz` (readiness), for load
//! balancers and Kubernetes probes (docs/operations.md, "Health probes").
//!
//! - `/healthz` answers `200 ok` whenever the admin thread answers HTTP: the process is alive and its
//!   event loops turn. It never looks at backends, so a backend outage does not get proxies restarted.
//! - `/readyz` answers `200` when this process should receive new connections, else `503` with one
//!   reason per line. The policy:
//!   1. **not draining**: once shutdown or a binary upgrade hand-over started, the process is not ready
//!      (the listeners belong to the successor, or are about to close);
//!   2. **config loaded**: a config snapshot is published (always true once `furrow proxy` started, which
//!      refuses to start without a valid one);
//!   3. **backends reachable**: every *write-capable* backend — each Redis shard (a down shard makes its
//!      key range fail) and each MySQL group's primary — is usable (not `BACKEND OFFLINE`, not ejected)
//!      and answers. Replicas are listed in the body but never make a proxy unready: reads fall back to
//!      the primary.
//!
//! How "answers" is decided: MySQL servers are watched by the per-group health monitor
//! (`proxy_mysql::health`, which ejects a server after two failed pings), so readiness reads the shared
//! backend state and opens no connection to MySQL (a bare TCP connect would count as an aborted
//! connection on the server). Redis shards have no active monitor (ejection is passive, on request
//! failures), so `/readyz` sends them an inline `PING` (TCP connect only for TLS groups), 500 ms timeout,
//! all in parallel; the results are cached for one second so that many probers cost at most one probe
//! round per second. Everything runs on the admin thread: no cost on the data path.
//!
//! The decision is a pure function ([`verdict`]) over [`BackendCheck`]s, unit-tested here; the probes
//! are the I/O edge, tested against real servers in `tests/operations.rs`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use runtime::backend::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::Control;

/// How long one Redis probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a round of Redis probes is reused.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The state of one backend as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCheck {
    /// Group name.
    pub group: String,
    /// Server name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Role in its group.
    pub role: Role,
    /// `None`: answers; `Some(why)`: unusable.
    pub down: Option<String>,
}

/// Readiness: whether to take traffic, and the body to answer with (one line per finding).
pub fn verdict(draining: bool, checks: &[BackendCheck]) -> (bool, String) {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    if draining {
        reasons.push("draining: shutdown or upgrade hand-over in progress".to_string());
    }
    for c in checks {
        let Some(why) = &c.down else { continue };
        let line = format!(
            "group {}: {} {} ({}) {why}",
            c.group,
            c.role.as_str(),
            c.name,
            c.address
        );
        match c.role {
            Role::Shard | Role::Primary => reasons.push(line),
            Role::Replica => notes.push(line),
        }
    }
    let ready = reasons.is_empty();
    let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
    for r in reasons {
        body.push_str(&r);
        body.push('\n');
    }
    for n in notes {
        body.push_str("degraded (does not affect readiness): ");
        body.push_str(&n);
        body.push('\n');
    }
    (ready, body)
}

/// The last round of Redis probes: when, and the result by (group, server).
type ProbeCache = Option<(Instant, Vec<((String, String), Option<String>)>)>;

/// Redis probe results shared by concurrent `/readyz` requests.
static REDIS_PROBES: Mutex<ProbeCache> = Mutex::new(None);

/// Answers `/readyz`: (ready, body).
pub async fn readiness(control: &Control) -> (bool, String) {
    let draining = control.draining();
    let snap = control.shared.snapshots.current();
    let states = control.shared.backends.all();
    let probes = redis_probes(control).await;
    let checks: Vec<BackendCheck> = states
        .iter()
        .map(|b| {
            let key = (b.group.clone(), b.name.clone());
            let mut down = match b.state_word() {
                "up" => None,
                w => Some(match b.last_error() {
                    Some(e) if w == "ejected" => format!("ejected: {e}"),
                    _ => w.to_string(),
                }),
            };
            if down.is_none() && snap.config.redis_group(&b.group).is_some() {
                down = probes
                    .iter()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, r)| r.clone());
            }
            BackendCheck {
                group: b.group.clone(),
                name: b.name.clone(),
                address: b.address.clone(),
                role: b.role,
                down,
            }
        })
        .collect();
    verdict(draining, &checks)
}

/// Probes every Redis backend of the running config (or reuses a round younger than a second).
async fn redis_probes(control: &Control) -> Vec<((String, String), Option<String>)> {
    if let Ok(g) = REDIS_PROBES.lock()
        && let Some((at, r)) = g.as_ref()
        && at.elapsed() < CACHE_FOR
    {
        return r.clone();
    }
    let snap = control.shared.snapshots.current();
    let mut tasks = Vec::new();
    for b in control.shared.backends.all() {
        let Some(g) = snap.config.redis_group(&b.group) else {
            continue;
        };
        let tls = g.tls.is_some();
        let (key, address) = ((b.group.clone(), b.name.clone()), b.address.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(PROBE_TIMEOUT, probe_redis(&address, tls))
                .await
                .unwrap_or_else(|_| Err("no answer within 500 ms".to_string()));
            (key, r.err())
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    if let Ok(mut g) = REDIS_PROBES.lock() {
        *g = Some((Instant::now(), out.clone()));
    }
    out
}

/// Connects to a Redis server and, unless it speaks TLS, sends `PING`: any `+` reply or error other
/// than `-LOADING` (an `-NOAUTH` included: the server is there) counts as up.
async fn probe_redis(address: &str, tls: bool) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    if tls {
        return Ok(());
    }
    s.write_all(b"PING\r\n")
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let mut buf = [0u8; 64];
    let n = s
        .read(&mut buf)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    match buf.get(..n) {
        Some(r) if r.starts_with(b"-LOADING") => Err("loading its dataset".to_string()),
        Some(r) if r.starts_with(b"+") || r.starts_with(b"-") => Ok(()),
        _ => Err("closed the connection without answering PING".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(role: Role, down: Option<&str>) -> BackendCheck {
        BackendCheck {
            group: "g".into(),
            name: "s".into(),
            address: "127.0.0.1:1".into(),
            role,
            down: down.map(str::to_string),
        }
    }

    #[test]
    fn ready_when_every_write_capable_backend_answers() {
        let (ready, body) = verdict(
            false,
            &[check(Role::Shard, None), check(Role::Primary, None)],
        );
        assert!(ready);
        assert_eq!(body, "ready\n");
    }

    #[test]
    fn a_down_shard_or_primary_makes_the_proxy_unready() {
        for role in [Role::Shard, Role::Primary] {
            let (ready, body) = verdict(false, &[check(role, Some("unreachable: refused"))]);
            assert!(!ready);
            assert!(body.starts_with("not ready\n"), "{body}");
            assert!(body.contains("unreachable: refused"), "{body}");
        }
    }

    #[test]
    fn a_down_replica_only_degrades() {
        let (ready, body) = verdict(false, &[check(Role::Replica, Some("ejected: x"))]);
        assert!(ready);
        assert!(body.contains("degraded"), "{body}");
    }

    #[test]
    fn draining_is_never_ready() {
        let (ready, body) = verdict(true, &[]);
        assert!(!ready);
        assert!(body.contains("draining"), "{body}");
    }
}
