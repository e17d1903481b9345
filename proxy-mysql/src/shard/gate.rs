//! The write gate of a table being resharded (docs/sharding.md, "Resharding"): the dual writes of
//! every core hold it shared while they run; the reshard job pauses it at the cut-over; a proxy
//! that is a *peer* of a job on another proxy is fenced through it (`RESHARD PEER FENCE`) with a
//! lease, so a job that dies never leaves the table blocked. It also records the keys dual writes
//! touch between the verifier's passes (`router::sql::shard::dirty`).
//!
//! A leaf: it imports nothing of proxy-mysql's own, so the session path (`super::dual`), the
//! process-wide registries (`crate::core::MysqlShared::reshard_gate`) and the binary's reshard job
//! can all hold it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codec::mysql::Value;
use router::sql::shard::dirty::{Dirty, DirtySet, KeyShape, touched};

/// Most keys a table's dirty set keeps one by one before it marks whole ranges (16 bytes each
/// in a B-tree: a few MiB at most).
pub const MAX_DIRTY_KEYS: usize = 100_000;

/// Most verifier ranges a tracking set started by another proxy's job takes (one bit each:
/// 2 MiB; a range holds about a thousand rows).
pub const MAX_GRID_RANGES: usize = 1 << 24;

/// The write gate of one table being resharded (one per sharding section and table, for the
/// whole process: every core's sessions, the admin port and the reshard job share it).
#[derive(Default)]
pub struct Gate {
    lock: Arc<tokio::sync::RwLock<()>>,
    new_serves: AtomicBool,
    /// Whether dual writes record the keys they touch (from the verifier's first full pass to
    /// the cut-over): read after each write, so a write that finished before tracking began is
    /// one the pass saw.
    tracking: AtomicBool,
    /// The table's key and what was written since the verifier last took the set.
    dirty: Mutex<Option<(KeyShape, DirtySet)>>,
    /// The fence a job on another proxy holds (`RESHARD PEER FENCE`), with its lease's end.
    fence: Mutex<Option<(tokio::sync::OwnedRwLockWriteGuard<()>, Instant)>>,
    /// One fence request at a time: a second waits, then finds the fence and renews it.
    fencing: tokio::sync::Mutex<()>,
}

/// A held write pause of a [`Gate`] (writes wait until it is dropped).
pub type Pause<'a> = tokio::sync::RwLockWriteGuard<'a, ()>;

/// A dual write's shared hold of a [`Gate`].
pub type Writing<'a> = tokio::sync::RwLockReadGuard<'a, ()>;

