//! Furrow's Redis proxy: per-core sessions, multiplexed pipelined backends, fan-out, admin.
//!
//! Layout: [`net`] holds every socket call; [`error`] the proxy's errors and their RESP replies; [`backend`] the multiplexed pipelined backend
//! connections; [`pool`] a core's connections to a group; [`session`] one client connection
//! (routing, sessions, transactions, pub/sub); [`reply`] the in-order reply queue (split and
//! fan-out replies are merged by `router::redis::merge`); [`acl`] proxy users; [`metrics`] per-command metrics and
//! hot/big key sampling for the admin port; [`sentinel`] follows primaries through Redis
//! Sentinel; [`shared`] the registries that the executors share across cores.
//!
//! The binary calls [`serve`] on each executor for each Redis listener.

#![warn(missing_docs)]

pub mod acl;
pub mod backend;
pub mod blocking;
pub mod cluster;
pub mod error;
pub mod lock;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod notify;
pub mod pool;
pub mod reply;
pub mod sentinel;
pub mod session;
pub mod shared;
pub mod trace;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::{ListenerCtx, ListenerStats, LocalSnapshot};

pub use metrics::{BackendWrites, CommandStats, KeySample, ListenerMetrics};
pub use session::ClientEntry;
pub use shared::RedisShared;

use crate::metrics::CoreMetrics;
use crate::pool::Pool;
use crate::session::{CoreCtx, Session};

/// Open-client counters per listener (for `max_clients`), shared by the executors of one proxy
/// (kept in `runtime::Shared`'s registries, so that several proxies in one process, as in tests,
/// do not share a count).
#[derive(Default)]
struct OpenClients(Mutex<HashMap<String, Arc<AtomicU64>>>);

fn open_clients(shared: &runtime::Shared, listener: &str) -> Arc<AtomicU64> {
    let all = shared.registries.get::<OpenClients>();
    let mut m = all.0.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(listener.to_string()).or_default().clone()
}

/// Every Redis listener's metrics of the process that `shared` belongs to, summed over cores
/// (what the admin port and `/metrics` show).
pub fn admin_metrics(shared: &runtime::Shared) -> Vec<ListenerMetrics> {
    metrics::snapshot(&RedisShared::of(shared).metrics)
}

