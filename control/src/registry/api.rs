//! The registry's HTTP routes, merged into the configuration center's router (same auth, error bodies,
//! body limit, metrics middleware). `SVC` = `/v1/registry/{env}/services/{service}`; see `docs/registry.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::model::{Discovery, select};
use super::ops::{InstanceInput, ServiceInput};
use super::rules::Rule;
use crate::api::{Res, body, ok, qnum, user};
use crate::center::Center;
use crate::error::{ControlError, Result};
use crate::model::{Level, User};
use crate::state::State;

type C = AxState<Arc<Center>>;
type SvcPath = Path<(String, String)>;
type InstPath = Path<(String, String, String)>;

/// The registry routes (state: the center).
pub fn routes() -> Router<Arc<Center>> {
    let svc = "/v1/registry/{env}/services/{service}";
    Router::new()
        .route("/v1/registry/{env}/services", get(list_services))
        .route(svc, get(get_service).put(put_service))
        .route(&format!("{svc}/live"), post(set_live))
        .route(&format!("{svc}/instances"), post(register))
        .route(
            &format!("{svc}/instances/{{id}}"),
            axum::routing::delete(deregister),
        )
        .route(
            &format!("{svc}/instances/{{id}}/beat"),
            put(beat).post(beat),
        )
        .route(&format!("{svc}/instances/{{id}}/online"), post(online))
        .route(&format!("{svc}/instances/{{id}}/offline"), post(offline))
        .route(&format!("{svc}/instances/{{id}}/weight"), put(weight))
        .route(&format!("{svc}/discover"), get(discover))
        .route(&format!("{svc}/rules"), get(get_rules).put(put_rules))
        .route(
            &format!("{svc}/rules/pending"),
            get(get_pending).delete(reject_pending),
        )
        .route(&format!("{svc}/rules/approve"), post(approve_rules))
        .route(&format!("{svc}/rules/check"), post(check_rules))
        .route(&format!("{svc}/rules/history"), get(rules_history))
        .route(&format!("{svc}/tokens"), get(token_state).post(tokens))
        .route(&format!("{svc}/calls"), get(get_calls).post(report_calls))
        .route("/v1/registry/watch", get(watch))
        .route("/v1/registry/stats", get(stats))
}

/// Requires `level` on a service for a read (no store write; a read refusal is not audited).
fn readable(st: &State, u: &User, env: &str, name: &str, level: Level) -> Result<()> {
    let svc = st.registry.service(env, name).ok_or_else(|| {
        ControlError::not_found(format!("unknown service {name:?} in {env}")).with_field("service")
    })?;
    let have = st.level(u, &svc.app, name);
    if have < level {
        return Err(ControlError::forbidden(format!(
            "user {:?} has {have:?} on service {name:?}, needs {level:?}",
            u.name
        )));
    }
    Ok(())
}

/// What discovery answers; a service that is not live answers 404 to discovery (the publishing gate).
fn discovery(st: &State, env: &str, name: &str) -> Result<Discovery> {
    let svc = st.registry.service(env, name).ok_or_else(|| {
        ControlError::not_found(format!("unknown service {name:?} in {env}")).with_field("service")
    })?;
    if !svc.live {
        return Err(ControlError::not_found(format!(
            "service {name:?} in {env} is not live (it needs an owner and docs, then POST .../live)"
        ))
        .with_field("live"));
    }
    let all: Vec<_> = st.registry.instances_of(env, name).collect();
    let (protected, instances) = select(svc, &all);
    let rules = st
        .registry
        .rules
        .get(&(env.to_string(), name.to_string()))
        .cloned();
    // Intervention rules (cluster switch, load share) shape the answer itself, so every watcher and
    // proxy follows them without knowing them.
    let instances = match &rules {
        Some(r) => r.intervene(instances),
        None => instances,
    };
    Ok(Discovery {
        env: env.into(),
        service: name.into(),
        rev: svc.rev,
        protected,
        instances,
        rules,
    })
}

