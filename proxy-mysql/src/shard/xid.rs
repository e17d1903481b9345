//! The process's XA transaction-id source, on its own so that the per-process state (`core::Shared`)
//! can hold it without importing the XA executor (`shard::xa`), which imports the core back.
//!
//! It also knows which gtrids are *in flight* (a transaction of this process holds them, from its
//! first `XA START` to the end of its `COMMIT`/`ROLLBACK`): the background resolver
//! (`shard::xa::Resolver`) never touches their branches.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The process's xid source: its incarnation (start time in ms), a sequence, and the gtrids in
/// flight.
pub struct XaIds {
    incarnation: u64,
    seq: AtomicU64,
    /// Gtrids held by a live [`Gtrid`]: at most one per open XA transaction (locked twice per
    /// transaction with XA branches, never on other statements).
    live: Arc<Mutex<HashSet<Box<str>>>>,
}

impl Default for XaIds {
    fn default() -> Self {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        XaIds {
            incarnation,
            seq: AtomicU64::new(0),
            live: Arc::default(),
        }
    }
}

/// A gtrid held by an open transaction: in flight until dropped.
pub struct Gtrid {
    id: Rc<str>,
    live: Arc<Mutex<HashSet<Box<str>>>>,
}

impl std::ops::Deref for Gtrid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
}

impl Drop for Gtrid {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&*self.id);
    }
}

impl XaIds {
    /// A new global transaction id for `worker`, in flight until the returned value is dropped.
    pub fn gtrid(&self, worker: u16) -> Gtrid {
        let n = self.seq.fetch_add(1, Relaxed);
        let id: Rc<str> = Rc::from(format!("furrow:{worker}:{}:{n}", self.incarnation));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Box::from(&*id));
        Gtrid {
            id,
            live: self.live.clone(),
        }
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether `gtrid` is held by an open transaction of this process.
    pub fn in_flight(&self, gtrid: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(gtrid)
    }

    /// The gtrids in flight now.
    pub fn in_flight_now(&self) -> HashSet<Box<str>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
