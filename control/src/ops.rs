//! Change management as pure code: every operation reads the state, checks everything, and returns the
//! [`Change`]s to commit (plus its result). Nothing is applied until the caller committed them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ControlError, ErrorCode, Result};
use crate::model::*;
use crate::state::{Change, Rec, State};

/// How a publish reaches clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PublishMode {
    /// Pushed to watching clients now.
    #[default]
    Immediate,
    /// Taken on the clients' next refresh or restart (watchers are not woken).
    Natural,
    /// Published by the service at `at_ms` (ms since the epoch).
    Scheduled {
        /// When.
        at_ms: u64,
    },
    /// A gray release, seen only by the selected instances until promoted or abandoned.
    Gray {
        /// The selection.
        rule: GrayRule,
    },
    /// A gray release rolled out by the service: a batch of the instances known for the namespace instance
    /// every `interval_ms`, then promoted; stops by itself when an instance rejects it.
    Rolling {
        /// Batch size.
        batch: BatchSpec,
        /// Time between batches, ms.
        interval_ms: u64,
        /// Stop when an instance with the release reports too many errors.
        #[serde(default)]
        health: Option<ErrorRateGate>,
    },
}

/// A user's command to a rolling gray publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Stop adding batches.
    Pause,
    /// Continue (the next batch is due now).
    Resume,
    /// Abandon the gray release: every instance back on the main release.
    Abort,
    /// Abort, or after the promotion return the main release to the one before the rollout.
    Rollback,
}

impl RolloutAction {
    /// Parses `pause`, `resume`, `abort`, `rollback`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "abort" => RolloutAction::Abort,
            "rollback" => RolloutAction::Rollback,
            _ => {
                return Err(ControlError::not_found(format!(
                    "unknown rollout action {s:?}: use pause, resume, abort or rollback"
                ))
                .with_field("action"));
            }
        })
    }
}

/// A publish request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct PublishRequest {
    /// The release message.
    #[serde(default)]
    pub message: String,
    /// The mode.
    #[serde(flatten)]
    pub mode: PublishMode,
}

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// The release created (none for a scheduled publish).
    pub release: Option<u64>,
    /// The scheduled publish id (scheduled mode).
    pub scheduled: Option<u64>,
}

/// A new or updated item, as sent by clients. Unknown fields are refused (a misspelt `"shcema"` must not be
/// silently ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// The value.
    pub value: Value,
    /// The JSON Schema: absent keeps the item's schema, `null` removes it, a schema sets it. Changing the
    /// schema of an existing item needs `publish` (an `edit` user cannot loosen what an admin enforced).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub schema: Option<Option<serde_json::Value>>,
    /// Whether the item is secret: absent keeps the flag; changing it on an existing item needs `publish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
    /// A comment.
    #[serde(default)]
    pub comment: String,
    /// The version the caller read: absent to create (fails if it exists), else must be the current one.
    #[serde(default)]
    pub version: Option<u64>,
}

/// Deserializes a field that may be absent (`None`, through `default`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A change being prepared by one actor.
pub struct Tx<'a> {
    /// The state read.
    pub st: &'a State,
    /// The acting user.
    pub actor: &'a User,
    /// The changes so far.
    pub changes: Vec<Change>,
    /// The sequence counter after this change.
    pub seq: u64,
    /// The namespace instances whose watchers must be woken after commit.
    pub pushed: Vec<NsKey>,
    /// What the last permission check was about (the target of a "denied" audit record).
    pub target: String,
    now: u64,
}

/// An item's value as recorded in the audit log: `"******"` for secret items.
fn audit_value(item: &Item, secret: bool) -> serde_json::Value {
    if secret {
        serde_json::Value::String("******".into())
    } else {
        serde_json::to_value(&item.value).unwrap_or_default()
    }
}

fn conflict(msg: impl Into<String>) -> ControlError {
    ControlError::new(ErrorCode::VersionConflict, msg).with_field("version")
}

impl<'a> Tx<'a> {
    /// Starts a change.
    pub fn new(st: &'a State, actor: &'a User) -> Self {
        Tx {
            st,
            actor,
            changes: Vec::new(),
            seq: st.seq,
            pushed: Vec::new(),
            target: String::new(),
            now: now_ms(),
        }
    }

    /// Finishes: the changes including the new sequence value, the namespace instances to wake, the sequence.
    pub fn finish(mut self) -> (Vec<Change>, Vec<NsKey>, u64) {
        if self.seq != self.st.seq {
            self.changes.push(Change::Put(Rec::Seq { value: self.seq }));
        }
        (self.changes, self.pushed, self.seq)
    }

    /// Requires `level` on a namespace instance, remembering it as the target of a possible denial.
    fn need(&mut self, ns: &NsKey, level: Level) -> Result<Level> {
        self.target = ns.path();
        self.st.require(self.actor, ns, level)
    }