async fn list_services(AxState(c): C, h: HeaderMap, Path(env): Path<String>) -> Res {
    let u = user(&c, &h)?;
    let list = c.read(|st| {
        st.registry
            .services
            .values()
            .filter(|s| s.env == env && st.level(&u, &s.app, &s.name) >= Level::MaskedRead)
            .map(|s| {
                let insts: Vec<_> = st.registry.instances_of(&s.env, &s.name).collect();
                let mut clusters: Vec<&str> =
                    insts.iter().map(|i| super::rules::cluster_of(i)).collect();
                clusters.sort_unstable();
                clusters.dedup();
                json!({
                    "service": s.masked(),
                    "instances": insts.len(),
                    "healthy": insts.iter().filter(|i| i.healthy).count(),
                    "enabled": insts.iter().filter(|i| i.enabled).count(),
                    "protected": select(s, &insts).0,
                    "clusters": clusters,
                    "level": st.level(&u, &s.app, &s.name),
                })
            })
            .collect::<Vec<_>>()
    })?;
    ok(list)
}

async fn get_service(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let v = c.read(|st| {
        readable(st, &u, &env, &name, Level::MaskedRead)?;
        let svc = st
            .registry
            .service(&env, &name)
            .map(super::model::Service::masked);
        let all: Vec<_> = st.registry.instances_of(&env, &name).collect();
        let protected = st
            .registry
            .service(&env, &name)
            .is_some_and(|s| select(s, &all).0);
        let level = st
            .registry
            .service(&env, &name)
            .map_or(Level::None, |s| st.level(&u, &s.app, &name));
        Ok::<_, ControlError>(
            json!({"service": svc, "instances": all, "protected": protected,
                                     "level": level}),
        )
    })??;
    // This node's lease deadlines (an instance whose lease another node holds is not listed).
    let mut v = v;
    v["node"] = json!(c.registry.node());
    v["leases"] = json!(c.registry.deadlines_of(&env, &name));
    ok(v)
}

