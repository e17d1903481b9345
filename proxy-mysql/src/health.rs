//! Health checks and replica lag: one monitor per MySQL group per process. Every `health_interval` it
//! pings each server over a dedicated connection and, on replicas, reads `SHOW SLAVE STATUS`
//! (`Seconds_Behind_Master`; NULL — replication stopped or broken — counts as infinitely late).
//! Results go to the shared [`runtime::BackendState`]: `record_ok`/`record_failure` and `lag_ms`.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use runtime::{LocalSnapshot, Shared};

use crate::backend::{BackendConn, RespKind};
use crate::core::MysqlShared;
use crate::error::{ER_UNKNOWN_SYSTEM_VARIABLE, ProxyError};

/// Starts the monitor of `group` on this executor unless one runs already for the proxy (the
/// registry of running monitors is in `shared`'s [`MysqlShared`]: several proxies in one process,
/// as in tests, each measure their own).
pub fn ensure_monitor(group: &str, shared: &Shared) {
    let reg = MysqlShared::of(shared);
    {
        let mut s = reg.monitors.lock().unwrap_or_else(|e| e.into_inner());
        if !s.insert(group.to_string()) {
            return;
        }
    }
    let group = group.to_string();
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        monitor(group.clone(), shared, reg.clone()).await;
        reg.monitors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
    });
}

/// Lag recorded for a replica whose replication is stopped or broken.
pub const LAG_UNKNOWN: u64 = u64::MAX;

async fn monitor(group: String, shared: Shared, reg: Arc<MysqlShared>) {
    let mut snap = LocalSnapshot::new(&shared.snapshots);
    let mut shutdown = shared.shutdown.clone();
    let mut conns: HashMap<String, BackendConn> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let s = snap.get().clone();
        let Some(g) = s.config.mysql_group(&group) else {
            return;
        };
        let interval = g.health_interval;
        let gtid = g.read_your_writes_gtid;
        let probe_timeout = interval.max(Duration::from_secs(1));
        let mut servers = vec![(g.primary.clone(), false)];
        servers.extend(g.replicas.iter().cloned().map(|r| (r, true)));
        let mut live = HashSet::new();
        let probes = servers.into_iter().map(|(srv, replica)| {
            let key = format!("{}|{}", srv.address, g.user);
            live.insert(key.clone());
            let conn = conns.remove(&key);
            let state = shared.backends.get(&group, &srv.name);
            let (user, pw, ct) = (g.user.clone(), g.password.clone(), g.connect_timeout);
            let tls = g.tls.clone();
            async move {
                let started = Instant::now();
                let login = Login {
                    user: &user,
                    password: &pw,
                    connect_timeout: ct,
                    tls: tls.as_ref(),
                };
                let r = tokio::time::timeout(
                    probe_timeout,
                    probe(conn, &srv.name, &srv.address, login, replica, gtid),
                )
                .await
                .unwrap_or_else(|_| Err(ProxyError::lost(&srv.name, "health check timed out")));
                (key, state, srv.name, srv.address, r, started.elapsed())
            }
        });
        let results = futures_join(probes.collect()).await;
        for (key, state, name, address, r, took) in results {
            match r {
                Ok((c, lag, pos)) => {
                    if let Some(pos) = pos {
                        reg.gtid.set_position(&group, &name, &address, pos);
                    }
                    if let Some(st) = &state {
                        st.record_check_ok(took);
                        if let Some(lag) = lag {
                            st.lag_ms.store(lag, Relaxed);
                        }
                    }
                    conns.insert(key, c);
                }
                Err(e) => {
                    if let Some(st) = &state {
                        let reason = e.into_reason();
                        st.note_error(&reason);
                        if st.record_failure(2, interval * 2) {
                            tracing::warn!(group = %group, server = %st.name, error = %reason, "backend ejected");
                        }
                        st.lag_ms.store(LAG_UNKNOWN, Relaxed);
                    }
                }
            }
        }
        conns.retain(|k, _| live.contains(k));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    let mut set: Vec<Option<_>> = set.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in set.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        outs[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// How a probe logs in to a server (the group's credentials and TLS).
struct Login<'a> {
    user: &'a str,
    password: &'a str,
    connect_timeout: Duration,
    tls: Option<&'a router::config::BackendTls>,
}

async fn probe(
    conn: Option<BackendConn>,
    name: &str,
    address: &str,
    login: Login<'_>,
    replica: bool,
    gtid: bool,
) -> Result<(BackendConn, Option<u64>, Option<crate::gtid::Gtids>), ProxyError> {
    let mut c = match conn {
        Some(c) => c,
        None => {
            BackendConn::connect(
                Rc::from(name),
                Rc::from(address),
                login.user,
                login.password,
                login.connect_timeout,
                login.tls,
            )
            .await?
        }
    };
    if !replica {
        let o = c
            .command(&[codec::mysql::consts::com::PING], RespKind::Single)
            .await?;
        if o.err.is_some() {
            return Err(ProxyError::lost(name, "ping failed"));
        }
        return Ok((c, Some(0), None));
    }
    let (cols, rows) = c.query_rows("SHOW SLAVE STATUS").await?;
    let lag = lag_from_status(&cols, &rows);
    // A server without MariaDB GTIDs refuses the query: then no position is known (sessions read
    // from the primary within the read-your-writes window), and the replica stays healthy.
    let pos = if gtid {
        match c.query_rows("SELECT @@gtid_slave_pos").await {
            Ok((_, rows)) => {
                let text = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .unwrap_or_default();
                Some(crate::gtid::parse(&text))
            }
            Err(e) if e.is_backend_code(ER_UNKNOWN_SYSTEM_VARIABLE) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok((c, lag, pos))
}

/// Lag in ms from `SHOW SLAVE STATUS` output: no row (not a replica) → 0; SQL thread stopped or
/// broken → [`LAG_UNKNOWN`]; SQL thread running but the I/O thread not (e.g. the primary is down) →
/// `None`: keep the last measurement, the replica has applied what it received.
pub fn lag_from_status(cols: &[String], rows: &[Vec<Option<String>>]) -> Option<u64> {
    let Some(row) = rows.first() else {
        return Some(0);
    };
    let get = |name: &str| {
        cols.iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .and_then(|i| row.get(i).cloned().flatten())
    };
    let running = |name: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case("Yes"));
    if !running("Slave_SQL_Running") {
        return Some(LAG_UNKNOWN);
    }
    match get("Seconds_Behind_Master").and_then(|v| v.parse::<u64>().ok()) {
        Some(s) => Some(s.saturating_mul(1000)),
        None if !running("Slave_IO_Running") => None,
        None => Some(LAG_UNKNOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn lag_parsing() {
        let cols: Vec<String> = [
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Seconds_Behind_Master",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        let lag = |row: Vec<Option<String>>| lag_from_status(&cols, &[row]);
        assert_eq!(lag_from_status(&cols, &[]), Some(0));
        assert_eq!(lag(vec![s("Yes"), s("Yes"), s("3")]), Some(3000));
        assert_eq!(lag(vec![s("Yes"), s("No"), None]), Some(LAG_UNKNOWN));
        assert_eq!(lag(vec![s("Yes"), s("Yes"), None]), Some(LAG_UNKNOWN));
        assert_eq!(lag(vec![s("Connecting"), s("Yes"), None]), None);
    }
}
