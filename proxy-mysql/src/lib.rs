//! Furrow's MySQL proxy: server to clients, client to backends; pooling, session state, read/write split.
//!
//! State is passed down, never kept in statics: [`core::CoreCtx`] is one executor's pools and
//! caches (created once per executor, see [`serve_on`]), [`core::MysqlShared`] the process-wide
//! registries (statistics, audit writer, GTID positions, health monitors), reached from
//! `runtime::Shared`.
//!
//! Layout: [`access`] a user's schema limits; [`conn`] framing over a socket; [`deadline`] the
//! statement timer a session reuses; [`backend`] backend login and response forwarding;
//! [`pool`] per-core connection pools; [`nonce`] login scrambles from the OS CSPRNG; [`health`] health checks and replica lag; [`route`] the
//! read/write targets of a group; [`rwsplit`] the read/write split policy (pure: where a statement
//! runs); [`session`] one client (auth, commands, state, routing,
//! prepared statements); [`stats`] digests, slow log and pool gauges for the admin port; [`vars`] a
//! session's replayable variable state.

pub mod access;
pub mod backend;
pub mod conn;
pub mod core;
pub mod deadline;
pub mod error;
pub mod gtid;
pub mod health;
pub mod local;
pub mod lock;
pub mod metrics;
pub mod nonce;
pub mod ops;
pub mod pool;
pub mod route;
pub mod rwsplit;
pub mod session;
pub mod shard;
pub mod stats;
pub(crate) mod trace;
pub mod vars;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use runtime::{ListenerCtx, ListenerStats};

pub use crate::core::{CoreCtx, MysqlShared};
pub use error::ProxyError;
pub use metrics::{
    audit_stats, digests, pool_stats, reset_digests, set_slow_threshold, slow_log, stmt_cache_stats,
};
pub use pool::PoolStats;
pub use stats::{DigestSample, DigestStats, SlowEntry};

/// A statement's text: borrowed when it is valid UTF-8 (the usual case; `str::from_utf8` validates
/// faster than the lossy conversion), else with U+FFFD for the invalid bytes.
pub(crate) fn sql_text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Accept loop for one mysql listener on one executor: serves clients until `ctx.shared.shutdown`
/// flips, then stops accepting and lets sessions finish (up to the config's `shutdown_grace`).
pub async fn serve(ctx: ListenerCtx) {
    let core = CoreCtx::new(&ctx.shared);
    serve_on(ctx, core).await;
}