    /// An audit record of a refused attempt (committed on its own by the caller).
    pub fn denied(&mut self, err: &ControlError) {
        let target = if self.target.is_empty() {
            "-".to_string()
        } else {
            self.target.clone()
        };
        self.changes.clear();
        self.seq = self.st.seq;
        self.audit(
            "denied",
            &target,
            serde_json::json!({"code": err.code, "message": err.message}),
        );
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn put(&mut self, r: Rec) {
        self.changes.push(Change::Put(r));
    }

    pub(crate) fn audit(&mut self, action: &str, target: &str, detail: serde_json::Value) {
        let id = self.next_id();
        let rec = AuditRecord {
            id,
            at_ms: self.now,
            actor: self.actor.name.clone(),
            action: action.into(),
            target: target.into(),
            detail,
        };
        self.put(Rec::Audit(rec));
    }

    fn require_admin(&mut self) -> Result<()> {
        self.target = "admin".into();
        if self.actor.admin {
            Ok(())
        } else {
            Err(ControlError::forbidden(format!(
                "{:?} is not an administrator",
                self.actor.name
            )))
        }
    }

    /// Creates an application (administrators).
    pub fn create_app(&mut self, name: &str, description: &str) -> Result<App> {
        self.require_admin()?;
        check_name("app", name)?;
        if self.st.apps.contains_key(name) {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("application {name:?} exists"),
            )
            .with_field("app"));
        }
        let app = App {
            name: name.into(),
            description: description.into(),
        };
        self.put(Rec::App(app.clone()));
        self.audit("app.create", name, serde_json::json!({}));
        Ok(app)
    }

    /// Creates a named cluster of an application in one environment (administrators).
    pub fn create_cluster(&mut self, app: &str, env: &str, name: &str) -> Result<Cluster> {
        self.require_admin()?;
        check_name("cluster", name)?;
        if !self.st.envs.iter().any(|e| e == env) {
            return Err(
                ControlError::not_found(format!("unknown environment {env:?}")).with_field("env"),
            );
        }
        if !self.st.apps.contains_key(app) {
            return Err(
                ControlError::not_found(format!("unknown application {app:?}")).with_field("app"),
            );
        }
        if name == DEFAULT_CLUSTER
            || self
                .st
                .clusters
                .contains(&(app.into(), env.into(), name.into()))
        {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("cluster {name:?} exists"),
            )
            .with_field("cluster"));
        }
        let c = Cluster {
            app: app.into(),
            env: env.into(),
            name: name.into(),
        };
        self.put(Rec::Cluster(c.clone()));
        self.audit(
            "cluster.create",
            &format!("{app}/{env}/{name}"),
            serde_json::json!({}),
        );
        Ok(c)
    }

    /// Creates a namespace owned by an application (administrators).
    pub fn create_namespace(&mut self, def: NamespaceDef) -> Result<NamespaceDef> {
        self.require_admin()?;
        check_name("namespace", &def.name)?;
        if !self.st.apps.contains_key(&def.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", def.app))
                    .with_field("app"),
            );
        }
        let taken = self
            .st
            .namespaces
            .contains_key(&(def.app.clone(), def.name.clone()))
            || self.st.public.contains_key(&def.name)
            || (def.public && self.st.namespaces.keys().any(|(_, n)| n == &def.name));
        if taken {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("namespace {:?} exists", def.name),
            )
            .with_field("namespace"));
        }
        self.put(Rec::Namespace(def.clone()));
        self.audit(
            "namespace.create",
            &format!("{}/{}", def.app, def.name),
            serde_json::to_value(&def).unwrap_or_default(),
        );
        Ok(def)
    }

    fn edited(&mut self, ns: &NsKey) {
        let mut state = self.st.ns_states.get(ns).cloned().unwrap_or_default();
        if state.editors.insert(self.actor.name.clone()) {
            self.put(Rec::NsState {
                ns: ns.clone(),
                state,
            });
        }
    }

    fn write_item(&mut self, ns: &NsKey, item: Item, action: &str) -> Result<Item> {
        item.validate()?;
        let old = self.st.drafts.get(ns).and_then(|d| d.get(&item.key));
        let secret = item.secret || old.is_some_and(|o| o.secret);
        let detail = serde_json::json!({
            "version": item.version,
            "old": old.map(|o| audit_value(o, secret)),
            "new": audit_value(&item, secret),
        });
        self.put(Rec::Item {
            ns: ns.clone(),
            item: item.clone(),
        });
        self.edited(ns);
        self.audit(action, &format!("{}/{}", ns.path(), item.key), detail);
        Ok(item)
    }

    /// Creates or updates a draft item with optimistic versioning.
    pub fn put_item(&mut self, ns: &NsKey, key: &str, input: ItemInput) -> Result<Item> {
        self.st.check_ns(ns)?;
        self.need(ns, Level::Edit)?;
        check_name("key", key)?;
        let existing = self.st.drafts.get(ns).and_then(|d| d.get(key));
        let version = match (existing, input.version) {
            (None, None | Some(0)) => 1,
            (None, Some(v)) => {
                return Err(conflict(format!(
                    "key {key:?} does not exist (expected version {v})"
                )));
            }
            (Some(cur), None) => {
                return Err(ControlError::new(
                    ErrorCode::AlreadyExists,
                    format!("key {key:?} exists (version {})", cur.version),
                )
                .with_field("key"));
            }
            (Some(cur), Some(v)) if v != cur.version => {
                return Err(conflict(format!(
                    "key {key:?} is at version {}, not {v}",
                    cur.version
                )));
            }
            (Some(cur), Some(_)) => cur.version + 1,
        };
        let old_schema = existing.and_then(|i| i.schema.clone());
        let old_secret = existing.is_some_and(|i| i.secret);
        let schema = match input.schema {
            None => old_schema.clone(),
            Some(s) => s,
        };
        let secret = input.secret.unwrap_or(old_secret);
        if secret && !self.st.secrets {
            return Err(ControlError::bad(
                "secret",
                "secret items need a key to be encrypted with: start the center with --secret-key-file",
            ));
        }
        if existing.is_some() && (schema != old_schema || secret != old_secret) {
            let field = if schema != old_schema {
                "schema"
            } else {
                "secret"
            };
            self.need(ns, Level::Publish)
                .map_err(|e| e.with_field(field))?;
        }
        let item = Item {
            key: key.into(),
            value: input.value,
            schema,
            comment: input.comment,
            secret,
            sealed: None,
            version,
            modified_by: self.actor.name.clone(),
            masked: false,
        };
        self.write_item(ns, item, "item.put")
    }

    fn existing_item(&mut self, ns: &NsKey, key: &str, version: Option<u64>) -> Result<Item> {
        self.st.check_ns(ns)?;
        self.need(ns, Level::Edit)?;
        let cur = self
            .st
            .drafts
            .get(ns)
            .and_then(|d| d.get(key))
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown key {key:?}")).with_field("key")
            })?;
        if let Some(v) = version
            && v != cur.version
        {
            return Err(conflict(format!(
                "key {key:?} is at version {}, not {v}",
                cur.version
            )));
        }
        Ok(cur.clone())
    }

    /// Deletes a draft item (with `version`, only if unchanged).
    pub fn delete_item(&mut self, ns: &NsKey, key: &str, version: Option<u64>) -> Result<()> {
        let old = self.existing_item(ns, key, version)?;
        self.changes.push(Change::Delete {
            kind: "item",
            key: format!("{}/{key}", ns.path()),
        });
        self.edited(ns);
        self.audit(
            "item.delete",
            &format!("{}/{key}", ns.path()),
            serde_json::json!({"old": audit_value(&old, old.secret)}),
        );
        Ok(())
    }

    /// Edits one element of a list item: `index` None appends, `value` None removes.
    pub fn edit_list(
        &mut self,
        ns: &NsKey,
        key: &str,
        index: Option<usize>,
        value: Option<serde_json::Value>,
        version: Option<u64>,
    ) -> Result<Item> {
        let mut item = self.existing_item(ns, key, version)?;
        let Value::List(list) = &mut item.value else {
            return Err(ControlError::bad(
                "value",
                format!("key {key:?} is a {}, not a list", item.value.type_name()),
            ));
        };
        match (index, value) {
            (None, Some(v)) => list.push(v),
            (None, None) => return Err(ControlError::bad("value", "nothing to append")),
            (Some(i), v) => {
                if i >= list.len() {
                    return Err(ControlError::not_found(format!(
                        "list {key:?} has {} items, no index {i}",
                        list.len()
                    ))
                    .with_field("index"));
                }
                match v {
                    Some(v) => list[i] = v,
                    None => {
                        list.remove(i);
                    }
                }
            }
        }
        item.version += 1;
        item.modified_by = self.actor.name.clone();
        self.write_item(ns, item, "item.list")
    }

    /// Deletes the oldest releases of `ns` beyond the retention (`State::keep_releases`), never the current
    /// one, active gray releases, the release a rollout would roll back to, or releases created in this
    /// change.
    fn prune_releases(&mut self, ns: &NsKey, state: &NsState) {
        let keep = self.st.keep_releases;
        if keep == 0 {
            return;
        }
        let created = self
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Put(Rec::Release(r)) if &r.ns == ns))
            .count();
        let mine: Vec<u64> = self
            .st
            .releases
            .values()
            .filter(|r| &r.ns == ns)
            .map(|r| r.id)
            .collect();
        let total = mine.len() + created;
        if total <= keep {
            return;
        }
        let mut excess = total - keep;
        for id in mine {
            if excess == 0 {
                break;
            }
            let rollout_base =
                self.st.rollouts.values().any(|r| {
                    &r.ns == ns && r.base == Some(id) && r.status != RolloutStatus::Aborted
                });
            if state.current == Some(id)
                || state.grays.iter().any(|g| g.release == id)
                || rollout_base
            {
                continue;
            }
            self.changes.push(Change::Delete {
                kind: "release",
                key: format!("{id:020}"),
            });
            excess -= 1;
        }
    }

    fn new_release(
        &mut self,
        ns: &NsKey,
        items: BTreeMap<String, Item>,
        message: &str,
        kind: ReleaseKind,
    ) -> Release {
        let id = self.next_id();
        let rel = Release {
            id,
            ns: ns.clone(),
            items,
            author: self.actor.name.clone(),
            message: message.into(),
            created_ms: self.now,
            kind,
        };
        self.put(Rec::Release(rel.clone()));
        rel
    }

    fn set_state(&mut self, ns: &NsKey, mut state: NsState, push: bool) {
        self.prune_releases(ns, &state);
        let rev = self.next_id();
        state.revision = rev;
        if push {
            state.pushed = rev;
            self.pushed.push(ns.clone());
        }
        self.put(Rec::NsState {
            ns: ns.clone(),
            state,
        });
    }

    fn check_review(&mut self, ns: &NsKey, def: &NamespaceDef) -> Result<()> {
        self.target = ns.path();
        let editors = self.st.ns_states.get(ns).map(|s| &s.editors);
        review_gate(
            def.review,
            editors,
            &self.actor.name,
            &format!("namespace {:?}", def.name),
        )
    }

    /// Publishes the draft of a namespace instance.
    pub fn publish(&mut self, ns: &NsKey, req: &PublishRequest) -> Result<PublishOutcome> {
        let def = self.st.check_ns(ns)?.clone();
        self.need(ns, Level::Publish)?;
        self.check_review(ns, &def)?;
        let items = self.st.draft(ns);
        let mut state = self.st.ns_states.get(ns).cloned().unwrap_or_default();
        let target = ns.path();
        if let PublishMode::Gray { rule } = &req.mode
            && rule.is_empty()
        {
            return Err(ControlError::bad(
                "rule",
                "a gray release needs labels, ips or instances",
            ));
        }
        if let PublishMode::Rolling { batch, health, .. } = &req.mode {
            batch.validate()?;
            if let Some(h) = health {
                h.validate()?;
            }
            if self.st.rollouts.values().any(|r| {
                &r.ns == ns
                    && matches!(
                        r.status,
                        RolloutStatus::Running | RolloutStatus::Paused | RolloutStatus::Stopped
                    )
            }) {
                return Err(ControlError::new(
                    ErrorCode::AlreadyExists,
                    format!("{} already has a rollout in progress", ns.path()),
                )
                .with_field("mode"));
            }
        }
        if let Some(cur) = state.current
            && diff(&self.st.current_items(ns), &items) == Diff::default()
        {
            return Err(ControlError::bad(
                "draft",
                format!("nothing to publish: the draft equals the current release {cur}"),
            ));
        }
        match &req.mode {
            PublishMode::Immediate | PublishMode::Natural => {
                let rel = self.new_release(ns, items, &req.message, ReleaseKind::Normal);
                state.current = Some(rel.id);
                state.editors.clear();
                self.set_state(ns, state, req.mode == PublishMode::Immediate);
                self.audit("publish", &target, serde_json::json!({"release": rel.id, "mode": req.mode, "message": req.message}));
                Ok(PublishOutcome {
                    release: Some(rel.id),
                    scheduled: None,
                })
            }
            PublishMode::Scheduled { at_ms } => {
                let id = self.next_id();
                let s = Scheduled {
                    id,
                    ns: ns.clone(),
                    at_ms: *at_ms,
                    items,
                    author: self.actor.name.clone(),
                    message: req.message.clone(),
                };
                self.put(Rec::Scheduled(s));
                state.editors.clear();
                self.put(Rec::NsState {
                    ns: ns.clone(),
                    state,
                });
                self.audit(
                    "publish.schedule",
                    &target,
                    serde_json::json!({"scheduled": id, "at_ms": at_ms}),
                );
                Ok(PublishOutcome {
                    release: None,
                    scheduled: Some(id),
                })
            }
            PublishMode::Gray { rule } => {
                let rel = self.new_release(
                    ns,
                    items,
                    &req.message,
                    ReleaseKind::Gray { rule: rule.clone() },
                );
                state.grays.push(Gray {
                    release: rel.id,
                    rule: rule.clone(),
                });
                self.set_state(ns, state, true);
                self.audit(
                    "publish.gray",
                    &target,
                    serde_json::json!({"release": rel.id, "rule": rule}),
                );
                Ok(PublishOutcome {
                    release: Some(rel.id),
                    scheduled: None,
                })
            }
            PublishMode::Rolling {
                batch,
                interval_ms,
                health,
            } => {
                let rule = GrayRule::default();
                let rel = self.new_release(
                    ns,
                    items,
                    &req.message,
                    ReleaseKind::Gray { rule: rule.clone() },
                );
                let base = state.current;
                state.grays.push(Gray {
                    release: rel.id,
                    rule,
                });
                state.editors.clear();
                // No instance is selected yet: nobody needs waking until the first batch.
                self.set_state(ns, state, false);
                let r = Rollout {
                    release: rel.id,
                    ns: ns.clone(),
                    batch: batch.clone(),
                    interval_ms: *interval_ms,
                    status: RolloutStatus::Running,
                    reason: String::new(),
                    selected: Vec::new(),
                    next_ms: self.now,
                    base,
                    promoted: None,
                    author: self.actor.name.clone(),
                    waiting: Vec::new(),
                    health: health.clone(),
                };
                self.put(Rec::Rollout(r));
                self.audit(
                    "rollout.start",
                    &target,
                    serde_json::json!({"release": rel.id, "batch": batch, "interval_ms": interval_ms, "health": health}),
                );
                Ok(PublishOutcome {
                    release: Some(rel.id),
                    scheduled: None,
                })
            }
        }
    }

    fn rollout(&self, id: u64) -> Result<Rollout> {
        self.st.rollouts.get(&id).cloned().ok_or_else(|| {
            ControlError::not_found(format!("no rollout {id}")).with_field("rollout")
        })
    }

    /// One step of a running rollout (the service, as the system user, on every poll): `population` are the
    /// instances known for the namespace instance, `applied` those that reported the gray release as applied,
    /// `rejected` (instance, reason) those that reported it as rejected. Stops at once on a rejection;
    /// otherwise, when the next batch is due and every selected instance has applied the release (else it
    /// holds, listing them in `waiting`), adds a batch, or promotes once every known instance has had it for
    /// one interval.
    pub fn rollout_step(
        &mut self,
        id: u64,
        population: &[String],
        applied: &[String],
        rejected: &[(String, String)],
        health: &[(String, HealthWindow)],
    ) -> Result<RolloutStatus> {
        let mut r = self.rollout(id)?;
        if r.status != RolloutStatus::Running {
            return Ok(r.status);
        }
        let ns = r.ns.clone();
        let target = ns.path();
        let mut state = self.st.ns_states.get(&ns).cloned().unwrap_or_default();
        let Some(gi) = state.grays.iter().position(|g| g.release == id) else {
            // Promoted or abandoned by hand meanwhile.
            r.status = if state.current.is_some_and(|c| {
                self.st
                    .releases
                    .get(&c)
                    .is_some_and(|rel| rel.kind == ReleaseKind::Promote { gray: id })
            }) {
                RolloutStatus::Done
            } else {
                RolloutStatus::Aborted
            };
            r.reason = "the gray release was promoted or abandoned by hand".into();
            self.put(Rec::Rollout(r.clone()));
            return Ok(r.status);
        };
        let unhealthy = r.health.as_ref().and_then(|gate| {
            health
                .iter()
                .filter(|(i, _)| r.selected.contains(i))
                .find_map(|(i, w)| gate.breach(w).map(|why| (i, why)))
        });
        let stop = rejected
            .iter()
            .find(|(i, _)| r.selected.contains(i))
            .map(|(inst, why)| format!("instance {inst:?} rejected release {id}: {why}"))
            .or_else(|| {
                unhealthy.map(|(inst, why)| format!("instance {inst:?} with release {id}: {why}"))
            });
        if let Some(reason) = stop {
            r.status = RolloutStatus::Stopped;
            r.reason = reason;
            self.put(Rec::Rollout(r.clone()));
            self.audit(
                "rollout.stop",
                &target,
                serde_json::json!({"release": id, "reason": r.reason}),
            );
            return Ok(r.status);
        }
        if r.next_ms > self.now {
            return Ok(r.status);
        }
        // Health gate: every selected instance still reporting must have applied the release.
        let waiting: Vec<String> = r
            .selected
            .iter()
            .filter(|i| population.contains(i) && !applied.contains(i))
            .cloned()
            .collect();
        if waiting != r.waiting {
            r.waiting = waiting;
            self.put(Rec::Rollout(r.clone()));
        }
        if !r.waiting.is_empty() {
            return Ok(r.status);
        }
        let mut remaining: Vec<&String> = population
            .iter()
            .filter(|i| !r.selected.contains(i))
            .collect();
        remaining.sort();
        if remaining.is_empty() {
            if !r.selected.is_empty() {
                let promoted = self.promote(&ns, id, &format!("rollout of {id} complete"))?;
                r.promoted = Some(promoted);
                r.status = RolloutStatus::Done;
                self.put(Rec::Rollout(r.clone()));
                self.audit(
                    "rollout.done",
                    &target,
                    serde_json::json!({"release": id, "promoted": promoted}),
                );
                return Ok(r.status);
            }
            // No instance known yet: look again next interval.
            r.next_ms = self.now + r.interval_ms;
            self.put(Rec::Rollout(r.clone()));
            return Ok(r.status);
        }
        let n = r.batch.size(population.len());
        let batch: Vec<String> = remaining.into_iter().take(n).cloned().collect();
        r.selected.extend(batch.iter().cloned());
        state.grays[gi].rule.instances = r.selected.clone();
        self.set_state(&ns, state, true);
        r.next_ms = self.now + r.interval_ms;
        self.put(Rec::Rollout(r.clone()));
        self.audit(
            "rollout.batch",
            &target,
            serde_json::json!({"release": id, "added": batch, "selected": r.selected.len()}),
        );
        Ok(r.status)
    }

    /// Pauses, resumes, aborts or rolls back a rollout (publish level).
    pub fn rollout_action(
        &mut self,
        ns: &NsKey,
        id: u64,
        action: RolloutAction,
    ) -> Result<Rollout> {
        let def = self.st.check_ns(ns)?.clone();
        self.need(ns, Level::Publish)?;
        let mut r = self.rollout(id)?;
        if &r.ns != ns {
            return Err(
                ControlError::not_found(format!("no rollout {id} in {}", ns.path()))
                    .with_field("rollout"),
            );
        }
        use RolloutStatus as S;
        let invalid = |r: &Rollout| {
            ControlError::new(
                ErrorCode::VersionConflict,
                format!("rollout {id} is {:?}: cannot {action:?}", r.status),
            )
            .with_field("status")
        };
        let gray_active = self
            .st
            .ns_states
            .get(ns)
            .is_some_and(|s| s.grays.iter().any(|g| g.release == id));
        match (action, r.status) {
            (RolloutAction::Pause, S::Running) => r.status = S::Paused,
            (RolloutAction::Resume, S::Paused | S::Stopped) => {
                self.check_review(ns, &def)?;
                r.status = S::Running;
                r.reason.clear();
                r.next_ms = self.now;
            }
            (
                RolloutAction::Abort | RolloutAction::Rollback,
                S::Running | S::Paused | S::Stopped,
            ) => {
                if gray_active {
                    self.abandon(ns, id)?;
                }
                r.status = if action == RolloutAction::Abort {
                    S::Aborted
                } else {
                    S::RolledBack
                };
                r.reason = format!("{action:?} by {}", self.actor.name).to_lowercase();
            }
            (RolloutAction::Rollback, S::Done) => {
                let base = r.base.ok_or_else(|| {
                    ControlError::bad(
                        "rollout",
                        "nothing to roll back to: the namespace had no release before",
                    )
                })?;
                self.rollback(ns, base, &format!("roll back rollout {id}"))?;
                r.status = S::RolledBack;
                r.reason = format!("rolled back by {}", self.actor.name);
            }
            _ => return Err(invalid(&r)),
        }
        self.put(Rec::Rollout(r.clone()));
        self.audit(
            &format!("rollout.{}", format!("{action:?}").to_lowercase()),
            &ns.path(),
            serde_json::json!({"release": id, "status": r.status}),
        );
        Ok(r)
    }

    /// Applies a due scheduled publish (called by the service as the system user).
    pub fn run_scheduled(&mut self, id: u64) -> Result<u64> {
        let s = self
            .st
            .scheduled
            .get(&id)
            .ok_or_else(|| ControlError::not_found("no such scheduled publish"))?
            .clone();
        self.changes.push(Change::Delete {
            kind: "scheduled",
            key: format!("{id:020}"),
        });
        let mut state = self.st.ns_states.get(&s.ns).cloned().unwrap_or_default();
        let rel = Release {
            id: self.next_id(),
            ns: s.ns.clone(),
            items: s.items,
            author: s.author,
            message: s.message,
            created_ms: self.now,
            kind: ReleaseKind::Normal,
        };
        self.put(Rec::Release(rel.clone()));
        state.current = Some(rel.id);
        self.set_state(&s.ns, state, true);
        self.audit(
            "publish.scheduled",
            &s.ns.path(),
            serde_json::json!({"release": rel.id, "scheduled": id}),
        );
        Ok(rel.id)
    }

    fn gray_index(&self, ns: &NsKey, gray: u64) -> Result<(NsState, usize)> {
        let state = self.st.ns_states.get(ns).cloned().unwrap_or_default();
        let idx = state
            .grays
            .iter()
            .position(|g| g.release == gray)
            .ok_or_else(|| {
                ControlError::not_found(format!("no active gray release {gray} in {}", ns.path()))
                    .with_field("gray")
            })?;
        Ok((state, idx))
    }

    /// Promotes a gray release to everyone (a new main release with its items).
    pub fn promote(&mut self, ns: &NsKey, gray: u64, message: &str) -> Result<u64> {
        let def = self.st.check_ns(ns)?.clone();
        self.need(ns, Level::Publish)?;
        self.check_review(ns, &def)?;
        let (mut state, idx) = self.gray_index(ns, gray)?;
        state.grays.remove(idx);
        let items = self
            .st
            .releases
            .get(&gray)
            .map(|r| r.items.clone())
            .unwrap_or_default();
        let rel = self.new_release(ns, items, message, ReleaseKind::Promote { gray });
        state.current = Some(rel.id);
        self.set_state(ns, state, true);
        self.audit(
            "gray.promote",
            &ns.path(),
            serde_json::json!({"gray": gray, "release": rel.id}),
        );
        Ok(rel.id)
    }

    /// Abandons a gray release: its instances go back to the main release.
    pub fn abandon(&mut self, ns: &NsKey, gray: u64) -> Result<()> {
        self.st.check_ns(ns)?;
        self.need(ns, Level::Publish)?;
        let (mut state, idx) = self.gray_index(ns, gray)?;
        state.grays.remove(idx);
        self.set_state(ns, state, true);
        self.audit(
            "gray.abandon",
            &ns.path(),
            serde_json::json!({"gray": gray}),
        );
        Ok(())
    }

    /// Rolls back to an earlier release of the same namespace instance: a new release with its items, and the
    /// draft reset to them so the next publish does not bring the bad values back.
    pub fn rollback(&mut self, ns: &NsKey, to: u64, message: &str) -> Result<u64> {
        self.st.check_ns(ns)?;
        self.need(ns, Level::Publish)?;
        let target = self
            .st
            .releases
            .get(&to)
            .filter(|r| &r.ns == ns && !matches!(r.kind, ReleaseKind::Gray { .. }))
            .ok_or_else(|| {
                ControlError::not_found(format!("no release {to} of {}", ns.path()))
                    .with_field("release")
            })?
            .clone();
        let draft = self.st.draft(ns);
        for k in draft.keys().filter(|k| !target.items.contains_key(*k)) {
            self.changes.push(Change::Delete {
                kind: "item",
                key: format!("{}/{k}", ns.path()),
            });
        }
        for (k, item) in &target.items {
            let version = draft.get(k).map(|d| d.version + 1).unwrap_or(item.version);
            let item = Item {
                version,
                modified_by: self.actor.name.clone(),
                ..item.clone()
            };
            self.put(Rec::Item {
                ns: ns.clone(),
                item,
            });
        }
        let mut state = self.st.ns_states.get(ns).cloned().unwrap_or_default();
        let rel = self.new_release(
            ns,
            target.items.clone(),
            message,
            ReleaseKind::Rollback { to },
        );
        state.current = Some(rel.id);
        state.editors.clear();
        self.set_state(ns, state, true);
        self.audit(
            "rollback",
            &ns.path(),
            serde_json::json!({"to": to, "release": rel.id}),
        );
        Ok(rel.id)
    }

    /// Creates or updates a user (administrators).
    pub fn put_user(&mut self, mut user: User) -> Result<User> {
        self.require_admin()?;
        check_name("user", &user.name)?;
        // The password is set on its own (`set_password`); updating roles keeps it.
        user.password = self
            .st
            .users
            .get(&user.name)
            .and_then(|u| u.password.clone());
        self.put(Rec::User(user.clone()));
        self.audit(
            "user.put",
            &user.name,
            serde_json::json!({"roles": user.roles, "admin": user.admin}),
        );
        Ok(user)
    }

    /// Sets (or with None removes) a user's console password hash: administrators, or the user themself.
    pub fn set_password(&mut self, name: &str, hash: Option<String>) -> Result<()> {
        if !self.actor.admin && self.actor.name != name {
            return Err(ControlError::forbidden(format!(
                "user {:?} may not set the password of {name:?}",
                self.actor.name
            )));
        }
        let mut user = self.st.users.get(name).cloned().ok_or_else(|| {
            ControlError::not_found(format!("unknown user {name:?}")).with_field("user")
        })?;
        let removed = hash.is_none();
        user.password = hash;
        user.token = None;
        self.put(Rec::User(user));
        self.audit(
            "user.password",
            name,
            serde_json::json!({"removed": removed}),
        );
        Ok(())
    }

    /// Rewrites every record holding a secret item so the store re-seals it under the current key (after a
    /// key rotation; administrators). Returns how many records were rewritten.
    pub fn reseal(&mut self) -> Result<usize> {
        self.require_admin()?;
        let mut n = 0;
        for (ns, items) in &self.st.drafts {
            for item in items.values().filter(|i| i.secret) {
                self.changes.push(Change::Put(Rec::Item {
                    ns: ns.clone(),
                    item: item.clone(),
                }));
                n += 1;
            }
        }
        for r in self.st.releases.values() {
            if r.items.values().any(|i| i.secret) {
                self.changes.push(Change::Put(Rec::Release((**r).clone())));
                n += 1;
            }
        }
        for s in self.st.scheduled.values() {
            if s.items.values().any(|i| i.secret) {
                self.changes.push(Change::Put(Rec::Scheduled(s.clone())));
                n += 1;
            }
        }
        self.audit(
            "secrets.reseal",
            "secrets",
            serde_json::json!({"records": n}),
        );
        Ok(n)
    }

    /// Cancels a pending scheduled publish of a namespace instance (publish level).
    pub fn cancel_scheduled(&mut self, ns: &NsKey, id: u64) -> Result<()> {
        self.st.check_ns(ns)?;
        self.need(ns, Level::Publish)?;
        if self.st.scheduled.get(&id).is_none_or(|s| &s.ns != ns) {
            return Err(ControlError::not_found(format!(
                "no scheduled publish {id} in {}",
                ns.path()
            ))
            .with_field("scheduled"));
        }
        self.changes.push(Change::Delete {
            kind: "scheduled",
            key: format!("{id:020}"),
        });
        self.audit(
            "publish.cancel",
            &ns.path(),
            serde_json::json!({"scheduled": id}),
        );
        Ok(())
    }

    /// Registers a token (by its hash) for a user (administrators), valid for `ttl_ms` when given; it records
    /// the token it was minted with, so revoking that one revokes this one.
    pub fn add_token(
        &mut self,
        token: &str,
        user: &str,
        description: &str,
        ttl_ms: Option<u64>,
    ) -> Result<Token> {
        self.require_admin()?;
        if !self.st.users.contains_key(user) {
            return Err(
                ControlError::not_found(format!("unknown user {user:?}")).with_field("user")
            );
        }
        let t = Token {
            hash: crate::auth::hash_token(token),
            user: user.into(),
            description: description.into(),
            created_ms: self.now,
            expires_ms: ttl_ms.map(|t| self.now.saturating_add(t)),
            parent: self.actor.token.clone(),
            bootstrap: false,
        };
        self.put(Rec::Token(t.clone()));
        self.audit(
            "token.create",
            user,
            serde_json::json!({"id": t.id(), "description": description, "expires_ms": t.expires_ms}),
        );
        Ok(t)
    }

    /// Makes `token` the bootstrap administrator's token: the previous bootstrap tokens of `user`, and every
    /// token minted under them, are revoked.
    pub fn replace_bootstrap_token(&mut self, token: &str, user: &str) -> Result<()> {
        let old: Vec<String> = self
            .st
            .tokens
            .values()
            // Stores written before the flag existed: the bootstrap token is the admin's parentless
            // "bootstrap" token without a creation time.
            .filter(|t| {
                t.user == user
                    && (t.bootstrap
                        || (t.description == "bootstrap"
                            && t.created_ms == 0
                            && t.parent.is_none()))
            })
            .map(|t| t.hash.clone())
            .collect();
        for h in old {
            self.revoke_tree(&h, "bootstrap token replaced");
        }
        let mut t = self.add_token(token, user, "bootstrap", None)?;
        t.bootstrap = true;
        self.put(Rec::Token(t));
        Ok(())
    }

    fn revoke_tree(&mut self, root: &str, why: &str) -> usize {
        let mut todo = vec![root.to_string()];
        let mut n = 0;
        while let Some(h) = todo.pop() {
            if let Some(t) = self.st.tokens.get(&h) {
                self.changes.push(Change::Delete {
                    kind: "token",
                    key: h.clone(),
                });
                self.audit(
                    "token.revoke",
                    &t.user,
                    serde_json::json!({"id": t.id(), "reason": why}),
                );
                n += 1;
            }
            todo.extend(
                self.st
                    .tokens
                    .values()
                    .filter(|c| c.parent.as_deref() == Some(h.as_str()))
                    .map(|c| c.hash.clone()),
            );
        }
        n
    }

    /// Revokes a token by its id (administrators), with every token minted under it; returns how many.
    pub fn revoke_token(&mut self, id: &str) -> Result<usize> {
        self.require_admin()?;
        let hash = self
            .st
            .tokens
            .values()
            .find(|t| t.id() == id)
            .map(|t| t.hash.clone())
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown token {id:?}")).with_field("id")
            })?;
        Ok(self.revoke_tree(&hash, "revoked"))
    }

    /// Grants a level (administrators); level `none` without export removes the grant.
    pub fn put_grant(&mut self, g: Grant) -> Result<()> {
        self.require_admin()?;
        if !(g.subject.starts_with("user:") || g.subject.starts_with("role:")) {
            return Err(ControlError::bad(
                "subject",
                "subject must be user:NAME or role:NAME",
            ));
        }
        if g.app != "*" && !self.st.apps.contains_key(&g.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", g.app))
                    .with_field("app"),
            );
        }
        if g.level == Level::None && !g.export && !g.trace_ingest {
            self.changes.push(Change::Delete {
                kind: "grant",
                key: g.key(),
            });
        } else {
            self.put(Rec::Grant(g.clone()));
        }
        self.audit(
            "grant",
            &g.key(),
            serde_json::to_value(&g).unwrap_or_default(),
        );
        Ok(())
    }
}

