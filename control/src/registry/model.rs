//! Registry records: services (with their catalogue entry and settings), instances, governance rule sets.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::rules::RuleSet;

/// The most instances one service may hold (bounded everything: a runaway registration loop is refused).
pub const MAX_INSTANCES: usize = 10_000;

/// A service of an environment: catalogue entry, health settings, and the revision of its last change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The environment.
    pub env: String,
    /// The service name (unique per environment).
    pub name: String,
    /// The application it belongs to: permissions are the grants on `(app, name)`.
    pub app: String,
    /// The people or team owning it (the publishing gate needs one).
    #[serde(default)]
    pub owner: String,
    /// A link to its documentation (the publishing gate needs one).
    #[serde(default)]
    pub docs: String,
    /// Services it calls (declared).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Whether it is live: discovery answers only for live services (needs an owner and docs).
    #[serde(default)]
    pub live: bool,
    /// Heartbeat lease, ms: an instance not heard from for this long turns unhealthy.
    pub ttl_ms: u64,
    /// Protection threshold (0–1, like Nacos): when the healthy share of the enabled instances falls below
    /// it, discovery returns every enabled instance rather than overloading the few left.
    #[serde(default)]
    pub protect_threshold: f64,
    /// The sequence value of the last change to the service, its instances or its rules (watch `since`).
    pub rev: u64,
    /// An active health check the center runs against the instances (`registry::check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<super::check::HealthCheck>,
    /// Whether rule publishes need review: a publish becomes a pending change that another user with
    /// publish level approves (the configuration center's review rule).
    #[serde(default)]
    pub review_rules: bool,
}

impl Service {
    /// The service as the API and the audit log show it: a check password masked.
    pub fn masked(&self) -> Service {
        let mut s = self.clone();
        s.check = s.check.as_ref().map(super::check::HealthCheck::masked);
        s
    }
}

/// A rule set waiting for review (a publish on a service with `review_rules`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingRules {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// The rule set version it was proposed against (approval fails if the rules moved on).
    pub base_version: u64,
    /// Who proposed it last.
    pub author: String,
    /// Everyone who proposed this change (none of them may approve it).
    pub editors: std::collections::BTreeSet<String>,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The rules proposed.
    pub rules: Vec<super::rules::Rule>,
}

/// One instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegInstance {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// Unique within the service.
    pub id: String,
    /// Address (IP or host name).
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Relative weight (0 = no traffic, like offline).
    pub weight: u32,
    /// The version it runs.
    #[serde(default)]
    pub version: String,
    /// Tags / labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Free metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Whether an operator let it take traffic (`offline` clears it: graceful drain).
    pub enabled: bool,
    /// Whether its lease is live (heartbeats arrive).
    pub healthy: bool,
    /// The control node holding its lease in memory.
    pub owner_node: String,
    /// The sequence value of its last change.
    pub rev: u64,
}

/// A stored registry record (one `Rec::Registry`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reg", rename_all = "snake_case")]
pub enum RegRec {
    /// A service.
    Service(Service),
    /// An instance.
    Instance(RegInstance),
    /// The governance rules of a service (one versioned set).
    Rules(RuleSet),
    /// A control node holding leases is alive (written every [`NODE_BEAT_MS`] while it holds any).
    Node(NodeBeat),
    /// A rule set waiting for review.
    Pending(PendingRules),
}

/// How often a node holding leases says it is alive.
pub const NODE_BEAT_MS: u64 = 2_000;

/// A node silent for this long is dead: the other nodes take over its instances' leases.
pub const NODE_DEAD_MS: u64 = 4 * NODE_BEAT_MS;

/// A control node's sign of life.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeBeat {
    /// The node id.
    pub id: String,
    /// When, ms since the epoch (by the node's clock: nodes' clocks must agree within a few seconds).
    pub at_ms: u64,
}

impl RegRec {
    /// The store key within the `registry` kind.
    pub fn key(&self) -> String {
        match self {
            RegRec::Service(s) => format!("svc/{}/{}", s.env, s.name),
            RegRec::Instance(i) => format!("inst/{}/{}/{}", i.env, i.service, i.id),
            RegRec::Rules(r) => format!("rules/{}/{}", r.env, r.service),
            RegRec::Node(n) => format!("node/{}", n.id),
            RegRec::Pending(p) => format!("pending/{}/{}", p.env, p.service),
        }
    }

    /// The `(env, channel)` whose watchers a change to this record wakes (none for node records).
    pub fn wake_key(&self) -> Option<(String, String)> {
        match self {
            RegRec::Service(s) => Some((s.env.clone(), super::channel(&s.name))),
            RegRec::Instance(i) => Some((i.env.clone(), super::channel(&i.service))),
            RegRec::Rules(r) => Some((r.env.clone(), super::channel(&r.service))),
            RegRec::Node(_) | RegRec::Pending(_) => None,
        }
    }
}

/// `(env, service)`.
pub type SvcKey = (String, String);

/// The registry part of the in-memory state.
#[derive(Clone, Debug, Default)]
pub struct RegistryState {
    /// Services by (env, name).
    pub services: BTreeMap<SvcKey, Service>,
    /// Instances by (env, service), then id.
    pub instances: HashMap<SvcKey, BTreeMap<String, RegInstance>>,
    /// Rule sets by (env, service).
    pub rules: HashMap<SvcKey, RuleSet>,
    /// The last sign of life of each control node holding leases: id → ms.
    pub nodes: HashMap<String, u64>,
    /// Rule sets waiting for review by (env, service).
    pub pending: HashMap<SvcKey, PendingRules>,
}

