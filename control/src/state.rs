//! The in-memory state of the configuration center and the records it is persisted as.
//!
//! Every change is a list of [`Change`]s: computed first (nothing touched), committed to the store in one
//! transaction, then applied here. Loading is applying every stored record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{ControlError, Result};
use crate::model::*;

/// One persisted record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Rec {
    /// An application.
    App(App),
    /// A named cluster.
    Cluster(Cluster),
    /// A namespace definition.
    Namespace(NamespaceDef),
    /// A draft item of a namespace instance.
    Item {
        /// Where.
        ns: NsKey,
        /// The item.
        item: Item,
    },
    /// The publish state of a namespace instance.
    NsState {
        /// Where.
        ns: NsKey,
        /// The state.
        state: NsState,
    },
    /// An immutable release.
    Release(Release),
    /// A pending scheduled publish.
    Scheduled(Scheduled),
    /// A rolling gray publish.
    Rollout(Rollout),
    /// A user.
    User(User),
    /// An API token.
    Token(Token),
    /// A permission grant.
    Grant(Grant),
    /// An audit record.
    Audit(AuditRecord),
    /// A service registry record (services, instances, governance rules: `crate::registry`).
    Registry(crate::registry::RegRec),
    /// A job definition (`crate::jobs`).
    Jobs(crate::jobs::JobRec),
    /// A release-management record (projects, versions, deployments, agents: `crate::release`).
    Rel(crate::release::RelRec),
    /// The sequence counter (release ids, revisions, audit ids).
    Seq {
        /// Its value.
        value: u64,
    },
}

impl Rec {
    /// The record kind, the first half of its store key.
    pub fn kind(&self) -> &'static str {
        match self {
            Rec::App(_) => "app",
            Rec::Cluster(_) => "cluster",
            Rec::Namespace(_) => "namespace",
            Rec::Item { .. } => "item",
            Rec::NsState { .. } => "ns_state",
            Rec::Release(_) => "release",
            Rec::Scheduled(_) => "scheduled",
            Rec::Rollout(_) => "rollout",
            Rec::User(_) => "user",
            Rec::Token(_) => "token",
            Rec::Grant(_) => "grant",
            Rec::Audit(_) => "audit",
            Rec::Registry(_) => "registry",
            Rec::Jobs(_) => "jobs",
            Rec::Rel(_) => "rel",
            Rec::Seq { .. } => "seq",
        }
    }

    /// The record key within its kind.
    pub fn key(&self) -> String {
        match self {
            Rec::App(a) => a.name.clone(),
            Rec::Cluster(c) => format!("{}/{}/{}", c.app, c.env, c.name),
            Rec::Namespace(n) => format!("{}/{}", n.app, n.name),
            Rec::Item { ns, item } => format!("{}/{}", ns.path(), item.key),
            Rec::NsState { ns, .. } => ns.path(),
            Rec::Release(r) => format!("{:020}", r.id),
            Rec::Scheduled(s) => format!("{:020}", s.id),
            Rec::Rollout(r) => format!("{:020}", r.release),
            Rec::User(u) => u.name.clone(),
            Rec::Token(t) => t.hash.clone(),
            Rec::Grant(g) => g.key(),
            Rec::Audit(a) => format!("{:020}", a.id),
            Rec::Registry(r) => r.key(),
            Rec::Jobs(j) => j.key(),
            Rec::Rel(r) => r.key(),
            Rec::Seq { .. } => "seq".into(),
        }
    }
}

/// A change to persist and apply.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // changes are short-lived; boxing buys nothing here
pub enum Change {
    /// Insert or replace a record.
    Put(Rec),
    /// Delete a record by kind and key.
    Delete {
        /// The kind.
        kind: &'static str,
        /// The key.
        key: String,
    },
}

