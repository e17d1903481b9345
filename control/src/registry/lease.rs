//! Heartbeat leases, held in memory on the control node that owns each instance.
//!
//! A heartbeat that finds its instance healthy and owned by this node only moves a deadline in memory: no
//! store write, no lock beyond the lease map's mutex and the state's read lock. The store is written when
//! something changes that other nodes must see:
//! - a beat for an instance that is unhealthy, or owned by another node (the client moved to this node):
//!   the instance turns healthy / changes owner;
//! - a lease that runs out on its owner: the instance turns unhealthy (checked every poll, 50 ms).
//!
//! Every node applies these records within one poll of the shared store, so two nodes agree on an
//! instance's health within one TTL plus ~50 ms. A node that took over an instance's lease makes the
//! previous owner's lease moot: an expiry is only written by the node the store names as owner.
//!
//! Gotcha: a client whose beats alternate between nodes (a round-robin balancer without affinity) moves the
//! ownership on every beat, which costs one store write per move. Point clients at one node (or use source
//! affinity); the client library keeps using the node it registered with until that node fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::model::{NODE_BEAT_MS, NODE_DEAD_MS};
use crate::center::{Center, system_user};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, now_ms};

/// `(env, service, instance id)`.
pub type LeaseKey = (String, String, String);

/// The leases this node holds, and its identity.
#[derive(Debug)]
pub struct Leases {
    node: String,
    deadlines: Mutex<HashMap<LeaseKey, u64>>,
    /// Heartbeats answered from memory only.
    pub beats: AtomicU64,
    /// Heartbeats that wrote the store (healthy again, or ownership moved here).
    pub beat_writes: AtomicU64,
    /// Leases that ran out (instances turned unhealthy by this node).
    pub expired: AtomicU64,
    /// Leases taken over from dead nodes.
    pub taken_over: AtomicU64,
    /// Active health check probes that passed / failed (`check`).
    pub checks_passed: AtomicU64,
    /// See `checks_passed`.
    pub checks_failed: AtomicU64,
    last_node_beat: AtomicU64,
    last_scan: AtomicU64,
    /// This node's token service for cluster-wide rate limits (in memory, like the leases).
    pub tokens: super::tokens::TokenServer,
    /// Per-version call statistics reported to this node, in memory: used while no jobs runtime is
    /// attached (then they live in its tables: `calls::SharedCalls`).
    pub calls: super::calls::CallStats,
    /// Set once the call statistics tables exist in the attached runtime database.
    pub calls_tables: std::sync::OnceLock<()>,
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

impl Leases {
    /// Leases of a node with a fresh random identity.
    pub fn new() -> Self {
        let node = crate::auth::new_token()
            .map(|t| format!("node-{}", &t[3..15]))
            .unwrap_or_else(|_| format!("node-{}", now_ms()));
        Leases {
            node,
            deadlines: Mutex::new(HashMap::new()),
            beats: AtomicU64::new(0),
            beat_writes: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            taken_over: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            last_node_beat: AtomicU64::new(0),
            last_scan: AtomicU64::new(0),
            tokens: Default::default(),
            calls: Default::default(),
            calls_tables: std::sync::OnceLock::new(),
        }
    }

    /// This node's identity (the `owner_node` of the instances whose leases it holds).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts or extends a lease.
    pub fn extend(&self, key: LeaseKey, ttl_ms: u64) {
        let deadline = now_ms() + ttl_ms;
        if let Ok(mut d) = self.deadlines.lock() {
            d.insert(key, deadline);
        }
    }

    /// Forgets a lease (deregistered).
    pub fn forget(&self, key: &LeaseKey) {
        if let Ok(mut d) = self.deadlines.lock() {
            d.remove(key);
        }
    }

    /// Removes and returns the leases past their deadline.
    fn take_expired(&self, now: u64) -> Vec<LeaseKey> {
        let Ok(mut d) = self.deadlines.lock() else {
            return Vec::new();
        };
        let expired: Vec<LeaseKey> = d
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            d.remove(k);
        }
        expired
    }

    /// The deadlines of the leases this node holds for a service's instances: instance id → ms.
    pub fn deadlines_of(&self, env: &str, service: &str) -> HashMap<String, u64> {
        let Ok(d) = self.deadlines.lock() else {
            return HashMap::new();
        };
        d.iter()
            .filter(|((e, s, _), _)| e == env && s == service)
            .map(|((_, _, id), at)| (id.clone(), *at))
            .collect()
    }