async fn put_service(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let input: ServiceInput = body(&b)?;
    let svc = c
        .write(u, move |tx| tx.put_service(&env, &name, input.clone()))
        .await?;
    ok(svc.masked())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveBody {
    live: bool,
}

async fn set_live(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let LiveBody { live } = body(&b)?;
    let svc = c.write(u, move |tx| tx.set_live(&env, &name, live)).await?;
    ok(svc.masked())
}

async fn register(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let input: InstanceInput = body(&b)?;
    let node = c.registry.node().to_string();
    let (e, n) = (env.clone(), name.clone());
    let inst = c
        .write(u, move |tx| tx.register(&e, &n, input.clone(), &node))
        .await?;
    let ttl = c.read(|st| {
        st.registry
            .service(&env, &name)
            .map_or(15_000, |s| s.ttl_ms)
    })?;
    c.registry.extend((env, name, inst.id.clone()), ttl);
    ok(inst)
}

async fn deregister(AxState(c): C, h: HeaderMap, Path((env, name, id)): InstPath) -> Res {
    let u = user(&c, &h)?;
    let (e, n, i) = (env.clone(), name.clone(), id.clone());
    c.write(u, move |tx| tx.deregister(&e, &n, &i)).await?;
    c.registry.forget(&(env, name, id));
    ok(json!({"deregistered": true}))
}

async fn beat(AxState(c): C, h: HeaderMap, Path((env, name, id)): InstPath) -> Res {
    let u = user(&c, &h)?;
    super::lease::beat(&c, u, &env, &name, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn operate(
    c: Arc<Center>,
    u: User,
    (env, name, id): (String, String, String),
    enabled: Option<bool>,
    weight: Option<u32>,
) -> Res {
    let inst = c
        .write(u, move |tx| tx.operate(&env, &name, &id, enabled, weight))
        .await?;
    ok(inst)
}

async fn online(AxState(c): C, h: HeaderMap, Path(p): InstPath) -> Res {
    let u = user(&c, &h)?;
    operate(c, u, p, Some(true), None).await
}

async fn offline(AxState(c): C, h: HeaderMap, Path(p): InstPath) -> Res {
    let u = user(&c, &h)?;
    operate(c, u, p, Some(false), None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: u32,
}

async fn weight(AxState(c): C, h: HeaderMap, Path(p): InstPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let WeightBody { weight } = body(&b)?;
    operate(c, u, p, None, Some(weight)).await
}

async fn discover(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let d = c.read(|st| {
        readable(st, &u, &env, &name, Level::Read)?;
        discovery(st, &env, &name)
    })??;
    ok(d)
}

async fn get_rules(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let r = c.read(|st| {
        readable(st, &u, &env, &name, Level::MaskedRead)?;
        Ok::<_, ControlError>(st.registry.rules.get(&(env.clone(), name.clone())).cloned())
    })??;
    ok(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    rules: Vec<Rule>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    version: Option<u64>,
}

/// Publishes the rules: 200 with the rule set, or 202 with `{"state": "pending", ...}` when the
/// service's rule publishes need review.
async fn put_rules(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: RulesBody = body(&b)?;
    let out = c
        .write(u, move |tx| {
            tx.publish_rules(&env, &name, r.rules.clone(), &r.message, r.version)
        })
        .await?;
    match out {
        super::ops::RulesOutcome::Published(set) => ok(set),
        pending @ super::ops::RulesOutcome::Pending(_) => {
            Ok((StatusCode::ACCEPTED, axum::Json(pending)).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    rules: Vec<Rule>,
}

/// A dry run of a publish: validates the rules as `PUT SVC/rules` would (400 naming the field) and
/// changes nothing; → `{"valid": true, "rules": N}`. Any level that may read the service.
async fn check_rules(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    c.read(|st| readable(st, &u, &env, &name, Level::MaskedRead))??;
    let r: CheckBody = body(&b)?;
    super::rules::validate(&r.rules)?;
    ok(json!({"valid": true, "rules": r.rules.len()}))
}

/// The most rule versions `GET SVC/rules/history` answers.
const HISTORY_LIMIT: usize = 50;

/// The rule set versions published on a service, newest first (at most [`HISTORY_LIMIT`]), from the audit
/// log: `{version, author, approver, at_ms, message, rules}` per publish or approval.
async fn rules_history(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let target = format!("registry/{env}/{name}");
    let list = c.read(|st| {
        readable(st, &u, &env, &name, Level::MaskedRead)?;
        Ok::<_, ControlError>(
            st.audit
                .iter()
                .rev()
                .filter(|a| a.target == target)
                .filter_map(|a| {
                    let d = &a.detail;
                    let (author, approver) = match a.action.as_str() {
                        "registry.rules.publish" => (a.actor.clone(), String::new()),
                        "registry.rules.approve" => (
                            d["author"].as_str().unwrap_or_default().to_string(),
                            a.actor.clone(),
                        ),
                        _ => return None,
                    };
                    Some(
                        json!({"version": d["version"], "author": author, "approver": approver,
                                "at_ms": a.at_ms, "message": d["message"].as_str().unwrap_or_default(),
                                "rules": d["new"]}),
                    )
                })
                .take(HISTORY_LIMIT)
                .collect::<Vec<_>>(),
        )
    })??;
    ok(list)
}

/// The pending rule change (null when none).
async fn get_pending(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let p = c.read(|st| {
        readable(st, &u, &env, &name, Level::MaskedRead)?;
        Ok::<_, ControlError>(
            st.registry
                .pending
                .get(&(env.clone(), name.clone()))
                .cloned(),
        )
    })??;
    ok(p)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    version: Option<u64>,
}

/// Approves the pending rule change (another user than its editors): the new rule set.
async fn approve_rules(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: ApproveBody = if b.is_empty() {
        ApproveBody::default()
    } else {
        body(&b)?
    };
    let set = c
        .write(u, move |tx| tx.approve_rules(&env, &name, r.version))
        .await?;
    ok(set)
}

/// Drops the pending rule change: 204.
async fn reject_pending(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    c.write(u, move |tx| tx.reject_rules(&env, &name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The runtime database holding the call statistics (its tables created on first use), when the
/// jobs runtime is attached; None: this node's memory.
fn calls_db(c: &Center) -> Option<crate::error::Result<Arc<crate::jobs::Jobs>>> {
    let j = c.jobs.get()?.clone();
    if c.registry.calls_tables.get().is_none() {
        if let Err(e) = super::calls::SharedCalls::init(&j.db) {
            return Some(Err(e));
        }
        let _ = c.registry.calls_tables.set(());
    }
    Some(Ok(j))
}

/// Runs a blocking call-statistics step on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        crate::error::ControlError::new(crate::error::ErrorCode::Internal, e.to_string())
    })?
}

/// Per-version call statistics: a report from a client or a proxy (read level, like discovery) → 204.
/// Added to the runtime tables (shared by every node) when the jobs runtime is attached, else to this
/// node's memory.
async fn report_calls(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let report: super::calls::CallReport = body(&b)?;
    c.read(|st| readable(st, &u, &env, &name, Level::Read))??;
    let now = crate::model::now_ms();
    let center = c.clone();
    blocking(move || match calls_db(&center) {
        Some(db) => super::calls::SharedCalls::report(&db?.db, &env, &name, &report, now),
        None => center.registry.calls.report(&env, &name, &report, now),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Per-version call statistics of a service (`kept_in` says whether every node shares them).
async fn get_calls(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    c.read(|st| readable(st, &u, &env, &name, Level::MaskedRead))??;
    let now = crate::model::now_ms();
    let center = c.clone();
    ok(blocking(move || match calls_db(&center) {
        Some(db) => super::calls::SharedCalls::read(&db?.db, &env, &name, now),
        None => Ok(center.registry.calls.read(&env, &name, now)),
    })
    .await?)
}

/// Cluster-wide rate limits: a lease of tokens from this node's token service (`registry::tokens`).
async fn tokens(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let req: super::tokens::TokenRequest = body(&b)?;
    let rules = c.read(|st| {
        readable(st, &u, &env, &name, Level::Read)?;
        Ok::<_, ControlError>(
            st.registry
                .rules
                .get(&(env.clone(), name.clone()))
                .cloned()
                .unwrap_or_else(|| super::rules::RuleSet {
                    env: env.clone(),
                    service: name.clone(),
                    ..Default::default()
                }),
        )
    })??;
    ok(c.registry
        .tokens
        .grant(&rules, &req, crate::model::now_ms())?)
}

/// This node's budgets of the service's cluster-wide limits (`tokens::TokenState`, at most 1,000).
async fn token_state(AxState(c): C, h: HeaderMap, Path((env, name)): SvcPath) -> Res {
    let u = user(&c, &h)?;
    let rules = c.read(|st| {
        readable(st, &u, &env, &name, Level::MaskedRead)?;
        Ok::<_, ControlError>(
            st.registry
                .rules
                .get(&(env.clone(), name.clone()))
                .cloned()
                .unwrap_or_else(|| super::rules::RuleSet {
                    env: env.clone(),
                    service: name.clone(),
                    ..Default::default()
                }),
        )
    })??;
    ok(c.registry
        .tokens
        .state_of(&rules, crate::model::now_ms(), 1_000))
}

/// Long-poll: answers the discovery as soon as the service's revision exceeds `since` (pushed through the
/// center's wake-up channel for `(env, "@registry/SERVICE")`, no polling), else 304 at `timeout` (default
/// 30 s, max 300 s).
async fn watch(AxState(c): C, h: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Res {
    let u = user(&c, &h)?;
    let field = |n: &str| {
        q.get(n)
            .cloned()
            .ok_or_else(|| ControlError::bad(n, format!("{n} is required")))
    };
    let (env, name) = (field("env")?, field("service")?);
    let since = qnum(&q, "since")?.unwrap_or(0);
    let timeout = Duration::from_millis(qnum(&q, "timeout")?.unwrap_or(30_000).min(300_000));
    c.read(|st| readable(st, &u, &env, &name, Level::Read))??;
    c.check_not_draining()?;
    let mut rx = c.subscribe(&env, &super::channel(&name));
    let deadline = tokio::time::Instant::now() + timeout;
    c.metrics.watches_active.fetch_add(1, Ordering::Relaxed);
    let result = async {
        loop {
            let d = c.read(|st| discovery(st, &env, &name))??;
            if d.rev > since {
                return Ok::<_, ControlError>(Some(d));
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(None) },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }
    .await;
    c.metrics.watches_active.fetch_sub(1, Ordering::Relaxed);
    let result = result?;
    if result.is_none() {
        c.check_not_draining()?;
    }
    match result {
        Some(d) => {
            c.metrics.watch_changes.fetch_add(1, Ordering::Relaxed);
            ok(d)
        }
        None => Ok(StatusCode::NOT_MODIFIED.into_response()),
    }
}

/// The registry's lines of `/metrics` (Prometheus text).
pub fn metrics_text(c: &Center) -> Result<String> {
    let l = &c.registry;
    let (services, instances, healthy) = c.read(|st| {
        let all = st.registry.instances.values().flat_map(|m| m.values());
        let (n, h) = all.fold((0, 0), |(n, h), i| (n + 1, h + i.healthy as usize));
        (st.registry.services.len(), n, h)
    })?;
    Ok(format!(
        "# TYPE furrow_registry_services gauge\nfurrow_registry_services {services}\n\
         # TYPE furrow_registry_instances gauge\nfurrow_registry_instances{{state=\"healthy\"}} {healthy}\n\
         furrow_registry_instances{{state=\"unhealthy\"}} {}\n\
         # TYPE furrow_registry_leases gauge\nfurrow_registry_leases {}\n\
         # TYPE furrow_registry_beats_total counter\nfurrow_registry_beats_total{{stored=\"no\"}} {}\n\
         furrow_registry_beats_total{{stored=\"yes\"}} {}\n\
         # TYPE furrow_registry_leases_expired_total counter\nfurrow_registry_leases_expired_total {}\n\
         # TYPE furrow_registry_leases_taken_over_total counter\nfurrow_registry_leases_taken_over_total {}\n\
         # TYPE furrow_registry_checks_total counter\nfurrow_registry_checks_total{{result=\"pass\"}} {}\n\
         furrow_registry_checks_total{{result=\"fail\"}} {}\n\
         # TYPE furrow_registry_token_requests_total counter\nfurrow_registry_token_requests_total {}\n\
         # TYPE furrow_registry_tokens_total counter\nfurrow_registry_tokens_total{{result=\"granted\"}} {}\n\
         furrow_registry_tokens_total{{result=\"denied\"}} {}\n",
        instances - healthy,
        l.len(),
        l.beats.load(Ordering::Relaxed),
        l.beat_writes.load(Ordering::Relaxed),
        l.expired.load(Ordering::Relaxed),
        l.taken_over.load(Ordering::Relaxed),
        l.checks_passed.load(Ordering::Relaxed),
        l.checks_failed.load(Ordering::Relaxed),
        l.tokens.requests.load(Ordering::Relaxed),
        l.tokens.granted.load(Ordering::Relaxed),
        l.tokens.denied.load(Ordering::Relaxed),
    ))
}

/// Registry counters of this node (administrators need not be involved: any authenticated caller).
async fn stats(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    let l = &c.registry;
    let (services, instances, healthy) = c.read(|st| {
        let all = st.registry.instances.values().flat_map(|m| m.values());
        let (n, h) = all.fold((0, 0), |(n, h), i| (n + 1, h + i.healthy as usize));
        (st.registry.services.len(), n, h)
    })?;
    ok(json!({
        "node": l.node(),
        "leases": l.len(),
        "beats_in_memory": l.beats.load(Ordering::Relaxed),
        "beats_written": l.beat_writes.load(Ordering::Relaxed),
        "leases_expired": l.expired.load(Ordering::Relaxed),
        "leases_taken_over": l.taken_over.load(Ordering::Relaxed),
        "checks_passed": l.checks_passed.load(Ordering::Relaxed),
        "checks_failed": l.checks_failed.load(Ordering::Relaxed),
        "token_requests": l.tokens.requests.load(Ordering::Relaxed),
        "tokens_granted": l.tokens.granted.load(Ordering::Relaxed),
        "tokens_denied": l.tokens.denied.load(Ordering::Relaxed),
        "token_budgets": l.tokens.buckets(),
        "services": services,
        "instances": instances,
        "healthy": healthy,
    }))
}