/// [`serve`] with the executor's [`CoreCtx`], shared by every MySQL listener of the executor (so
/// that they share its pools and caches).
pub async fn serve_on(ctx: ListenerCtx, core: Rc<CoreCtx>) {
    let ListenerCtx {
        name,
        core: _,
        listener,
        stats,
        shared,
    } = ctx;
    let mut shutdown = shared.shutdown.clone();
    let snap = shared.snapshots.current();
    let Some(l) = snap.config.listener(&name).cloned() else {
        tracing::error!(listener = %name, "mysql listener missing from the config");
        return;
    };
    health::ensure_monitor(&l.group, &shared);
    xa_recovery(&snap, &name, &core, &shared).await;
    let info = Rc::new(session::ListenerInfo {
        name: name.clone(),
        group: l.group.clone(),
        max_frame: usize::try_from(l.limits.max_frame).unwrap_or(usize::MAX),
        budget: core.shared.client_budget(
            &name,
            usize::try_from(l.limits.client_buffer_budget).unwrap_or(usize::MAX),
        ),
        idle_timeout: l.limits.idle_timeout,
        core: core.clone(),
        draining: Cell::new(false),
        drain: tokio::sync::Notify::new(),
    });
    let max_clients = u64::from(l.limits.max_clients);
    let clients = core.shared.client_counter(&name);
    let open = Rc::new(Cell::new(0usize));
    let done = Rc::new(tokio::sync::Notify::new());
    // Publish this core's pool gauges for the admin port.
    let here = core.clone();
    let publisher = tokio::task::spawn_local(async move {
        loop {
            stats::publish_pools(&here.stats, pool::local_stats(&here.pools));
            stats::publish_stmt_cache(&here.stats, session::local_stmt_cache_stats(&here));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Gives memory back after a sharp drop in connections (once per executor).
    tokio::task::spawn_local(runtime::memory::reclaimer());
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = listener.accept() => {
                let (sock, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                ListenerStats::add(&stats.accepted, 1);
                if clients.load(Relaxed) >= max_clients {
                    ListenerStats::add(&stats.rejected, 1);
                    tokio::task::spawn_local(refuse_too_many(sock));
                    continue;
                }
                clients.fetch_add(1, Relaxed);
                ListenerStats::add(&stats.connections, 1);
                open.set(open.get() + 1);
                runtime::memory::opened();
                let s = session::Session::new(core.shared.next_session_id(), sock, peer, info.clone(), shared.clone(), stats.clone());
                let (open, done, clients, stats) = (open.clone(), done.clone(), clients.clone(), stats.clone());
                tokio::task::spawn_local(async move {
                    s.run().await;
                    clients.fetch_sub(1, Relaxed);
                    ListenerStats::sub(&stats.connections, 1);
                    open.set(open.get().saturating_sub(1));
                    runtime::memory::closed();
                    done.notify_waiters();
                });
            }
            _ = shutdown.changed() => {}
        }
    }
    drop(listener);
    // Idle sessions outside a transaction close now (ERR 1053); the others at the end of their
    // transaction or at the grace deadline.
    info.draining.set(true);
    info.drain.notify_waiters();
    let grace = shared.snapshots.current().config.proxy.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    while open.get() > 0 {
        if tokio::time::timeout_at(deadline, done.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    publisher.abort();
}

/// XA recovery of the listener's sharding (`xa = true`), once per process (the first executor
/// to start the listener runs it before accepting; see [`shard::xa::recover`]), then the
/// sharding's background resolver on that executor ([`shard::xa::run_resolver`]).
async fn xa_recovery(
    snap: &runtime::Snapshot,
    listener: &str,
    core: &CoreCtx,
    shared: &runtime::Shared,
) {
    let Some(s) = snap
        .config
        .sharding()
        .into_iter()
        .find(|s| s.listener == listener && s.xa)
    else {
        return;
    };
    let first = core
        .shared
        .xa_recovered
        .lock()
        .map(|mut m| m.insert(s.name.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let r = shard::xa::recover(&snap.config, &s, core.shared.xa.incarnation()).await;
    if r.problems.is_empty() {
        tracing::info!(sharding = %s.name, committed = r.committed, rolled_back = r.rolled_back, "XA recovery done");
    } else {
        tracing::error!(sharding = %s.name, committed = r.committed, rolled_back = r.rolled_back, problems = ?r.problems, "XA recovery incomplete");
    }
    tokio::task::spawn_local(shard::xa::run_resolver(
        shared.clone(),
        s.name.clone(),
        core.shared.clone(),
    ));
}

async fn refuse_too_many(sock: tokio::net::TcpStream) {
    let mut c = conn::Conn::new(sock, 1024);
    c.queue_err(0, &error::errs::too_many_connections());
    let _ = c.flush().await;
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Issue #23 goal 3: the session's future is most of what an idle logged-in client costs
    /// (12.3 KiB per client in all, measured by the bench's idle mode on a debug build). It was
    /// 7,784 bytes (debug) with the `Session` stored twice, 6,880 since; the largest state is
    /// `dispatch`'s (about 5.9 KB), then the handshake's (about 4.5 KB). The bound leaves a
    /// little room: a new large await on the request path belongs behind a `Box::pin`.
    #[test]
    fn idle_session_task_stays_small() {
        let task = future_size(super::session::Session::run);
        let session = std::mem::size_of::<super::session::Session>();
        eprintln!("mysql session future {task} bytes, Session {session} bytes");
        assert!(
            task <= 7424,
            "an idle MySQL client's task grew to {task} bytes (bound 7424)"
        );
        assert!(
            session <= 1024,
            "Session grew to {session} bytes (bound 1024)"
        );
    }
}
