//! Distributed jobs: the third control service, on the configuration center's core (issue 20).
//!
//! What it shares with the configuration center and the registry: job **definitions** are one more record
//! kind (`Rec::Jobs`) committed through the same [`crate::ops::Tx`] transactions, so they get the same
//! store, revision, catch-up across nodes, permissions (a job belongs to an application; grants on
//! `(app, JOB)` or `(app, *)`), and audit log (every definition change and every manual action: trigger,
//! stop, pause, resume). What it does not share is the high-rate **runtime** — triggers, runs, items,
//! workers — which lives in tables of its own next to the store and is written with row locks only
//! ([`db`]): the store's single revision lock is the very bottleneck the issue asks to avoid.
//!
//! - [`cron`]: cron expressions with seconds, in UTC, a fixed offset or a named zone.
//! - [`tz`]: named time zones from the system's TZif files (our own reader).
//! - [`model`]: job definitions (schedule, kind, items, resources, policies), validation, DAG cycles.
//! - [`ops`]: definition changes and audited manual actions on a `Tx`.
//! - [`db`]: the runtime tables (SQLite or MariaDB with `SKIP LOCKED`).
//! - [`sched`]: firing, placement, leases, retries, completion, DAG successors, stop, history.
//! - [`api`]: the HTTP routes under `/v1/jobs`.
//! - [`map_step`]: SQL and Redis map steps (items from query rows or reply values, bounded).
//! - [`worker`]: the worker library (`furrow worker`, or embedded with registered Rust functions).
//! - [`cli`]: `furrow ctl job ...`.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod cron;
pub mod db;
pub mod https;
pub mod map_step;
pub mod model;
pub mod ops;
pub mod reglink;
pub mod sched;
pub mod span;
pub mod tz;
pub mod worker;

use std::sync::Arc;

pub use model::{JobRec, JobSpec, JobsState};
pub use sched::{Jobs, JobsOptions};

use crate::center::Center;
use crate::error::Result;

/// Opens the jobs runtime next to the store `store_url` and attaches it to `center` (once).
pub fn attach(center: &Center, store_url: &str, opts: JobsOptions) -> Result<Arc<Jobs>> {
    let j = Arc::new(Jobs::open(store_url, opts)?);
    let _ = center.jobs.set(j.clone());
    Ok(center.jobs.get().cloned().unwrap_or(j))
}

/// Starts the scheduler loop of an attached runtime (every 25 ms, on the blocking pool: firing lateness is
/// about half of it on average); None when no runtime is attached.
pub fn spawn(center: Arc<Center>) -> Option<tokio::task::JoinHandle<()>> {
    let jobs = center.jobs.get()?.clone();
    Some(tokio::spawn(async move {
        let mut backoff = crate::server::Backoff::new(
            std::time::Duration::from_millis(25),
            std::time::Duration::from_secs(5),
        );
        loop {
            tokio::time::sleep(backoff.delay()).await;
            let (c, j) = (center.clone(), jobs.clone());
            let r = tokio::task::spawn_blocking(move || j.tick(&c)).await;
            let err = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            match err {
                None => {
                    backoff.success();
                }
                Some(e) => {
                    if backoff.failure() {
                        tracing::warn!(error = %e, "jobs scheduler step failed");
                    }
                }
            }
        }
    }))
}