/// The whole state, in memory.
#[derive(Default, Debug)]
pub struct State {
    /// The configured environments (not persisted: given at start).
    pub envs: Vec<String>,
    /// Applications by name.
    pub apps: BTreeMap<String, App>,
    /// Named clusters: (app, env, name).
    pub clusters: BTreeSet<(String, String, String)>,
    /// Namespace definitions by (owner app, name).
    pub namespaces: BTreeMap<(String, String), NamespaceDef>,
    /// Public namespace name → owner application.
    pub public: BTreeMap<String, String>,
    /// Draft items per namespace instance.
    pub drafts: HashMap<NsKey, BTreeMap<String, Item>>,
    /// Publish state per namespace instance.
    pub ns_states: HashMap<NsKey, NsState>,
    /// Releases by id.
    pub releases: BTreeMap<u64, Arc<Release>>,
    /// Pending scheduled publishes by id.
    pub scheduled: BTreeMap<u64, Scheduled>,
    /// Rolling gray publishes by gray release id.
    pub rollouts: BTreeMap<u64, Rollout>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Tokens by hash.
    pub tokens: HashMap<String, Token>,
    /// Grants by key.
    pub grants: BTreeMap<String, Grant>,
    /// The audit log, oldest first.
    pub audit: Vec<AuditRecord>,
    /// The sequence counter.
    pub seq: u64,
    /// How many releases to keep per namespace instance (0: all); the current and active gray releases are
    /// always kept. Not persisted: given at start.
    pub keep_releases: usize,
    /// Whether the center holds a key to seal secret items with (not persisted).
    pub secrets: bool,
    /// The service registry: services, instances, governance rules.
    pub registry: crate::registry::RegistryState,
    /// Job definitions (`crate::jobs`).
    pub jobs: crate::jobs::JobsState,
    /// Release management: projects, versions, deployments, agents.
    pub release: crate::release::ReleaseState,
}

impl State {
    /// An empty state with these environments.
    pub fn new(envs: Vec<String>) -> Self {
        State {
            envs,
            ..Default::default()
        }
    }

