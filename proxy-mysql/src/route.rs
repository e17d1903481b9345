//! Read/write targets of a group for one config generation: the primary and the replicas with their
//! weights and shared health state, and the weighted choice of a readable replica.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use runtime::{Shared, Snapshot};

use crate::health::replica_readable;
use crate::pool::Target;

/// A group's servers as the data path sees them.
pub struct GroupTargets {
    /// The primary.
    pub primary: Target,
    /// Replicas and their weights.
    pub replicas: Vec<(Target, u32)>,
}

impl GroupTargets {
    /// The server called `name` (primary or replica).
    pub fn by_name(&self, name: &str) -> Option<&Target> {
        if &*self.primary.name == name {
            return Some(&self.primary);
        }
        self.replicas
            .iter()
            .map(|(t, _)| t)
            .find(|t| &*t.name == name)
    }

    /// Any usable replica not in `avoid`, ignoring lag (when the primary is down, stale reads beat
    /// errors).
    pub fn any_usable_replica(&self, r: u64, avoid: &[Rc<str>]) -> Option<&Target> {
        let up: Vec<&Target> = self
            .replicas
            .iter()
            .filter(|(t, w)| *w > 0 && t.state.usable() && !avoid.contains(&t.name))
            .map(|(t, _)| t)
            .collect();
        (!up.is_empty()).then(|| up[(r % up.len() as u64) as usize])
    }

    /// A replica that may take reads now (usable, within `max_lag`), chosen by weight using the
    /// random number `r`; None when there is none.
    pub fn pick_replica(&self, max_lag: Duration, r: u64) -> Option<&Target> {
        self.pick_replica_where(max_lag, r, |_| true)
    }

    /// Like [`GroupTargets::pick_replica`], among replicas for which `ok` holds.
    pub fn pick_replica_where(
        &self,
        max_lag: Duration,
        r: u64,
        ok: impl Fn(&Target) -> bool,
    ) -> Option<&Target> {
        let mut total = 0u64;
        for (t, w) in &self.replicas {
            if *w > 0 && replica_readable(&t.state, max_lag) && ok(t) {
                total += u64::from(*w);
            }
        }
        if total == 0 {
            return None;
        }
        let mut x = r % total;
        for (t, w) in &self.replicas {
            if *w > 0 && replica_readable(&t.state, max_lag) && ok(t) {
                let w = u64::from(*w);
                if x < w {
                    return Some(t);
                }
                x -= w;
            }
        }
        None
    }
}

/// Builds the targets of `group` in `snap` (None when the group or a server's state is missing).
pub fn targets_for(snap: &Arc<Snapshot>, group: &str, shared: &Shared) -> Option<Rc<GroupTargets>> {
    let g = snap.config.mysql_group(group)?;
    let mk = |s: &router::config::Server| {
        Some(Target {
            name: Rc::from(s.name.as_str()),
            address: Rc::from(s.address.as_str()),
            state: shared.backends.get(group, &s.name)?,
            pool: Rc::default(),
        })
    };
    let primary = mk(&g.primary)?;
    let replicas = g
        .replicas
        .iter()
        .filter_map(|r| Some((mk(r)?, r.weight)))
        .collect();
    Some(Rc::new(GroupTargets { primary, replicas }))
}
