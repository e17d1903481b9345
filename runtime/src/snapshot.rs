//! Immutable config snapshots, published to every executor at once.
//!
//! A snapshot is validated completely before it is published; executors take the new one between
//! requests, and a connection keeps the `Arc` of the snapshot it started a request with, so requests in
//! flight finish on the config they started on.

use std::sync::Arc;
use std::time::SystemTime;

use router::config::Config;
use tokio::sync::watch;

/// One published config generation.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// 1 for the config the process started with, +1 per successful reload.
    pub generation: u64,
    /// When it was published.
    pub published_at: SystemTime,
    /// Where it came from (a file path or a config-center release).
    pub origin: String,
}

/// The publisher side, and a factory of receivers for executors.
#[derive(Clone)]
pub struct SnapshotHub {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl SnapshotHub {
    /// Starts with `config` as generation 1.
    pub fn new(config: Config, origin: impl Into<String>) -> Self {
        let first = Arc::new(Snapshot {
            config,
            generation: 1,
            published_at: SystemTime::now(),
            origin: origin.into(),
        });
        let (tx, _rx) = watch::channel(first);
        Self { tx: Arc::new(tx) }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver for one executor.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Publishes an already validated config as the next generation; returns that generation.
    pub fn publish(&self, config: Config, origin: impl Into<String>) -> u64 {
        let origin = origin.into();
        let mut generation = 0;
        self.tx.send_modify(|cur| {
            generation = cur.generation + 1;
            *cur = Arc::new(Snapshot {
                config,
                generation,
                published_at: SystemTime::now(),
                origin,
            });
        });
        generation
    }
}

/// An executor's view of the snapshot: a cached `Arc`, refreshed cheaply when a new one was published.
pub struct LocalSnapshot {
    rx: watch::Receiver<Arc<Snapshot>>,
    cur: Arc<Snapshot>,
}

impl LocalSnapshot {
    /// Starts from the hub's current snapshot.
    pub fn new(hub: &SnapshotHub) -> Self {
        let rx = hub.subscribe();
        let cur = rx.borrow().clone();
        Self { rx, cur }
    }

    /// The snapshot to use for the next request (checks for a newer one; no lock when nothing changed).
    pub fn get(&mut self) -> &Arc<Snapshot> {
        if self.rx.has_changed().unwrap_or(false) {
            self.cur = self.rx.borrow_and_update().clone();
        }
        &self.cur
    }

    /// Waits until a newer snapshot is published (for background tasks that rebuild state).
    pub async fn changed(&mut self) -> Option<&Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        self.cur = self.rx.borrow_and_update().clone();
        Some(&self.cur)
    }
}