/// The review rule shared by the configuration center's namespaces and the registry's rule sets: where
/// `required`, a change is published by someone who did not edit it (the four-eyes rule); `editors` are
/// the users who edited the pending change, `what` names it in the error.
pub(crate) fn review_gate(
    required: bool,
    editors: Option<&std::collections::BTreeSet<String>>,
    actor: &str,
    what: &str,
) -> Result<()> {
    if required && editors.is_some_and(|e| e.contains(actor)) {
        return Err(ControlError::new(
            ErrorCode::ReviewRequired,
            format!("{what} needs review: {actor:?} edited the draft and may not publish it"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::resolve;

    fn admin() -> User {
        User {
            name: "admin".into(),
            roles: vec![],
            admin: true,
            password: None,
            token: None,
        }
    }

    fn run<T>(st: &mut State, actor: &User, f: impl FnOnce(&mut Tx) -> Result<T>) -> Result<T> {
        let mut tx = Tx::new(st, actor);
        let out = f(&mut tx)?;
        let (changes, _, _) = tx.finish();
        for c in changes {
            st.apply(c);
        }
        Ok(out)
    }

    fn setup() -> State {
        let mut st = State::new(vec!["DEV".into(), "PRO".into()]);
        let a = admin();
        run(&mut st, &a, |tx| tx.create_app("shop", "")).unwrap();
        run(&mut st, &a, |tx| tx.create_app("pay", "")).unwrap();
        run(&mut st, &a, |tx| tx.create_cluster("shop", "PRO", "east")).unwrap();
        let def = |app: &str, name: &str, public: bool| NamespaceDef {
            app: app.into(),
            name: name.into(),
            public,
            review: false,
            description: String::new(),
        };
        run(&mut st, &a, |tx| {
            tx.create_namespace(def("shop", "app", false))
        })
        .unwrap();
        run(&mut st, &a, |tx| {
            tx.create_namespace(def("pay", "common", true))
        })
        .unwrap();
        st
    }

    fn set(st: &mut State, ns: &NsKey, key: &str, v: Value) {
        let version = st.draft(ns).get(key).map(|i| i.version);
        run(st, &admin(), |tx| {
            tx.put_item(
                ns,
                key,
                ItemInput {
                    value: v,
                    schema: None,
                    secret: None,
                    comment: String::new(),
                    version,
                },
            )
        })
        .unwrap();
    }

    fn publish(st: &mut State, ns: &NsKey, mode: PublishMode) -> PublishOutcome {
        run(st, &admin(), |tx| {
            tx.publish(
                ns,
                &PublishRequest {
                    message: "m".into(),
                    mode,
                },
            )
        })
        .unwrap()
    }

    fn get(st: &State, ns: &NsKey, inst: &Instance, key: &str) -> Option<Value> {
        resolve(st, ns, inst)
            .unwrap()
            .items
            .get(key)
            .map(|i| i.value.clone())
    }

    #[test]
    fn resolution_order_public_app_cluster() {
        let mut st = setup();
        let inst = Instance::default();
        let owner_default = NsKey::new("pay", "PRO", "default", "common");
        let owner_east = NsKey::new("pay", "PRO", "east", "common");
        let shop_default = NsKey::new("shop", "PRO", "default", "common");
        let shop_east = NsKey::new("shop", "PRO", "east", "common");
        run(&mut st, &admin(), |tx| {
            tx.create_cluster("pay", "PRO", "east")
        })
        .unwrap();
        for (ns, keys) in [
            (&owner_default, vec!["a", "b", "c", "d"]),
            (&owner_east, vec!["b", "c", "d"]),
            (&shop_default, vec!["c", "d"]),
            (&shop_east, vec!["d"]),
        ] {
            for k in keys {
                set(
                    &mut st,
                    ns,
                    k,
                    Value::String(format!("{}-{}", ns.app, ns.cluster)),
                );
            }
            publish(&mut st, ns, PublishMode::Immediate);
        }
        let want = [
            ("a", "pay-default"),
            ("b", "pay-east"),
            ("c", "shop-default"),
            ("d", "shop-east"),
        ];
        for (k, v) in want {
            assert_eq!(
                get(&st, &shop_east, &inst, k),
                Some(Value::String(v.into())),
                "{k}"
            );
        }
        assert_eq!(
            get(&st, &shop_default, &inst, "b"),
            Some(Value::String("pay-default".into()))
        );
        // Environments are isolated.
        let dev = NsKey::new("shop", "DEV", "default", "common");
        assert!(resolve(&st, &dev, &inst).unwrap().items.is_empty());
        // Unknown cluster and namespace are errors.
        assert_eq!(
            resolve(&st, &NsKey::new("shop", "DEV", "east", "common"), &inst)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(
            resolve(&st, &NsKey::new("pay", "DEV", "default", "app"), &inst)
                .unwrap_err()
                .field
                .as_deref(),
            Some("namespace")
        );
    }

    #[test]
    fn optimistic_versions() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        let input = |v: Option<u64>| ItemInput {
            value: Value::Integer(1),
            schema: None,
            secret: None,
            comment: String::new(),
            version: v,
        };
        run(&mut st, &admin(), |tx| tx.put_item(&ns, "k", input(None))).unwrap();
        let e = run(&mut st, &admin(), |tx| tx.put_item(&ns, "k", input(None))).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        let it = run(&mut st, &admin(), |tx| {
            tx.put_item(&ns, "k", input(Some(1)))
        })
        .unwrap();
        assert_eq!(it.version, 2);
        let e = run(&mut st, &admin(), |tx| {
            tx.put_item(&ns, "k", input(Some(1)))
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::VersionConflict);
        assert_eq!(st.draft(&ns)["k"].version, 2);
    }

    #[test]
    fn invalid_values_change_nothing() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        let seq = st.seq;
        let bad = ItemInput {
            value: Value::Document {
                format: crate::document::DocFormat::Json,
                text: "{\"port\": 0}".into(),
            },
            schema: Some(Some(
                serde_json::json!({"type":"object","properties":{"port":{"minimum":1}}}),
            )),
            secret: None,
            comment: String::new(),
            version: None,
        };
        let e = run(&mut st, &admin(), |tx| tx.put_item(&ns, "doc", bad)).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::SchemaViolation, Some("value/port"))
        );
        assert_eq!(st.seq, seq);
        assert!(st.draft(&ns).is_empty());
    }

    #[test]
    fn list_edits() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        set(&mut st, &ns, "l", Value::List(vec!["a".into()]));
        run(&mut st, &admin(), |tx| {
            tx.edit_list(&ns, "l", None, Some("b".into()), Some(1))
        })
        .unwrap();
        run(&mut st, &admin(), |tx| {
            tx.edit_list(&ns, "l", Some(0), Some("z".into()), None)
        })
        .unwrap();
        run(&mut st, &admin(), |tx| {
            tx.edit_list(&ns, "l", Some(1), None, None)
        })
        .unwrap();
        assert_eq!(st.draft(&ns)["l"].value, Value::List(vec!["z".into()]));
        assert_eq!(st.draft(&ns)["l"].version, 4);
        let e = run(&mut st, &admin(), |tx| {
            tx.edit_list(&ns, "l", Some(5), None, None)
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn gray_promote_abandon_rollback() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        set(&mut st, &ns, "k", Value::Integer(1));
        let r1 = publish(&mut st, &ns, PublishMode::Immediate)
            .release
            .unwrap();
        set(&mut st, &ns, "k", Value::Integer(2));
        let mut rule = GrayRule::default();
        rule.labels.insert("canary".into(), "yes".into());
        let g = publish(&mut st, &ns, PublishMode::Gray { rule })
            .release
            .unwrap();
        let plain = Instance::default();
        let mut canary = Instance::default();
        canary.labels.insert("canary".into(), "yes".into());
        assert_eq!(get(&st, &ns, &plain, "k"), Some(Value::Integer(1)));
        assert_eq!(get(&st, &ns, &canary, "k"), Some(Value::Integer(2)));
        run(&mut st, &admin(), |tx| tx.abandon(&ns, g)).unwrap();
        assert_eq!(get(&st, &ns, &canary, "k"), Some(Value::Integer(1)));
        let g2 = publish(
            &mut st,
            &ns,
            PublishMode::Gray {
                rule: GrayRule {
                    instances: vec!["i9".into()],
                    ..Default::default()
                },
            },
        )
        .release
        .unwrap();
        let promoted = run(&mut st, &admin(), |tx| tx.promote(&ns, g2, "go")).unwrap();
        assert_eq!(get(&st, &ns, &plain, "k"), Some(Value::Integer(2)));
        assert_eq!(st.ns_states[&ns].current, Some(promoted));
        assert!(st.ns_states[&ns].grays.is_empty());
        let back = run(&mut st, &admin(), |tx| tx.rollback(&ns, r1, "oops")).unwrap();
        assert!(back > promoted);
        assert_eq!(get(&st, &ns, &plain, "k"), Some(Value::Integer(1)));
        assert_eq!(st.draft(&ns)["k"].value, Value::Integer(1));
        let d = diff(&st.releases[&r1].items, &st.releases[&promoted].items);
        assert_eq!(d.changed.len(), 1);
        assert!(run(&mut st, &admin(), |tx| tx.rollback(&ns, g, "gray")).is_err());
    }

    #[test]
    fn natural_publish_does_not_push() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        set(&mut st, &ns, "k", Value::Integer(1));
        publish(&mut st, &ns, PublishMode::Immediate);
        let (v1, p1) = crate::resolve::versions(&st, &ns).unwrap();
        set(&mut st, &ns, "k", Value::Integer(2));
        publish(&mut st, &ns, PublishMode::Natural);
        let (v2, p2) = crate::resolve::versions(&st, &ns).unwrap();
        assert!(v2 > v1);
        assert_eq!(p2, p1);
    }

    #[test]
    fn review_and_permissions() {
        let mut st = setup();
        let def = NamespaceDef {
            app: "shop".into(),
            name: "secure".into(),
            public: false,
            review: true,
            description: String::new(),
        };
        run(&mut st, &admin(), |tx| tx.create_namespace(def)).unwrap();
        for (name, level) in [("ed", Level::Edit), ("pub", Level::Publish)] {
            run(&mut st, &admin(), |tx| {
                tx.put_user(User {
                    name: name.into(),
                    roles: vec![],
                    admin: false,
                    password: None,
                    token: None,
                })
            })
            .unwrap();
            let g = Grant {
                subject: format!("user:{name}"),
                app: "shop".into(),
                namespace: "*".into(),
                level,
                export: false,
                trace_ingest: false,
            };
            run(&mut st, &admin(), |tx| tx.put_grant(g)).unwrap();
        }
        let ns = NsKey::new("shop", "DEV", "default", "secure");
        let ed = st.users["ed"].clone();
        let pu = st.users["pub"].clone();
        let input = ItemInput {
            value: Value::Boolean(true),
            schema: None,
            secret: None,
            comment: String::new(),
            version: None,
        };
        run(&mut st, &ed, |tx| tx.put_item(&ns, "k", input.clone())).unwrap();
        let req = PublishRequest::default();
        assert_eq!(
            run(&mut st, &ed, |tx| tx.publish(&ns, &req))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        run(&mut st, &pu, |tx| tx.put_item(&ns, "k2", input.clone())).unwrap();
        assert_eq!(
            run(&mut st, &pu, |tx| tx.publish(&ns, &req))
                .unwrap_err()
                .code,
            ErrorCode::ReviewRequired
        );
        run(&mut st, &admin(), |tx| tx.publish(&ns, &req)).unwrap();
        assert!(st.ns_states[&ns].editors.is_empty());
        assert!(
            st.audit
                .iter()
                .any(|a| a.action == "publish" && a.actor == "admin")
        );
        assert!(
            st.audit
                .iter()
                .any(|a| a.action == "item.put" && a.actor == "ed")
        );
    }

    #[test]
    fn scheduled_publish() {
        let mut st = setup();
        let ns = NsKey::new("shop", "DEV", "default", "app");
        set(&mut st, &ns, "k", Value::Integer(7));
        let out = publish(&mut st, &ns, PublishMode::Scheduled { at_ms: 1 });
        let id = out.scheduled.unwrap();
        assert!(
            resolve(&st, &ns, &Instance::default())
                .unwrap()
                .items
                .is_empty()
        );
        run(&mut st, &admin(), |tx| tx.run_scheduled(id)).unwrap();
        assert_eq!(
            get(&st, &ns, &Instance::default(), "k"),
            Some(Value::Integer(7))
        );
        assert!(st.scheduled.is_empty());
    }
}
