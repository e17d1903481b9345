//! [`RedisShared`]: proxy-redis's process-wide registries, what the executors share across cores
//! and the admin port reads, kept in `runtime::Shared`'s registries (one set per proxy, so that
//! several proxies in one process, as in tests, share nothing). Per-core state lives in
//! [`crate::session::CoreCtx`].

use std::sync::Arc;

use runtime::Shared;

/// proxy-redis's process-wide registries, shared by every executor (see [`RedisShared::of`]).
#[derive(Default)]
pub struct RedisShared {
    /// The Sentinel watches, shared by the pools of every core.
    pub(crate) watches: crate::sentinel::Watches,
    /// The per-command metrics and key samples every core publishes (read by the admin port).
    pub(crate) metrics: crate::metrics::Registry,
    /// The blocking commands' gates (one per server, across cores) and the blocking connections
    /// that CLIENT UNBLOCK finds from any core.
    pub(crate) blocking: crate::blocking::Blocking,
}

impl RedisShared {
    /// The registries of the process that `shared` belongs to.
    pub fn of(shared: &Shared) -> Arc<RedisShared> {
        shared.registries.get::<RedisShared>()
    }
}