    /// Applies one change.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Put(rec) => self.put(rec),
            Change::Delete { kind, key } => self.delete(kind, &key),
        }
    }

    fn put(&mut self, rec: Rec) {
        match rec {
            Rec::App(a) => {
                self.apps.insert(a.name.clone(), a);
            }
            Rec::Cluster(c) => {
                self.clusters.insert((c.app, c.env, c.name));
            }
            Rec::Namespace(n) => {
                if n.public {
                    self.public.insert(n.name.clone(), n.app.clone());
                }
                self.namespaces.insert((n.app.clone(), n.name.clone()), n);
            }
            Rec::Item { ns, item } => {
                self.drafts
                    .entry(ns)
                    .or_default()
                    .insert(item.key.clone(), item);
            }
            Rec::NsState { ns, state } => {
                self.ns_states.insert(ns, state);
            }
            Rec::Release(r) => {
                self.releases.insert(r.id, Arc::new(r));
            }
            Rec::Scheduled(s) => {
                self.scheduled.insert(s.id, s);
            }
            Rec::Rollout(r) => {
                self.rollouts.insert(r.release, r);
            }
            Rec::User(u) => {
                self.users.insert(u.name.clone(), u);
            }
            Rec::Token(t) => {
                self.tokens.insert(t.hash.clone(), t);
            }
            Rec::Grant(g) => {
                self.grants.insert(g.key(), g);
            }
            Rec::Audit(a) => self.audit.push(a),
            Rec::Registry(r) => self.registry.put(r),
            Rec::Jobs(j) => self.jobs.put(j),
            Rec::Rel(r) => self.release.put(r),
            Rec::Seq { value } => self.seq = self.seq.max(value),
        }
    }

    fn delete(&mut self, kind: &str, key: &str) {
        match kind {
            "item" => {
                if let Some((path, k)) = key.rsplit_once('/')
                    && let Some(ns) = NsKey::parse(path)
                    && let Some(d) = self.drafts.get_mut(&ns)
                {
                    d.remove(k);
                }
            }
            "scheduled" => {
                if let Ok(id) = key.parse::<u64>() {
                    self.scheduled.remove(&id);
                }
            }
            "grant" => {
                self.grants.remove(key);
            }
            "token" => {
                self.tokens.remove(key);
            }
            "release" => {
                if let Ok(id) = key.parse::<u64>() {
                    self.releases.remove(&id);
                }
            }
            "registry" => self.registry.delete(key),
            "jobs" => self.jobs.delete(key),
            "rel" => self.release.delete(key),
            _ => {}
        }
    }

    /// Looks up the definition of namespace `ns` as seen from application `app`: its own, or a public one.
    pub fn namespace_for(&self, app: &str, ns: &str) -> Result<&NamespaceDef> {
        if let Some(d) = self.namespaces.get(&(app.to_string(), ns.to_string())) {
            return Ok(d);
        }
        self.public
            .get(ns)
            .and_then(|owner| self.namespaces.get(&(owner.clone(), ns.to_string())))
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown namespace {ns:?} for application {app:?}"))
                    .with_field("namespace")
            })
    }

    /// Checks that a namespace instance exists: environment, application, cluster and namespace.
    pub fn check_ns(&self, key: &NsKey) -> Result<&NamespaceDef> {
        if !self.envs.iter().any(|e| e == &key.env) {
            return Err(
                ControlError::not_found(format!("unknown environment {:?}", key.env))
                    .with_field("env"),
            );
        }
        if !self.apps.contains_key(&key.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", key.app))
                    .with_field("app"),
            );
        }
        if key.cluster != DEFAULT_CLUSTER
            && !self
                .clusters
                .contains(&(key.app.clone(), key.env.clone(), key.cluster.clone()))
        {
            return Err(ControlError::not_found(format!(
                "unknown cluster {:?} of {:?} in {}",
                key.cluster, key.app, key.env
            ))
            .with_field("cluster"));
        }
        self.namespace_for(&key.app, &key.namespace)
    }

    /// The effective level of `user` on `app`'s namespace `ns` (administrators: publish).
    pub fn level(&self, user: &User, app: &str, ns: &str) -> Level {
        if user.admin {
            return Level::Publish;
        }
        self.user_grants(user, app, ns)
            .map(|g| g.level)
            .max()
            .unwrap_or(Level::None)
    }

    /// Whether `user` may export `app`'s configuration.
    pub fn can_export(&self, user: &User, app: &str) -> bool {
        user.admin || self.user_grants(user, app, "*").any(|g| g.export)
    }

    fn user_grants<'a>(
        &'a self,
        user: &'a User,
        app: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        let me = format!("user:{}", user.name);
        self.grants.values().filter(move |g| {
            (g.subject == me
                || g.subject
                    .strip_prefix("role:")
                    .is_some_and(|r| user.roles.iter().any(|x| x == r)))
                && (g.app == "*" || g.app == app)
                && (g.namespace == "*" || g.namespace == ns || ns == "*")
        })
    }

    /// Requires at least `need` on the namespace instance.
    pub fn require(&self, user: &User, key: &NsKey, need: Level) -> Result<Level> {
        let have = self.level(user, &key.app, &key.namespace);
        if have < need {
            return Err(ControlError::forbidden(format!(
                "user {:?} has {:?} on {}/{}, needs {:?}",
                user.name, have, key.app, key.namespace, need
            )));
        }
        Ok(have)
    }

    /// The draft items of a namespace instance.
    pub fn draft(&self, key: &NsKey) -> BTreeMap<String, Item> {
        self.drafts.get(key).cloned().unwrap_or_default()
    }

    /// The items of the current main release (empty when never published).
    pub fn current_items(&self, key: &NsKey) -> BTreeMap<String, Item> {
        self.ns_states
            .get(key)
            .and_then(|s| s.current)
            .and_then(|id| self.releases.get(&id))
            .map(|r| r.items.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_apply() {
        let ns = NsKey::new("a", "DEV", "default", "app");
        let item = Item {
            key: "k".into(),
            value: Value::Integer(1),
            schema: None,
            comment: String::new(),
            version: 1,
            modified_by: "u".into(),
            masked: false,
            secret: false,
            sealed: None,
        };
        let rec = Rec::Item {
            ns: ns.clone(),
            item,
        };
        assert_eq!(rec.key(), "a/DEV/default/app/k");
        let json = serde_json::to_string(&rec).unwrap();
        let back: Rec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        let mut st = State::new(vec!["DEV".into()]);
        st.apply(Change::Put(back));
        assert_eq!(st.draft(&ns).len(), 1);
        st.apply(Change::Delete {
            kind: "item",
            key: rec.key(),
        });
        assert!(st.draft(&ns).is_empty());
    }

    #[test]
    fn grants_by_user_role_and_wildcard() {
        let mut st = State::new(vec![]);
        let alice = User {
            name: "alice".into(),
            roles: vec!["ops".into()],
            admin: false,
            password: None,
            token: None,
        };
        assert_eq!(st.level(&alice, "a", "n"), Level::None);
        st.apply(Change::Put(Rec::Grant(Grant {
            subject: "role:ops".into(),
            app: "a".into(),
            namespace: "*".into(),
            level: Level::Read,
            export: false,
            trace_ingest: false,
        })));
        st.apply(Change::Put(Rec::Grant(Grant {
            subject: "user:alice".into(),
            app: "a".into(),
            namespace: "n".into(),
            level: Level::Edit,
            export: true,
            trace_ingest: false,
        })));
        assert_eq!(st.level(&alice, "a", "n"), Level::Edit);
        assert_eq!(st.level(&alice, "a", "m"), Level::Read);
        assert_eq!(st.level(&alice, "b", "n"), Level::None);
        assert!(st.can_export(&alice, "a"));
        assert!(!st.can_export(&alice, "b"));
    }
}