impl RegistryState {
    /// Applies a stored record.
    pub fn put(&mut self, rec: RegRec) {
        match rec {
            RegRec::Service(s) => {
                self.services.insert((s.env.clone(), s.name.clone()), s);
            }
            RegRec::Instance(i) => {
                self.instances
                    .entry((i.env.clone(), i.service.clone()))
                    .or_default()
                    .insert(i.id.clone(), i);
            }
            RegRec::Rules(r) => {
                self.rules.insert((r.env.clone(), r.service.clone()), r);
            }
            RegRec::Node(n) => {
                self.nodes.insert(n.id, n.at_ms);
            }
            RegRec::Pending(p) => {
                self.pending.insert((p.env.clone(), p.service.clone()), p);
            }
        }
    }

    /// Applies a deletion by store key (`inst/ENV/SERVICE/ID` and `svc/ENV/NAME`).
    pub fn delete(&mut self, key: &str) {
        let mut parts = key.splitn(4, '/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("inst"), Some(env), Some(svc), Some(id)) => {
                let k = (env.to_string(), svc.to_string());
                if let Some(m) = self.instances.get_mut(&k) {
                    m.remove(id);
                    if m.is_empty() {
                        self.instances.remove(&k);
                    }
                }
            }
            (Some("svc"), Some(env), Some(name), None) => {
                let k = (env.to_string(), name.to_string());
                self.services.remove(&k);
                self.instances.remove(&k);
                self.rules.remove(&k);
                self.pending.remove(&k);
            }
            (Some("pending"), Some(env), Some(name), None) => {
                self.pending.remove(&(env.to_string(), name.to_string()));
            }
            _ => {}
        }
    }

    /// A service.
    pub fn service(&self, env: &str, name: &str) -> Option<&Service> {
        self.services.get(&(env.to_string(), name.to_string()))
    }

    /// One instance (a map lookup: heartbeats call it for every beat).
    pub fn instance(&self, env: &str, name: &str, id: &str) -> Option<&RegInstance> {
        self.instances
            .get(&(env.to_string(), name.to_string()))
            .and_then(|m| m.get(id))
    }

    /// The instances of a service, by id.
    pub fn instances_of(&self, env: &str, name: &str) -> impl Iterator<Item = &RegInstance> {
        self.instances
            .get(&(env.to_string(), name.to_string()))
            .into_iter()
            .flat_map(|m| m.values())
    }
}

/// What discovery answers for a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// The revision (watch with `since=` this).
    pub rev: u64,
    /// Whether the protection threshold applied: the list includes unhealthy instances.
    pub protected: bool,
    /// The instances to send traffic to: enabled, weight > 0, healthy (or all enabled when protected).
    pub instances: Vec<RegInstance>,
    /// The governance rules in force (absent when none were published).
    pub rules: Option<RuleSet>,
}

/// The instances a caller should use, with the protection threshold applied.
///
/// Candidates are the enabled instances with a weight above 0 (an operator's `offline` or weight 0 removes
/// an instance at once, healthy or not). When fewer than `protect_threshold` of them are healthy, all
/// candidates are returned (`protected`), so a wave of failures does not pile the whole load on the few
/// survivors; otherwise only the healthy ones.
pub fn select(svc: &Service, all: &[&RegInstance]) -> (bool, Vec<RegInstance>) {
    let candidates: Vec<&RegInstance> = all
        .iter()
        .copied()
        .filter(|i| i.enabled && i.weight > 0)
        .collect();
    let healthy = candidates.iter().filter(|i| i.healthy).count();
    let protected = !candidates.is_empty()
        && svc.protect_threshold > 0.0
        && (healthy as f64) < svc.protect_threshold * candidates.len() as f64;
    let out = candidates
        .into_iter()
        .filter(|i| protected || i.healthy)
        .cloned()
        .collect();
    (protected, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, healthy: bool, enabled: bool, weight: u32) -> RegInstance {
        RegInstance {
            id: id.into(),
            healthy,
            enabled,
            weight,
            ..Default::default()
        }
    }

    #[test]
    fn protection_threshold_returns_every_enabled_instance() {
        let mut svc = Service {
            protect_threshold: 0.5,
            ..Default::default()
        };
        let a = inst("a", true, true, 1);
        let b = inst("b", false, true, 1);
        let c = inst("c", false, true, 1);
        let off = inst("off", true, false, 1);
        let zero = inst("zero", true, true, 0);
        let all = [&a, &b, &c, &off, &zero];
        let (p, out) = select(&svc, &all);
        assert!(p, "1 healthy of 3 candidates is below 0.5");
        let ids: Vec<&str> = out.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        svc.protect_threshold = 0.3;
        let (p, out) = select(&svc, &all);
        assert!(!p);
        assert_eq!(out.len(), 1);
        svc.protect_threshold = 0.0;
        assert_eq!(select(&svc, &[&b]), (false, vec![]));
    }

    #[test]
    fn deletions_by_key() {
        let mut st = RegistryState::default();
        let mut i = inst("x/y", true, true, 1);
        i.env = "DEV".into();
        i.service = "s".into();
        let key = RegRec::Instance(i.clone()).key();
        st.put(RegRec::Instance(i));
        assert_eq!(st.instances_of("DEV", "s").count(), 1);
        st.delete(&key);
        assert_eq!(st.instances_of("DEV", "s").count(), 0);
    }
}
