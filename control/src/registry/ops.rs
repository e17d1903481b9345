//! Registry changes as pure code on a [`Tx`]: each checks the caller's level on the service, validates,
//! returns the records to commit, re-puts the service with a new revision (what watchers compare `since`
//! with) and asks for its watchers to be woken. Operator actions are audited; health transitions made by
//! the lease keeper are not (they are machine events, counted in `/metrics`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{
    MAX_INSTANCES, NODE_BEAT_MS, NodeBeat, PendingRules, RegInstance, RegRec, Service,
};
use super::rules::{Rule, RuleSet, validate};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, NsKey, check_name, now_ms};
use crate::ops::Tx;
use crate::state::{Change, Rec};

/// A service definition as sent by clients (`PUT /v1/registry/{env}/services/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// The owning application (must exist).
    pub app: String,
    /// Owner (person or team).
    #[serde(default)]
    pub owner: String,
    /// Documentation link.
    #[serde(default)]
    pub docs: String,
    /// Declared dependencies (service names).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Heartbeat lease, ms (default 15,000; 1,000–3,600,000).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Protection threshold, 0–1 (default 0: off).
    #[serde(default)]
    pub protect_threshold: f64,
    /// An active health check run by the center (none: heartbeats only).
    #[serde(default)]
    pub check: Option<super::check::HealthCheck>,
    /// Whether rule publishes need review by another user (default false).
    #[serde(default)]
    pub review_rules: bool,
}

/// What a rule publish did: published the rule set, or (a service whose rules need review) left it
/// pending for another user's approval.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RulesOutcome {
    /// The rule set now in force.
    Published(RuleSet),
    /// The change waiting for review.
    Pending(PendingRules),
}

/// An instance registration (`POST /v1/registry/{env}/services/{name}/instances`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInput {
    /// Unique within the service (default `ip:port`).
    #[serde(default)]
    pub id: String,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Weight (default 100).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The most bytes of tags plus metadata per instance.
const MAX_INSTANCE_META: usize = 16 * 1024;

fn unknown_service(env: &str, name: &str) -> ControlError {
    ControlError::not_found(format!("unknown service {name:?} in {env}")).with_field("service")
}

fn unknown_instance(name: &str, id: &str) -> ControlError {
    ControlError::not_found(format!("unknown instance {id:?} of service {name:?}"))
        .with_field("instance")
}

