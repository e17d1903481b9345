//! Read/write targets of a group for one config generation: the primary and the replicas with their
//! weights and shared health state (the choice among them is [`crate::rwsplit`]'s).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use runtime::{Shared, Snapshot};

use crate::pool::Target;

/// A group's servers as the data path sees them.
pub struct GroupTargets {
    /// The primary.
    pub primary: Target,
    /// Replicas and their weights.
    pub replicas: Vec<(Target, u32)>,
}

impl GroupTargets {
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

/// One core's targets by group, for the config generation they were made for (in
/// [`crate::core::CoreCtx`]): made once per group and generation, not per checkout, and shared by
/// the read/write-split and sharded sessions of the core (so they share each target's pool too).
pub type TargetCache = RefCell<router::FastMap<String, (u64, Rc<GroupTargets>)>>;

/// The targets of `group` in `snap`, from `cache` or made and kept there.
pub fn cached_targets(
    cache: &TargetCache,
    snap: &Arc<Snapshot>,
    group: &str,
    shared: &Shared,
) -> Option<Rc<GroupTargets>> {
    let mut m = cache.borrow_mut();
    if let Some((generation, t)) = m.get(group)
        && *generation == snap.generation
    {
        return Some(t.clone());
    }
    let t = targets_for(snap, group, shared)?;
    // Bounded: groups come from the config, but a long-lived core sees many configs.
    if m.len() > 1024 {
        m.clear();
    }
    m.insert(group.to_string(), (snap.generation, t.clone()));
    Some(t)
}