/// Runs one executor's accept loop for a Redis listener until shutdown, then lets the sessions
/// finish (at most the config's shutdown grace) and returns.
pub async fn serve(ctx: ListenerCtx) {
    let ListenerCtx {
        name,
        core,
        listener,
        stats,
        shared,
    } = ctx;
    let mut snapshot = LocalSnapshot::new(&shared.snapshots);
    let snap = snapshot.get().clone();
    let config = &snap.config;
    let Some(l) = config.listener(&name) else {
        tracing::error!(listener = %name, "listener not in the config; not serving");
        return;
    };
    let Some(group) = config.redis_group(&l.group) else {
        tracing::error!(listener = %name, group = %l.group, "redis group not in the config; not serving");
        return;
    };
    let redis_shared = RedisShared::of(&shared);
    let metrics = Rc::new(
        CoreMetrics::register(&redis_shared.metrics, &name).with_listener_stats(stats.clone()),
    );
    let flusher = backend::Flusher::new();
    let pool = match Pool::new(
        group,
        snap.generation,
        &shared.backends,
        &redis_shared.watches,
        backend::CoreIo {
            metrics: metrics.clone(),
            flusher: flusher.clone(),
        },
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(listener = %name, "cannot build backend pool: {e}");
            return;
        }
    };
    if let Err(e) = &*pool.dist.borrow() {
        tracing::error!(listener = %name, "redis group cannot route keys: {e}");
    }
    let grace = config.proxy.shutdown_grace;
    // TLS on or off is decided at start-up; certificates follow reloads.
    let start_tls = l.tls.as_ref().map(|t| t.config.clone());
    let ctx = Rc::new(CoreCtx {
        listener: name.clone(),
        core,
        snapshot: RefCell::new(snapshot),
        pool: RefCell::new(Rc::new(pool)),
        stats: stats.clone(),
        metrics: metrics.clone(),
        flusher,
        backends: shared.backends.clone(),
        shared: redis_shared,
        limits: RefCell::new(l.limits.clone()),
        allow_admin: Cell::new(l.allow_admin_commands),
        users: RefCell::new(Rc::new(config.users_for(&name).cloned().collect())),
        rate_limits: RefCell::new(session::rate_limits(config)),
        open_clients: open_clients(&shared, &name),
        clients: RefCell::new(BTreeMap::new()),
        wakers: RefCell::default(),
        closing: Cell::new(false),
        next_id: Cell::new(1),
        group: RefCell::new(l.group.clone()),
        trace: shared
            .registries
            .get::<runtime::trace::TraceHub>()
            .exporter(config)
            .map(|e| crate::trace::CoreTrace::new(e, &name)),
    });
    // Publish metrics periodically.
    let m2 = metrics.clone();
    let publisher = tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(metrics::PUBLISH_EVERY).await;
            m2.publish();
        }
    });
    // Gives memory back after a sharp drop in connections (once per executor).
    tokio::task::spawn_local(runtime::memory::reclaimer());
    let mut shutdown = shared.shutdown.clone();
    let live = Rc::new(Cell::new(0usize));
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(listener = %name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = net::prepare_client(&stream);
                ListenerStats::add(&stats.accepted, 1);
                // Governance source lists (registry rules; None without them): once per connection.
                let governance = ctx.snapshot.borrow_mut().get().config.proxy.governance.clone();
                if let Some(g) = &governance
                    && !g.admits_source(peer.ip())
                {
                    ListenerStats::add(&stats.rejected, 1);
                    if start_tls.is_none() {
                        let _ = stream.try_write(b"-ERR client address refused by a governance rule\r\n");
                    }
                    continue;
                }
                // Caller lists: a listener without users serves every client as `default`, which
                // is its caller from the start (others are checked at AUTH / HELLO).
                if let Some(g) = &governance
                    && !g.callers.is_empty()
                    && ctx.users.borrow().is_empty()
                    && let Err(l) = g.admits_caller("default")
                {
                    ListenerStats::add(&stats.rejected, 1);
                    if start_tls.is_none() {
                        let e = error::Error::CallerRefused { user: "default".into(), rule: l.message.clone() };
                        let _ = stream.try_write(&e.reply());
                    }
                    continue;
                }
                let max = u64::from(ctx.current_pool_limits().max_clients);
                let open = ctx.open_clients.fetch_add(1, Relaxed) + 1;
                if open > max {
                    ctx.open_clients.fetch_sub(1, Relaxed);
                    ListenerStats::add(&stats.rejected, 1);
                    if start_tls.is_none() {
                        let _ = stream.try_write(&error::Error::MaxClients.reply());
                    }
                    continue;
                }
                let tls = match &start_tls {
                    None => None,
                    Some(first) => {
                        let current = ctx
                            .snapshot
                            .borrow_mut()
                            .get()
                            .config
                            .listener(&name)
                            .and_then(|l| l.tls.as_ref())
                            .map_or_else(|| first.clone(), |t| t.config.clone());
                        match net::TlsIo::new(current) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                tracing::warn!(listener = %name, "cannot start TLS: {e}");
                                ctx.open_clients.fetch_sub(1, Relaxed);
                                continue;
                            }
                        }
                    }
                };
                ListenerStats::add(&stats.connections, 1);
                let id = ctx.next_id.get();
                ctx.next_id.set(id + 1);
                let client_id = (id << 8) | (core as u64 & 0xff);
                let mut session = Session::new(ctx.clone(), client_id, peer);
                if let Some(t) = tls {
                    session = session.with_tls(t);
                }
                let ctx2 = ctx.clone();
                let live2 = live.clone();
                live.set(live.get() + 1);
                runtime::memory::opened();
                // Released when the task ends or is dropped, so that a session that panics still
                // gives its slot back.
                let slot = SessionSlot { ctx: ctx2, live: live2 };
                tokio::task::spawn_local(session.run(stream, slot));
            }
            r = shutdown.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    drop(listener);
    ctx.closing.set(true);
    for w in ctx.wakers.borrow().values() {
        w.notify();
    }
    let deadline = Instant::now() + grace;
    while live.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    metrics.publish();
    publisher.abort();
}

/// Accounting of one open client session, undone when the session task ends (even by a panic).
struct SessionSlot {
    ctx: Rc<CoreCtx>,
    live: Rc<Cell<usize>>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.ctx.open_clients.fetch_sub(1, Relaxed);
        ListenerStats::sub(&self.ctx.stats.connections, 1);
        self.live.set(self.live.get().saturating_sub(1));
        runtime::memory::closed();
    }
}

impl CoreCtx {
    /// The listener limits of the current snapshot.
    pub fn current_pool_limits(&self) -> router::config::ListenerLimits {
        let _ = self.current_pool();
        self.limits.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Issue #23 goal 3: an idle client's task is its session's future (the `Session` and the
    /// `serve` loop's state); it was 3,168 bytes (debug build) with the session stored twice, the
    /// idle timer always in it and the rarely used user, MULTI and pub/sub state inline; 1,120
    /// since. Release builds lay futures out no larger. The bounds leave a little room for new
    /// fields: state that few sessions use belongs behind a `Box`.
    #[test]
    fn client_task_stays_small() {
        let task = future_size(super::Session::run::<super::SessionSlot>);
        let session = std::mem::size_of::<super::Session>();
        eprintln!("client task future {task} bytes, Session {session} bytes");
        assert!(
            task <= 1280,
            "an idle Redis client's task grew to {task} bytes (bound 1280)"
        );
        assert!(
            session <= 320,
            "Session grew to {session} bytes (bound 320)"
        );
    }
}
