//! Furrow's data-path runtime: thread-per-core tokio executors, `SO_REUSEPORT` listeners, config
//! snapshots and the counters that the admin port and `/metrics` read.
//!
//! The model (see `shared/DESIGN.md` and `shared/notes/runtime.md`): one OS thread per core, each running
//! a tokio `current_thread` runtime with a `LocalSet`. Every executor binds its own listening socket
//! with `SO_REUSEPORT`, so the kernel spreads connections over cores; a connection then lives and dies on
//! its core with per-core state (`Rc`/`RefCell`) and no lock on the request path. What crosses threads
//! is read-mostly and lock-free: the config snapshot (an `Arc` swapped through a `watch` channel and
//! picked up between requests) and relaxed atomic counters owned by one core each.

pub mod backend;
pub mod executor;
pub mod listener;
pub mod logins;
pub mod memory;
pub mod registries;
pub mod snapshot;
pub mod stats;
pub mod trace;

pub use backend::{BackendRegistry, BackendState};
pub use executor::{CoreId, Executors};
pub use listener::bind_reuseport;
pub use registries::Registries;
pub use snapshot::{LocalSnapshot, Snapshot, SnapshotHub};
pub use stats::{Latency, LatencyHistogram, ListenerStats, StatsRegistry};

use std::sync::Arc;

/// What every executor shares with the rest of the process: the config snapshot, the counters, the
/// backend states, the proxies' process-wide registries and the shutdown signal. Cheap to clone
/// (all `Arc`).
#[derive(Clone)]
pub struct Shared {
    /// The current config snapshot.
    pub snapshots: SnapshotHub,
    /// Per-listener, per-core counters.
    pub stats: Arc<StatsRegistry>,
    /// Backend health and admin state, by group and server name.
    pub backends: Arc<BackendRegistry>,
    /// Flips to `true` once when the process starts shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Failed logins by client address (login throttling), across executors.
    pub logins: Arc<logins::LoginThrottle>,
    /// The proxies' cross-core registries (statistics, audit writers, health monitors ...).
    pub registries: Arc<Registries>,
}

/// Everything one executor's accept loop for one listener needs.
pub struct ListenerCtx {
    /// Listener name (as in the config).
    pub name: String,
    /// The executor this loop runs on.
    pub core: CoreId,
    /// This core's listening socket for the listener.
    pub listener: tokio::net::TcpListener,
    /// This listener's counters on this core.
    pub stats: Arc<ListenerStats>,
    /// Process-wide shared state.
    pub shared: Shared,
}
