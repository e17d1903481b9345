//! Resolution: which releases an instance sees for `(app, env, cluster, namespace)`, merged in order.
//!
//! Layers, lowest priority first (a later layer overrides keys of an earlier one):
//! 1. the public namespace's owner, cluster `default` (only when the namespace is public and owned by another app)
//! 2. the owner, the requested cluster (same condition)
//! 3. the application itself, cluster `default`
//! 4. the application itself, the requested cluster (when it is not `default`)
//!
//! In each layer the instance sees the newest active gray release whose rule selects it, else the current
//! main release; a layer never published contributes nothing. Environments never mix.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{DEFAULT_CLUSTER, Instance, Item, NsKey, Release};
use crate::state::State;

/// What an instance sees of one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The config version: the highest revision among the layers (increases on every change).
    pub version: u64,
    /// The highest pushed revision among the layers (natural publishes do not move it).
    #[serde(skip)]
    pub pushed: u64,
    /// The release ids applied, one per published layer, lowest priority first.
    pub releases: Vec<u64>,
    /// The merged items.
    pub items: BTreeMap<String, Item>,
}

/// The namespace instances consulted for `key`, lowest priority first.
pub fn layers(state: &State, key: &NsKey) -> Result<Vec<NsKey>> {
    let def = state.check_ns(key)?;
    let mut out = Vec::with_capacity(4);
    if def.app != key.app {
        out.push(key.with(&def.app, DEFAULT_CLUSTER));
        if key.cluster != DEFAULT_CLUSTER {
            out.push(key.with(&def.app, &key.cluster));
        }
    }
    out.push(key.with(&key.app, DEFAULT_CLUSTER));
    if key.cluster != DEFAULT_CLUSTER {
        out.push(key.clone());
    }
    Ok(out)
}

/// The release a given instance sees in one namespace instance.
pub fn release_for<'a>(
    state: &'a State,
    layer: &NsKey,
    inst: &Instance,
) -> Option<&'a Arc<Release>> {
    let st = state.ns_states.get(layer)?;
    let id = st
        .grays
        .iter()
        .rev()
        .find(|g| g.rule.matches(inst))
        .map(|g| g.release)
        .or(st.current)?;
    state.releases.get(&id)
}

/// Which releases `inst` sees for `key`, without building the items: (version, pushed, release ids).
pub fn resolve_ids(state: &State, key: &NsKey, inst: &Instance) -> Result<(u64, u64, Vec<u64>)> {
    let (mut version, mut pushed, mut ids) = (0, 0, Vec::with_capacity(4));
    for layer in layers(state, key)? {
        let Some(st) = state.ns_states.get(&layer) else {
            continue;
        };
        version = version.max(st.revision);
        pushed = pushed.max(st.pushed);
        if let Some(rel) = release_for(state, &layer, inst) {
            ids.push(rel.id);
        }
    }
    Ok((version, pushed, ids))
}

/// Resolves what `inst` sees for `key`.
pub fn resolve(state: &State, key: &NsKey, inst: &Instance) -> Result<Resolved> {
    let mut out = Resolved {
        version: 0,
        pushed: 0,
        releases: Vec::new(),
        items: BTreeMap::new(),
    };
    for layer in layers(state, key)? {
        let Some(st) = state.ns_states.get(&layer) else {
            continue;
        };
        out.version = out.version.max(st.revision);
        out.pushed = out.pushed.max(st.pushed);
        if let Some(rel) = release_for(state, &layer, inst) {
            out.releases.push(rel.id);
            for (k, v) in &rel.items {
                out.items.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

/// The version numbers of `key` for an instance without building the items: (version, pushed).
pub fn versions(state: &State, key: &NsKey) -> Result<(u64, u64)> {
    let mut v = (0, 0);
    for layer in layers(state, key)? {
        if let Some(st) = state.ns_states.get(&layer) {
            v = (v.0.max(st.revision), v.1.max(st.pushed));
        }
    }
    Ok(v)
}