    /// How many leases this node holds.
    pub fn len(&self) -> usize {
        self.deadlines.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Whether this node holds no lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A heartbeat from `actor` for an instance: needs `edit` on the service (like registering). Unknown
/// instances answer 404 so the client registers again (e.g. after an operator removed it).
pub async fn beat(
    center: &std::sync::Arc<Center>,
    actor: crate::model::User,
    env: &str,
    service: &str,
    id: &str,
) -> Result<()> {
    let leases = &center.registry;
    let node = leases.node().to_string();
    let (ttl, in_memory) = center.read(|st| {
        let svc = st.registry.service(env, service).ok_or_else(|| {
            ControlError::not_found(format!("unknown service {service:?} in {env}"))
        })?;
        let have = st.level(&actor, &svc.app, &svc.name);
        if have < Level::Edit {
            return Err(ControlError::forbidden(format!(
                "user {:?} has {have:?} on service {service:?}, needs Edit",
                actor.name
            )));
        }
        let inst = st.registry.instance(env, service, id).ok_or_else(|| {
            ControlError::not_found(format!("unknown instance {id:?} of service {service:?}"))
                .with_field("instance")
        })?;
        Ok((svc.ttl_ms, inst.healthy && inst.owner_node == node))
    })??;
    let key = (env.to_string(), service.to_string(), id.to_string());
    leases.extend(key, ttl);
    if in_memory {
        leases.beats.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    leases.beat_writes.fetch_add(1, Ordering::Relaxed);
    let update = vec![(env.to_string(), service.to_string(), id.to_string(), true)];
    center
        .write(system_user(), move |tx| tx.set_health(&update, &node))
        .await
        .map(|_| ())
}

/// The lease keeper's round, run by the store poll (every 50 ms; blocking, it may commit): expires this
/// node's leases that ran out; while it holds leases, says it is alive every `NODE_BEAT_MS`; once a second,
/// takes over the instances whose owner node has been silent for `NODE_DEAD_MS` (that node died: without
/// this its instances would stay healthy for ever).
pub fn tick(center: &Center) -> Result<()> {
    expire(center)?;
    let leases = &center.registry;
    let node = leases.node().to_string();
    let now = now_ms();
    if !leases.is_empty()
        && now.saturating_sub(leases.last_node_beat.load(Ordering::Relaxed)) >= NODE_BEAT_MS
    {
        center.mutate(&system_user(), |tx| {
            tx.node_alive(&node);
            Ok(())
        })?;
        leases.last_node_beat.store(now, Ordering::Relaxed);
    }
    if now.saturating_sub(leases.last_scan.load(Ordering::Relaxed)) < 1_000 {
        return Ok(());
    }
    leases.last_scan.store(now, Ordering::Relaxed);
    let dead: Vec<(String, String, String, String)> = center.read(|st| {
        let r = &st.registry;
        r.instances
            .values()
            .flat_map(|m| m.values())
            .filter(|i| {
                i.healthy
                    && i.owner_node != node
                    && r.nodes
                        .get(&i.owner_node)
                        .is_none_or(|at| now.saturating_sub(*at) > NODE_DEAD_MS)
            })
            .map(|i| {
                (
                    i.env.clone(),
                    i.service.clone(),
                    i.id.clone(),
                    i.owner_node.clone(),
                )
            })
            .collect()
    })?;
    if dead.is_empty() {
        return Ok(());
    }
    let n = center.mutate(&system_user(), |tx| tx.take_over(&dead, &node))?;
    if n > 0 {
        tracing::info!(
            instances = n,
            "took over the leases of a silent control node"
        );
        leases.taken_over.fetch_add(n as u64, Ordering::Relaxed);
        let ttls: Vec<(LeaseKey, u64)> = center.read(|st| {
            dead.iter()
                .filter(|(env, svc, id, _)| {
                    st.registry
                        .instance(env, svc, id)
                        .is_some_and(|i| i.owner_node == node)
                })
                .map(|(env, svc, id, _)| {
                    let ttl = st.registry.service(env, svc).map_or(15_000, |s| s.ttl_ms);
                    ((env.clone(), svc.clone(), id.clone()), ttl)
                })
                .collect()
        })?;
        for (k, ttl) in ttls {
            leases.extend(k, ttl);
        }
    }
    Ok(())
}

/// Turns the instances whose lease ran out on this node unhealthy (in one commit); returns how many.
pub fn expire(center: &Center) -> Result<usize> {
    let leases = &center.registry;
    let expired = leases.take_expired(now_ms());
    if expired.is_empty() {
        return Ok(0);
    }
    let node = leases.node().to_string();
    let updates: Vec<(String, String, String, bool)> = center.read(|st| {
        expired
            .into_iter()
            .filter(|(env, svc, id)| {
                st.registry
                    .instance(env, svc, id)
                    .is_some_and(|i| i.healthy && i.owner_node == node)
            })
            .map(|(env, svc, id)| (env, svc, id, false))
            .collect()
    })?;
    if updates.is_empty() {
        return Ok(0);
    }
    match center.mutate(&system_user(), |tx| tx.set_health(&updates, &node)) {
        Ok(n) => {
            leases.expired.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
        Err(e) => {
            // Try again at the next poll: put the leases back as already expired.
            for (env, svc, id, _) in updates {
                leases.extend((env, svc, id), 0);
            }
            if matches!(e.code, ErrorCode::StoreUnavailable | ErrorCode::Stale) {
                Err(e)
            } else {
                tracing::warn!(error = %e, "lease expiry failed");
                Ok(0)
            }
        }
    }
}
