//! Workers in the service registry: a worker started with a registry environment also registers as an
//! instance of the service [`WORKER_SERVICE`] there (id = worker id, metadata = slots, CPU, memory, kinds
//! and labels) and heartbeats it; the scheduler reads that instance's state from the node's registry
//! snapshot and acts on it (see [`verdict`]).
//!
//! Why the jobs lease stays: the registry instance is how operators see and govern workers (list, take
//! offline); the jobs lease is what hands items back within one lease period when a worker dies, and it
//! keeps working for in-process workers that are not in the registry.

use crate::center::Center;

/// The registry service workers register with (the operator creates it in each environment that runs
/// workers, with the application that owns them).
pub const WORKER_SERVICE: &str = "furrow-worker";

/// What the registry says about a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No registry instance of this id (a worker without a registry environment): the jobs lease alone
    /// decides.
    NotListed,
    /// Listed, enabled and healthy.
    Serving,
    /// An operator took it offline: it gets no new items; what it runs finishes (drain).
    Offline,
    /// The registry marked it unhealthy: it is treated as gone (no new items; its running items are taken
    /// back at once and re-run per the job's policy, the worker told to stop them).
    Unhealthy,
}

impl Verdict {
    /// Whether the worker may be given new items.
    pub fn takes_items(self) -> bool {
        matches!(self, Verdict::NotListed | Verdict::Serving)
    }
}

/// The verdict for worker `id`: its instance of [`WORKER_SERVICE`] in any environment of this node's
/// registry snapshot. Unhealthy wins over offline (an unhealthy instance's items must move).
pub fn verdict(c: &Center, id: &str) -> Verdict {
    c.read(|st| {
        let mut out = Verdict::NotListed;
        for ((_, svc), insts) in &st.registry.instances {
            if svc != WORKER_SERVICE {
                continue;
            }
            if let Some(i) = insts.get(id) {
                let v = if !i.healthy {
                    Verdict::Unhealthy
                } else if !i.enabled {
                    Verdict::Offline
                } else {
                    Verdict::Serving
                };
                out = match (out, v) {
                    (Verdict::Unhealthy, _) | (_, Verdict::Unhealthy) => Verdict::Unhealthy,
                    (Verdict::Offline, _) | (_, Verdict::Offline) => Verdict::Offline,
                    _ => v,
                };
            }
        }
        out
    })
    .unwrap_or(Verdict::NotListed)
}