impl Tx<'_> {
    /// Requires `level` on a service (grants on `(app, service)`), remembering it as a denial's target.
    fn need_service(&mut self, env: &str, name: &str, level: Level) -> Result<Service> {
        self.target = format!("registry/{env}/{name}");
        let svc = self
            .st
            .registry
            .service(env, name)
            .cloned()
            .ok_or_else(|| unknown_service(env, name))?;
        let have = self.st.level(self.actor, &svc.app, &svc.name);
        if have < level {
            return Err(ControlError::forbidden(format!(
                "user {:?} has {have:?} on service {name:?} ({}/{name}), needs {level:?}",
                self.actor.name, svc.app
            )));
        }
        Ok(svc)
    }

    /// Records a change to a service's registry data: bumps its revision and wakes its watchers.
    fn touch_service(&mut self, mut svc: Service) -> u64 {
        let rev = self.next_id();
        svc.rev = rev;
        self.pushed.push(NsKey {
            app: String::new(),
            env: svc.env.clone(),
            cluster: String::new(),
            namespace: super::channel(&svc.name),
        });
        self.put(Rec::Registry(RegRec::Service(svc)));
        rev
    }

    /// Records that `node` is alive when its last record is older than half a node beat (a node that takes a
    /// lease always has a fresh record, so no other node mistakes it for dead).
    pub fn node_alive(&mut self, node: &str) {
        let now = now_ms();
        let last = self.st.registry.nodes.get(node).copied().unwrap_or(0);
        if now.saturating_sub(last) >= NODE_BEAT_MS / 2 {
            self.put(Rec::Registry(RegRec::Node(NodeBeat {
                id: node.into(),
                at_ms: now,
            })));
        }
    }

    /// Takes over the leases of instances whose owner node is dead (silent for `NODE_DEAD_MS`): `node` becomes
    /// their owner and starts a fresh lease, so they stay healthy if they beat here and expire otherwise.
    /// Instances another node took over meanwhile are skipped. Not audited; runs as the system user.
    pub fn take_over(
        &mut self,
        dead: &[(String, String, String, String)],
        node: &str,
    ) -> Result<usize> {
        let mut n = 0;
        for (env, name, id, old_owner) in dead {
            let Some(inst) = self
                .st
                .registry
                .instance(env, name, id)
                .filter(|i| &i.owner_node == old_owner)
            else {
                continue;
            };
            let inst = RegInstance {
                owner_node: node.into(),
                ..inst.clone()
            };
            self.put(Rec::Registry(RegRec::Instance(inst)));
            n += 1;
        }
        if n > 0 {
            self.node_alive(node);
        }
        Ok(n)
    }

    /// Creates or updates a service (publish on `(app, name)`; for an existing service also on its current
    /// application). Changing the catalogue of a live service keeps the publishing gate: a live service
    /// cannot lose its owner or docs.
    pub fn put_service(&mut self, env: &str, name: &str, input: ServiceInput) -> Result<Service> {
        check_name("service", name)?;
        check_name("app", &input.app)?;
        if !self.st.envs.iter().any(|e| e == env) {
            return Err(
                ControlError::not_found(format!("unknown environment {env:?}")).with_field("env"),
            );
        }
        if !self.st.apps.contains_key(&input.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", input.app))
                    .with_field("app"),
            );
        }
        let old = self.st.registry.service(env, name).cloned();
        if old.is_some() {
            self.need_service(env, name, Level::Publish)?;
        }
        self.target = format!("registry/{env}/{name}");
        let have = self.st.level(self.actor, &input.app, name);
        if have < Level::Publish {
            return Err(ControlError::forbidden(format!(
                "user {:?} has {have:?} on {}/{name}, needs Publish",
                self.actor.name, input.app
            )));
        }
        let ttl_ms = input.ttl_ms.unwrap_or(15_000);
        if !(1_000..=3_600_000).contains(&ttl_ms) {
            return Err(ControlError::bad("ttl_ms", "ttl_ms is 1000-3600000"));
        }
        if !(0.0..=1.0).contains(&input.protect_threshold) {
            return Err(ControlError::bad(
                "protect_threshold",
                "protect_threshold is 0-1",
            ));
        }
        if input.dependencies.len() > 256 {
            return Err(ControlError::bad(
                "dependencies",
                "at most 256 dependencies",
            ));
        }
        for d in &input.dependencies {
            check_name("dependencies", d)?;
        }
        let mut input = input;
        if let Some(c) = &mut input.check {
            // A check read back from the API and sent again keeps its password.
            if c.password == super::check::MASKED
                && let Some(o) = old.as_ref().and_then(|o| o.check.as_ref())
                && o.user == c.user
            {
                c.password = o.password.clone();
            }
            c.validate()?;
        }
        let live = old.as_ref().is_some_and(|o| o.live);
        if live && (input.owner.is_empty() || input.docs.is_empty()) {
            return Err(ControlError::bad(
                if input.owner.is_empty() {
                    "owner"
                } else {
                    "docs"
                },
                "a live service needs an owner and docs",
            ));
        }
        let svc = Service {
            env: env.into(),
            name: name.into(),
            app: input.app,
            owner: input.owner,
            docs: input.docs,
            dependencies: input.dependencies,
            live,
            ttl_ms,
            protect_threshold: input.protect_threshold,
            rev: 0,
            check: input.check,
            review_rules: input.review_rules,
        };
        let action = if old.is_some() {
            "registry.service.update"
        } else {
            "registry.service.create"
        };
        let target = self.target.clone();
        self.audit(
            action,
            &target,
            serde_json::json!({"old": old.as_ref().map(Service::masked), "new": svc.masked()}),
        );
        let rev = self.touch_service(svc.clone());
        Ok(Service { rev, ..svc })
    }

    /// Puts a service live (or back to draft). Going live is the publishing gate: it needs an owner and a docs
    /// link. Publish level.
    pub fn set_live(&mut self, env: &str, name: &str, live: bool) -> Result<Service> {
        let svc = self.need_service(env, name, Level::Publish)?;
        if live && svc.owner.is_empty() {
            return Err(ControlError::bad(
                "owner",
                "a service needs an owner before it can go live",
            ));
        }
        if live && svc.docs.is_empty() {
            return Err(ControlError::bad(
                "docs",
                "a service needs a docs link before it can go live",
            ));
        }
        let target = self.target.clone();
        self.audit(
            if live {
                "registry.service.live"
            } else {
                "registry.service.draft"
            },
            &target,
            serde_json::Value::Null,
        );
        let rev = self.touch_service(Service {
            live,
            ..svc.clone()
        });
        Ok(Service { live, rev, ..svc })
    }

    /// Registers (or re-registers) an instance as healthy with its lease held by `node`. Edit level. A
    /// re-registration keeps what an operator decided (`enabled`, and the weight unless one is given).
    pub fn register(
        &mut self,
        env: &str,
        name: &str,
        input: InstanceInput,
        node: &str,
    ) -> Result<RegInstance> {
        let svc = self.need_service(env, name, Level::Edit)?;
        if input.ip.is_empty() {
            return Err(ControlError::bad("ip", "ip is required"));
        }
        if input.port == 0 {
            return Err(ControlError::bad("port", "port must be 1-65535"));
        }
        let id = if input.id.is_empty() {
            format!("{}-{}", input.ip.replace(':', "_"), input.port)
        } else {
            input.id
        };
        check_name("id", &id)?;
        let meta: usize = input
            .tags
            .iter()
            .chain(&input.metadata)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if meta > MAX_INSTANCE_META {
            return Err(ControlError::bad(
                "metadata",
                "tags and metadata are limited to 16 KiB",
            ));
        }
        let existing = self
            .st
            .registry
            .instances
            .get(&(env.to_string(), name.to_string()));
        let old = existing.and_then(|m| m.get(&id)).cloned();
        if old.is_none() && existing.is_some_and(|m| m.len() >= MAX_INSTANCES) {
            return Err(ControlError::bad(
                "id",
                format!("service {name:?} already has {MAX_INSTANCES} instances"),
            ));
        }
        let weight = input
            .weight
            .or(old.as_ref().map(|o| o.weight))
            .unwrap_or(100);
        if weight > 10_000 {
            return Err(ControlError::bad("weight", "weight is 0-10000"));
        }
        let inst = RegInstance {
            env: env.into(),
            service: name.into(),
            id,
            ip: input.ip,
            port: input.port,
            weight,
            version: input.version,
            tags: input.tags,
            metadata: input.metadata,
            enabled: old.as_ref().is_none_or(|o| o.enabled),
            healthy: true,
            owner_node: node.into(),
            rev: 0,
        };
        let target = format!("{}/{}", self.target, inst.id);
        self.audit(
            "registry.register",
            &target,
            serde_json::json!({"ip": inst.ip, "port": inst.port, "version": inst.version}),
        );
        let rev = self.touch_service(svc);
        let inst = RegInstance { rev, ..inst };
        self.put(Rec::Registry(RegRec::Instance(inst.clone())));
        self.node_alive(node);
        Ok(inst)
    }

    /// Removes an instance. Edit level.
    pub fn deregister(&mut self, env: &str, name: &str, id: &str) -> Result<()> {
        let svc = self.need_service(env, name, Level::Edit)?;
        let inst = self
            .st
            .registry
            .instance(env, name, id)
            .cloned()
            .ok_or_else(|| unknown_instance(name, id))?;
        let target = format!("{}/{id}", self.target);
        self.audit("registry.deregister", &target, serde_json::Value::Null);
        self.touch_service(svc);
        self.changes.push(Change::Delete {
            kind: "registry",
            key: RegRec::Instance(inst).key(),
        });
        Ok(())
    }

    /// An operator's decision on an instance: `enabled` (online / offline: an offline instance gets no new
    /// traffic and stays registered, so it can drain and be removed) and/or its weight. Publish level; audited
    /// with the old and new values.
    pub fn operate(
        &mut self,
        env: &str,
        name: &str,
        id: &str,
        enabled: Option<bool>,
        weight: Option<u32>,
    ) -> Result<RegInstance> {
        let svc = self.need_service(env, name, Level::Publish)?;
        let old = self
            .st
            .registry
            .instance(env, name, id)
            .cloned()
            .ok_or_else(|| unknown_instance(name, id))?;
        if weight.is_some_and(|w| w > 10_000) {
            return Err(ControlError::bad("weight", "weight is 0-10000"));
        }
        let mut inst = old.clone();
        if let Some(e) = enabled {
            inst.enabled = e;
        }
        if let Some(w) = weight {
            inst.weight = w;
        }
        let target = format!("{}/{id}", self.target);
        self.audit(
            "registry.operate",
            &target,
            serde_json::json!({
                "old": {"enabled": old.enabled, "weight": old.weight},
                "new": {"enabled": inst.enabled, "weight": inst.weight},
            }),
        );
        inst.rev = self.touch_service(svc);
        self.put(Rec::Registry(RegRec::Instance(inst.clone())));
        Ok(inst)
    }

    /// The lease keeper's verdict: instances turning healthy or unhealthy, and the node holding their lease.
    /// Instances gone meanwhile are skipped. Not audited. Runs as the system user.
    pub fn set_health(
        &mut self,
        updates: &[(String, String, String, bool)],
        node: &str,
    ) -> Result<usize> {
        let mut by_service: BTreeMap<(String, String), Vec<RegInstance>> = BTreeMap::new();
        for (env, name, id, healthy) in updates {
            let Some(old) = self.st.registry.instance(env, name, id) else {
                continue;
            };
            if old.healthy == *healthy && old.owner_node == node {
                continue;
            }
            // An expiry only counts where this node still holds the lease (another node may have taken it).
            if !*healthy && old.owner_node != node {
                continue;
            }
            by_service
                .entry((env.clone(), name.clone()))
                .or_default()
                .push(RegInstance {
                    healthy: *healthy,
                    owner_node: node.into(),
                    ..old.clone()
                });
        }
        if updates.iter().any(|u| u.3) {
            self.node_alive(node);
        }
        let mut n = 0;
        for ((env, name), insts) in by_service {
            let Some(svc) = self.st.registry.service(&env, &name).cloned() else {
                continue;
            };
            let rev = self.touch_service(svc);
            for inst in insts {
                self.put(Rec::Registry(RegRec::Instance(RegInstance { rev, ..inst })));
                n += 1;
            }
        }
        Ok(n)
    }

    /// Publishes a service's governance rules as a whole, with optimistic versioning (`expect_version`: the
    /// version the caller read, 0 for none yet). Publish level; audited with the old and new rules. On a
    /// service whose rule publishes need review (`review_rules`), the rules become a pending change
    /// instead (audited `registry.rules.propose`), replacing an earlier pending one and adding the caller
    /// to its editors; another user approves it with [`Tx::approve_rules`].
    pub fn publish_rules(
        &mut self,
        env: &str,
        name: &str,
        rules: Vec<Rule>,
        message: &str,
        expect_version: Option<u64>,
    ) -> Result<RulesOutcome> {
        let svc = self.need_service(env, name, Level::Publish)?;
        validate(&rules)?;
        let key = (env.to_string(), name.to_string());
        let old = self.st.registry.rules.get(&key).cloned();
        let current = old.as_ref().map_or(0, |r| r.version);
        check_rules_version(current, expect_version)?;
        let target = self.target.clone();
        if svc.review_rules {
            let mut editors = self
                .st
                .registry
                .pending
                .get(&key)
                .filter(|p| p.base_version == current)
                .map(|p| p.editors.clone())
                .unwrap_or_default();
            editors.insert(self.actor.name.clone());
            let pending = PendingRules {
                env: env.into(),
                service: name.into(),
                base_version: current,
                author: self.actor.name.clone(),
                editors,
                message: message.into(),
                at_ms: now_ms(),
                rules,
            };
            self.audit(
                "registry.rules.propose",
                &target,
                serde_json::json!({"old": old.map(|o| o.rules), "new": &pending.rules,
                                   "base_version": current}),
            );
            self.put(Rec::Registry(RegRec::Pending(pending.clone())));
            return Ok(RulesOutcome::Pending(pending));
        }
        let set = RuleSet {
            env: env.into(),
            service: name.into(),
            version: current + 1,
            author: self.actor.name.clone(),
            approver: String::new(),
            message: message.into(),
            at_ms: now_ms(),
            rules,
        };
        self.audit(
            "registry.rules.publish",
            &target,
            serde_json::json!({"old": old.map(|o| o.rules), "new": &set.rules, "version": set.version,
                               "message": &set.message}),
        );
        self.touch_service(svc);
        self.put(Rec::Registry(RegRec::Rules(set.clone())));
        Ok(RulesOutcome::Published(set))
    }

    /// Approves and publishes a service's pending rule change. Publish level, and the configuration
    /// center's review rule: nobody who proposed the change may approve it. `expect_version` is the rule
    /// set version the approver saw; the change must have been proposed against the version in force
    /// (else 409: the rules moved on, propose again). Audited `registry.rules.approve` with the old and
    /// new rules.
    pub fn approve_rules(
        &mut self,
        env: &str,
        name: &str,
        expect_version: Option<u64>,
    ) -> Result<RuleSet> {
        let svc = self.need_service(env, name, Level::Publish)?;
        let key = (env.to_string(), name.to_string());
        let pending = self.st.registry.pending.get(&key).cloned().ok_or_else(|| {
            ControlError::not_found(format!(
                "service {name:?} in {env} has no pending rule change"
            ))
            .with_field("pending")
        })?;
        crate::ops::review_gate(
            true,
            Some(&pending.editors),
            &self.actor.name,
            &format!("the rule change of service {name:?}"),
        )?;
        let old = self.st.registry.rules.get(&key).cloned();
        let current = old.as_ref().map_or(0, |r| r.version);
        check_rules_version(current, expect_version)?;
        if pending.base_version != current {
            return Err(ControlError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the pending change was proposed against version {}, the rules are at {current}: propose it again",
                    pending.base_version
                ),
            )
            .with_field("version"));
        }
        validate(&pending.rules)?;
        let set = RuleSet {
            env: env.into(),
            service: name.into(),
            version: current + 1,
            author: pending.author.clone(),
            approver: self.actor.name.clone(),
            message: pending.message.clone(),
            at_ms: now_ms(),
            rules: pending.rules.clone(),
        };
        let target = self.target.clone();
        self.audit(
            "registry.rules.approve",
            &target,
            serde_json::json!({"old": old.map(|o| o.rules), "new": &set.rules,
                               "version": set.version, "author": &set.author,
                               "message": &set.message}),
        );
        self.touch_service(svc);
        self.put(Rec::Registry(RegRec::Rules(set.clone())));
        self.changes.push(Change::Delete {
            kind: "registry",
            key: RegRec::Pending(pending).key(),
        });
        Ok(set)
    }

    /// Drops a service's pending rule change (rejected by a reviewer or withdrawn). Publish level;
    /// audited `registry.rules.reject`.
    pub fn reject_rules(&mut self, env: &str, name: &str) -> Result<()> {
        self.need_service(env, name, Level::Publish)?;
        let key = (env.to_string(), name.to_string());
        let pending = self.st.registry.pending.get(&key).cloned().ok_or_else(|| {
            ControlError::not_found(format!(
                "service {name:?} in {env} has no pending rule change"
            ))
            .with_field("pending")
        })?;
        let target = self.target.clone();
        self.audit(
            "registry.rules.reject",
            &target,
            serde_json::json!({"rules": &pending.rules, "author": &pending.author}),
        );
        self.changes.push(Change::Delete {
            kind: "registry",
            key: RegRec::Pending(pending).key(),
        });
        Ok(())
    }
}

/// 409 unless the caller read the version in force (None: no check).
fn check_rules_version(current: u64, expect: Option<u64>) -> Result<()> {
    if let Some(v) = expect
        && v != current
    {
        return Err(ControlError::new(
            ErrorCode::VersionConflict,
            format!("the rules are at version {current}, not {v}"),
        )
        .with_field("version"));
    }
    Ok(())
}
