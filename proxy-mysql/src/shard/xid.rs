//! The process's XA transaction-id source, on its own so that the per-process state (`core::Shared`)
//! can hold it without importing the XA executor (`shard::xa`), which imports the core back.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The process's xid source: its incarnation (start time in ms) and a sequence.
pub struct XaIds {
    incarnation: u64,
    seq: AtomicU64,
}

impl Default for XaIds {
    fn default() -> Self {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        XaIds {
            incarnation,
            seq: AtomicU64::new(0),
        }
    }
}

impl XaIds {
    /// A new global transaction id for `worker`.
    pub fn gtrid(&self, worker: u16) -> Rc<str> {
        let n = self.seq.fetch_add(1, Relaxed);
        Rc::from(format!("furrow:{worker}:{}:{n}", self.incarnation))
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}