impl Gate {
    /// Pauses the table's writes: resolves once the writes in flight are done; until the guard
    /// is dropped new writes wait (the lock is fair: a waiting pause holds back new writers).
    pub async fn pause(&self) -> Pause<'_> {
        self.lock.write().await
    }

    /// A dual write's hold: waits while the table is paused or fenced.
    pub async fn enter(&self) -> Writing<'_> {
        self.lock.read().await
    }

    /// Fences the table for a job on another proxy until [`Gate::unfence`] or until `lease` has
    /// passed without another call (which renews it): resolves once the writes in flight are
    /// done. Returns whether the fence was new (`false`: renewed).
    pub async fn fence(&self, lease: Duration) -> bool {
        let _one = self.fencing.lock().await;
        let until = Instant::now() + lease;
        if let Some((_, end)) = self
            .fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            *end = until;
            return false;
        }
        let guard = self.lock.clone().write_owned().await;
        // The lease counts from when the fence holds (the writes in flight may have been long).
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((guard, Instant::now() + lease));
        true
    }

    /// Lifts the fence; whether there was one.
    pub fn unfence(&self) -> bool {
        self.fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
    }

    /// When the fence's lease ends, if the table is fenced.
    pub fn fenced_until(&self) -> Option<Instant> {
        self.fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, end)| *end)
    }

    /// Lifts the fence if its lease has ended at `now`; whether it did.
    pub fn expire(&self, now: Instant) -> bool {
        let mut f = self.fence.lock().unwrap_or_else(|e| e.into_inner());
        if f.as_ref().is_some_and(|(_, end)| *end <= now) {
            *f = None;
            return true;
        }
        false
    }

    /// Whether the new layout is the one writes commit on first. Set by the job (or, on a peer,
    /// by `RESHARD PEER APPLY`) while the gate is paused or fenced, before the rule in the config
    /// changes: a write that waited and still carries the previous generation's rules follows
    /// this, not its rules.
    pub fn set_new_serves(&self, v: bool) {
        self.new_serves.store(v, Ordering::SeqCst);
    }

    /// See [`Gate::set_new_serves`].
    pub fn new_serves(&self) -> bool {
        self.new_serves.load(Ordering::SeqCst)
    }

    /// Starts (or restarts) recording the keys dual writes touch, against the verifier's
    /// `ranges`: called by the verifier after it cut the ranges and before its first checksum.
    pub fn track(&self, shape: KeyShape, ranges: &[(i128, i128)]) {
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((shape, DirtySet::new(ranges, MAX_DIRTY_KEYS)));
        self.tracking.store(true, Ordering::SeqCst);
    }

    /// [`Gate::track`] with the ranges given as their grid (`DirtySet::grid`): how a job on
    /// another proxy starts this proxy's recording (`RESHARD PEER TRACK`).
    pub fn track_grid(
        &self,
        shape: KeyShape,
        grid: Option<(i128, i128, i128, usize)>,
    ) -> Result<(), String> {
        let set = DirtySet::on_grid(grid, MAX_DIRTY_KEYS, MAX_GRID_RANGES)?;
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = Some((shape, set));
        self.tracking.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Whether keys are being recorded.
    pub fn tracking(&self) -> bool {
        self.tracking.load(Ordering::SeqCst)
    }

    /// What was written since tracking began or the last take; recording goes on. `all` when
    /// nothing was tracked.
    pub fn take_dirty(&self) -> Dirty {
        match self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some((_, d)) => d.take(),
            None => Dirty {
                all: true,
                ..Dirty::default()
            },
        }
    }

    /// Stops recording (the cut-over is done, or the job ended).
    pub fn untrack(&self) {
        self.tracking.store(false, Ordering::SeqCst);
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records the keys of one finished (or failed) dual write, when tracking.
    pub fn mark(&self, sql: &str, params: &[Value], generated: &[u64]) {
        if !self.tracking.load(Ordering::SeqCst) {
            return;
        }
        let shape = match self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some((shape, _)) => shape.clone(),
            None => return,
        };
        // Parsed outside the lock: the other cores' writes do not wait for it.
        let t = touched(sql, params, &shape, generated);
        if let Some((_, d)) = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            d.mark(&t);
        }
    }
}

/// The gates of a process, by sharding section and table (lower case); kept in
/// `crate::core::MysqlShared`.
#[derive(Default)]
pub struct Gates {
    all: Mutex<Vec<(GateKey, Arc<Gate>)>>,
}

/// A gate's sharding section and table (lower case).
type GateKey = (String, String);

impl Gates {
    /// The gate of `table` in sharding section `sharding` (made on first use).
    pub fn get(&self, sharding: &str, table: &str) -> Arc<Gate> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let key = (sharding.to_string(), table.to_ascii_lowercase());
        if let Some((_, g)) = all.iter().find(|(k, _)| *k == key) {
            return g.clone();
        }
        let g = Arc::new(Gate::default());
        all.push((key, g.clone()));
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn fence_waits_for_writes_renews_and_expires() {
        let gates = Gates::default();
        let g = gates.get("app", "Orders");
        assert!(Arc::ptr_eq(&g, &gates.get("app", "orders")));
        let writing = g.enter().await;
        let g2 = g.clone();
        let fencing = tokio::spawn(async move { g2.fence(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        assert!(g.fenced_until().is_none(), "fenced while a write ran");
        drop(writing);
        assert_eq!(fencing.await.ok(), Some(true));
        assert!(g.fenced_until().is_some());
        // New writes wait while fenced.
        assert!(g.lock.try_read().is_err());
        // A second fence renews.
        assert!(!g.fence(Duration::from_millis(0)).await);
        assert!(!g.expire(Instant::now() - Duration::from_secs(1)));
        assert!(g.expire(Instant::now()));
        assert!(g.lock.try_read().is_ok());
        assert!(!g.unfence());
        assert!(g.fence(Duration::from_secs(60)).await);
        assert!(g.unfence());
        assert!(g.lock.try_read().is_ok());
    }
}
