//! The HTTP/JSON API (axum) over the [`Center`]. Errors are `{"error": {"code", "message", "field"}}` with the
//! code's HTTP status. See `docs/control.md` for the routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};

use crate::center::{Center, Report};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Grant, Instance, Item, Level, NamespaceDef, NsKey, ReleaseKind, User, diff};
use crate::ops::{ItemInput, PublishRequest};
use crate::resolve::resolve_ids;

type C = AxState<Arc<Center>>;
type Q = Query<HashMap<String, String>>;

/// An error on its way to an HTTP client.
pub struct ApiError(pub ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.to_body())).into_response()
    }
}

pub(crate) type Res = std::result::Result<Response, ApiError>;

/// One item as echoed by a write: secret values are not sent back.
fn shown(item: Item) -> Item {
    if item.secret { item.masked() } else { item }
}

/// A diff with secret values masked.
fn shown_diff(mut d: crate::model::Diff) -> crate::model::Diff {
    for i in d.added.values_mut().chain(d.removed.values_mut()) {
        *i = shown(i.clone());
    }
    for (a, b) in d.changed.values_mut() {
        *a = shown(a.clone());
        *b = shown(b.clone());
    }
    d
}

pub(crate) fn ok(v: impl serde::Serialize) -> Res {
    Ok(axum::Json(v).into_response())
}

pub(crate) fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T> {
    let b: &[u8] = if b.is_empty() { b"{}" } else { b };
    serde_json::from_slice(b).map_err(|e| body_error(&e.to_string()))
}

/// Maps a serde message to a precise error: the field for missing/unknown fields, `unsupported_format` for an
/// unknown document format.
fn body_error(msg: &str) -> ControlError {
    let quoted = msg.split('`').nth(1).map(str::to_string);
    if msg.starts_with("unknown variant") && msg.contains("`properties`") {
        return ControlError::new(
            ErrorCode::UnsupportedFormat,
            format!(
                "unsupported document format {}: use json, yaml, xml, toml or properties",
                quoted.unwrap_or_default()
            ),
        )
        .with_field("value/format");
    }
    let err = ControlError::new(
        ErrorCode::BadRequest,
        format!("invalid request body: {msg}"),
    );
    match quoted {
        Some(f) if msg.starts_with("missing field") || msg.starts_with("unknown field") => {
            err.with_field(f)
        }
        _ => err,
    }
}

/// Refuses a body with fields other than `allowed` (for bodies serde cannot check: flattened or raw).
fn only_fields(raw: &Json, allowed: &[&str]) -> Result<()> {
    if let Some(obj) = raw.as_object()
        && let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(ControlError::bad(
            k,
            format!(
                "unknown field {k:?}, expected one of {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

pub(crate) fn user(c: &Center, h: &HeaderMap) -> Result<User> {
    let tok = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    c.authenticate(tok)
}

pub(crate) fn qnum(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ControlError::bad(name, format!("{name} must be an integer")))
        })
        .transpose()
}

fn instance(q: &HashMap<String, String>) -> Result<Instance> {
    let mut labels = BTreeMap::new();
    for pair in q
        .get("labels")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| ControlError::bad("labels", "labels are k:v,k:v"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(Instance {
        id: q.get("instance").cloned().unwrap_or_default(),
        ip: q.get("ip").cloned().unwrap_or_default(),
        labels,
    })
}

/// Items as shown by the management API: masked for `masked_read` callers, and secret items masked for
/// everyone (their clear value reaches only resolved configs read with `read`).
fn masked_if(level: Level, items: impl IntoIterator<Item = Item>) -> Vec<Item> {
    items
        .into_iter()
        .map(|i| {
            if level == Level::MaskedRead || i.secret {
                i.masked()
            } else {
                i
            }
        })
        .collect()
}

/// Builds the router.
pub fn router(center: Arc<Center>) -> Router {
    let console = crate::web::Console::new(center.clone());
    let ns = "/v1/apps/{app}/envs/{env}/clusters/{cluster}/namespaces/{ns}";
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/whoami", get(whoami))
        .route("/v1/envs", get(envs))
        .route("/v1/apps", get(list_apps).post(create_app))
        .route(
            "/v1/apps/{app}/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/v1/apps/{app}/envs/{env}/clusters",
            get(list_clusters).post(create_cluster),
        )
        .route("/v1/apps/{app}/envs/{env}/export", get(export))
        .route(&format!("{ns}/items"), get(list_items))
        .route(
            &format!("{ns}/items/{{key}}"),
            get(get_item).put(put_item).delete(delete_item),
        )
        .route(&format!("{ns}/items/{{key}}/list"), post(list_append))
        .route(
            &format!("{ns}/items/{{key}}/list/{{index}}"),
            put(list_set).delete(list_remove),
        )
        .route(&format!("{ns}/diff"), get(draft_diff))
        .route(&format!("{ns}/publish"), post(publish))
        .route(&format!("{ns}/releases"), get(list_releases))
        .route(&format!("{ns}/rollback"), post(rollback))
        .route(&format!("{ns}/grays"), get(list_grays))
        .route(&format!("{ns}/grays/{{gray}}/promote"), post(promote))
        .route(&format!("{ns}/grays/{{gray}}/abandon"), post(abandon))
        .route(&format!("{ns}/instances"), get(ns_instances))
        .route("/v1/releases/{id}", get(get_release))
        .route("/v1/releases/{id}/instances", get(release_instances))
        .route("/v1/diff", get(release_diff))
        .route("/v1/configs/{app}/{env}/{cluster}/{ns}", get(config))
        .route("/v1/watch", get(watch))
        .route("/v1/evaluate", post(evaluate))
        .route("/v1/reports", post(report))
        .route("/v1/usage", post(post_usage))
        .route(&format!("{ns}/usage"), get(ns_usage))
        .route(&format!("{ns}/usage/{{key}}"), get(key_usage))
        .route("/v1/audit", get(audit))
        .route("/v1/users", get(list_users).post(put_user))
        .route("/v1/users/{name}/password", put(set_password))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/secrets/reseal", post(reseal))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route(&format!("{ns}/scheduled"), get(list_scheduled))
        .route(&format!("{ns}/rollouts"), get(list_rollouts))
        .route(
            &format!("{ns}/rollouts/{{id}}/{{action}}"),
            post(rollout_action),
        )
        .route(
            &format!("{ns}/scheduled/{{id}}"),
            axum::routing::delete(cancel_scheduled),
        )
        .route("/v1/permissions", get(list_grants).put(put_grant))
        .merge(crate::registry::api::routes())
        .merge(crate::jobs::api::routes())
        .merge(crate::trace::api::routes())
        .merge(crate::release::api::routes())
        .merge(crate::web::routes(console.clone()))
        .fallback(|| async { ApiError(ControlError::not_found("no such route")) })
        // Console sessions: cookie → bearer token, CSRF checked (see web::session). Outside every route.
        .layer(axum::middleware::from_fn_with_state(
            console.sessions.clone(),
            crate::web::session::authorize,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(center.clone(), count))
        .with_state(center)
}

async fn count(
    AxState(c): C,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    c.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    let s = resp.status().as_u16();
    if (400..500).contains(&s) {
        c.metrics.errors_4xx.fetch_add(1, Ordering::Relaxed);
    } else if s >= 500 {
        c.metrics.errors_5xx.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// Every error answers JSON: axum's own rejections (a path parameter that does not parse, a body over the
/// limit, a wrong method) are plain text, so they are rewritten here with a code matching their status.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        503 => ErrorCode::StoreUnavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let msg = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    (status, axum::Json(ControlError::new(code, msg).to_body())).into_response()
}

async fn metrics(AxState(c): C) -> Res {
    let m = &c.metrics;
    let (releases, audit, scheduled) =
        c.read(|st| (st.releases.len(), st.audit.len(), st.scheduled.len()))?;
    let mut text = format!(
        "# TYPE furrow_control_http_requests_total counter\nfurrow_control_http_requests_total {}\n\
         # TYPE furrow_control_http_errors_total counter\nfurrow_control_http_errors_total{{class=\"4xx\"}} {}\n\
         furrow_control_http_errors_total{{class=\"5xx\"}} {}\n\
         # TYPE furrow_control_config_reads_total counter\nfurrow_control_config_reads_total {}\n\
         # TYPE furrow_control_watches_active gauge\nfurrow_control_watches_active {}\n\
         # TYPE furrow_control_watch_changes_total counter\nfurrow_control_watch_changes_total {}\n\
         # TYPE furrow_control_commits_total counter\nfurrow_control_commits_total {}\n\
         # TYPE furrow_control_releases gauge\nfurrow_control_releases {releases}\n\
         # TYPE furrow_control_audit_records gauge\nfurrow_control_audit_records {audit}\n\
         # TYPE furrow_control_scheduled_publishes gauge\nfurrow_control_scheduled_publishes {scheduled}\n\
         # TYPE furrow_control_instances_reported gauge\nfurrow_control_instances_reported {}\n",
        m.requests.load(Ordering::Relaxed),
        m.errors_4xx.load(Ordering::Relaxed),
        m.errors_5xx.load(Ordering::Relaxed),
        m.config_reads.load(Ordering::Relaxed),
        m.watches_active.load(Ordering::Relaxed),
        m.watch_changes.load(Ordering::Relaxed),
        m.commits.load(Ordering::Relaxed),
        c.report_count(),
    );
    text.push_str(&crate::registry::api::metrics_text(&c)?);
    if let Some(j) = c.jobs.get() {
        text.push_str(&j.metrics_text());
    }
    text.push_str(&crate::trace::metrics_text(&c.trace));
    text.push_str(&crate::process::metrics_text(&crate::process::read()));
    text.push_str(&crate::release::api::metrics_text(&c)?);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn whoami(AxState(c): C, h: HeaderMap) -> Res {
    ok(user(&c, &h)?)
}

async fn envs(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    ok(c.read(|st| st.envs.clone())?)
}

async fn list_apps(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    ok(c.read(|st| st.apps.values().cloned().collect::<Vec<_>>())?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_app(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let req: NewApp = body(&b)?;
    let app = c
        .write(u, move |tx| tx.create_app(&req.name, &req.description))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(app)).into_response())
}

async fn list_namespaces(AxState(c): C, h: HeaderMap, Path(app): Path<String>) -> Res {
    user(&c, &h)?;
    ok(c.read(|st| {
        st.namespaces
            .values()
            .filter(|d| d.app == app || d.public)
            .cloned()
            .collect::<Vec<NamespaceDef>>()
    })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    review: bool,
    #[serde(default)]
    description: String,
}

async fn create_namespace(AxState(c): C, h: HeaderMap, Path(app): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: NewNamespace = body(&b)?;
    let def = NamespaceDef {
        app,
        name: r.name,
        public: r.public,
        review: r.review,
        description: r.description,
    };
    let def = c
        .write(u, move |tx| tx.create_namespace(def.clone()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(def)).into_response())
}

async fn list_clusters(
    AxState(c): C,
    h: HeaderMap,
    Path((app, env)): Path<(String, String)>,
) -> Res {
    user(&c, &h)?;
    ok(c.read(|st| {
        let mut v = vec!["default".to_string()];
        v.extend(
            st.clusters
                .iter()
                .filter(|(a, e, _)| a == &app && e == &env)
                .map(|(_, _, n)| n.clone()),
        );
        v
    })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCluster {
    name: String,
}

async fn create_cluster(
    AxState(c): C,
    h: HeaderMap,
    Path((app, env)): Path<(String, String)>,
    b: Bytes,
) -> Res {
    let u = user(&c, &h)?;
    let r: NewCluster = body(&b)?;
    let cl = c
        .write(u, move |tx| tx.create_cluster(&app, &env, &r.name))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(cl)).into_response())
}

type NsPath = Path<(String, String, String, String)>;

fn nskey(p: (String, String, String, String)) -> NsKey {
    NsKey {
        app: p.0,
        env: p.1,
        cluster: p.2,
        namespace: p.3,
    }
}

/// Checks the namespace exists and the user has at least masked read on it; returns the level.
fn readable(c: &Center, u: &User, key: &NsKey) -> Result<Level> {
    c.read(|st| {
        st.check_ns(key)?;
        st.require(u, key, Level::MaskedRead)
    })?
}

async fn list_items(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    let level = readable(&c, &u, &key)?;
    ok(masked_if(
        level,
        c.read(|st| st.draft(&key).into_values().collect::<Vec<_>>())?,
    ))
}

type ItemPath = Path<(String, String, String, String, String)>;

async fn get_item(AxState(c): C, h: HeaderMap, Path(p): ItemPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let level = readable(&c, &u, &key)?;
    let item = c
        .read(|st| st.drafts.get(&key).and_then(|d| d.get(&p.4)).cloned())?
        .ok_or_else(|| {
            ControlError::not_found(format!("unknown key {:?}", p.4)).with_field("key")
        })?;
    ok(masked_if(level, [item]).pop())
}

async fn put_item(AxState(c): C, h: HeaderMap, Path(p): ItemPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let input: ItemInput = body(&b)?;
    ok(shown(
        c.write(u, move |tx| tx.put_item(&key, &p.4, input.clone()))
            .await?,
    ))
}

async fn delete_item(AxState(c): C, h: HeaderMap, Path(p): ItemPath, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let version = qnum(&q, "version")?;
    c.write(u, move |tx| tx.delete_item(&key, &p.4, version))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListEdit {
    value: Json,
    #[serde(default)]
    version: Option<u64>,
}

async fn list_append(AxState(c): C, h: HeaderMap, Path(p): ItemPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let e: ListEdit = body(&b)?;
    let item = c
        .write(u, move |tx| {
            tx.edit_list(&key, &p.4, None, Some(e.value.clone()), e.version)
        })
        .await?;
    ok(shown(item))
}

type ListPath = Path<(String, String, String, String, String, usize)>;

async fn list_set(AxState(c): C, h: HeaderMap, Path(p): ListPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let e: ListEdit = body(&b)?;
    let item = c
        .write(u, move |tx| {
            tx.edit_list(&key, &p.4, Some(p.5), Some(e.value.clone()), e.version)
        })
        .await?;
    ok(shown(item))
}

async fn list_remove(AxState(c): C, h: HeaderMap, Path(p): ListPath, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let version = qnum(&q, "version")?;
    ok(shown(
        c.write(u, move |tx| {
            tx.edit_list(&key, &p.4, Some(p.5), None, version)
        })
        .await?,
    ))
}

async fn draft_diff(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    let level = readable(&c, &u, &key)?;
    if level < Level::Read {
        return Err(ControlError::forbidden("diff needs read permission").into());
    }
    ok(shown_diff(c.read(|st| {
        diff(&st.current_items(&key), &st.draft(&key))
    })?))
}

async fn publish(AxState(c): C, h: HeaderMap, Path(p): NsPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    let mut raw: Json = body(&b)?;
    only_fields(
        &raw,
        &[
            "message",
            "mode",
            "at_ms",
            "rule",
            "batch",
            "interval_ms",
            "health",
        ],
    )?;
    if let Some(obj) = raw.as_object_mut() {
        obj.entry("mode")
            .or_insert_with(|| Json::String("immediate".into()));
    }
    let req: PublishRequest = serde_json::from_value(raw)
        .map_err(|e| ControlError::bad("mode", format!("invalid publish request: {e}")))?;
    let out = c.write(u, move |tx| tx.publish(&key, &req)).await?;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

fn summary(r: &crate::model::Release) -> Json {
    json!({"id": r.id, "ns": r.ns, "author": r.author, "message": r.message, "created_ms": r.created_ms,
           "kind": r.kind, "keys": r.items.len()})
}

async fn list_releases(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    ok(c.read(|st| {
        let current = st.ns_states.get(&key).and_then(|s| s.current);
        let list: Vec<Json> = st
            .releases
            .values()
            .rev()
            .filter(|r| r.ns == key)
            .map(|r| summary(r))
            .collect();
        json!({"current": current, "releases": list})
    })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackReq {
    release: u64,
    #[serde(default)]
    message: String,
}

async fn rollback(AxState(c): C, h: HeaderMap, Path(p): NsPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    let r: RollbackReq = body(&b)?;
    let id = c
        .write(u, move |tx| tx.rollback(&key, r.release, &r.message))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"release": id}))).into_response())
}

async fn list_grays(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    ok(c.read(|st| {
        st.ns_states
            .get(&key)
            .map(|s| s.grays.clone())
            .unwrap_or_default()
    })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageReq {
    #[serde(default)]
    message: String,
}

async fn promote(
    AxState(c): C,
    h: HeaderMap,
    Path(p): Path<(String, String, String, String, u64)>,
    b: Bytes,
) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let m: MessageReq = body(&b)?;
    let id = c
        .write(u, move |tx| tx.promote(&key, p.4, &m.message))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"release": id}))).into_response())
}

async fn abandon(
    AxState(c): C,
    h: HeaderMap,
    Path(p): Path<(String, String, String, String, u64)>,
) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    c.write(u, move |tx| tx.abandon(&key, p.4)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ns_instances(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    ok(c.instances(None, Some(&key.path()))?)
}

fn release_readable(c: &Center, u: &User, id: u64) -> Result<(Arc<crate::model::Release>, Level)> {
    let rel = c.read(|st| st.releases.get(&id).cloned())?.ok_or_else(|| {
        ControlError::not_found(format!("unknown release {id}")).with_field("release")
    })?;
    let level = c.read(|st| st.require(u, &rel.ns, Level::MaskedRead))??;
    Ok((rel, level))
}

async fn get_release(AxState(c): C, h: HeaderMap, Path(id): Path<u64>) -> Res {
    let u = user(&c, &h)?;
    let (rel, level) = release_readable(&c, &u, id)?;
    let mut v = summary(&rel);
    v["items"] =
        serde_json::to_value(masked_if(level, rel.items.values().cloned())).unwrap_or_default();
    ok(v)
}

async fn release_instances(AxState(c): C, h: HeaderMap, Path(id): Path<u64>) -> Res {
    let u = user(&c, &h)?;
    release_readable(&c, &u, id)?;
    ok(c.instances(Some(id), None)?)
}

async fn release_diff(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let from = qnum(&q, "from")?.ok_or_else(|| ControlError::bad("from", "from is required"))?;
    let to = qnum(&q, "to")?.ok_or_else(|| ControlError::bad("to", "to is required"))?;
    let (a, la) = release_readable(&c, &u, from)?;
    let (b, lb) = release_readable(&c, &u, to)?;
    if la < Level::Read || lb < Level::Read {
        return Err(ControlError::forbidden("diff needs read permission").into());
    }
    ok(shown_diff(diff(&a.items, &b.items)))
}

/// The body of a resolved config for `inst` (from the cache when the same releases were served before) and
/// its (version, pushed) numbers.
fn config_response(
    c: &Center,
    key: &NsKey,
    inst: &Instance,
    level: Level,
) -> Result<(u64, u64, Bytes)> {
    c.read(|st| {
        let (version, pushed, ids) = resolve_ids(st, key, inst)?;
        let masked = level == Level::MaskedRead;
        let body = c.cached_body((key.path(), version, ids.clone(), masked), || {
            let mut items: BTreeMap<&str, std::borrow::Cow<'_, Item>> = BTreeMap::new();
            for id in &ids {
                if let Some(rel) = st.releases.get(id) {
                    for (k, v) in &rel.items {
                        let v = if masked { std::borrow::Cow::Owned(v.masked()) } else { std::borrow::Cow::Borrowed(v) };
                        items.insert(k, v);
                    }
                }
            }
            let body = json!({"app": key.app, "env": key.env, "cluster": key.cluster, "namespace": key.namespace,
                   "version": version, "releases": ids, "items": items});
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))
        })?;
        Ok((version, pushed, body))
    })?
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn config(AxState(c): C, h: HeaderMap, Path(p): NsPath, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    let inst = instance(&q)?;
    let level = readable(&c, &u, &key)?;
    c.metrics.config_reads.fetch_add(1, Ordering::Relaxed);
    let (_, _, body) = config_response(&c, &key, &inst, level)?;
    Ok(json_bytes(body))
}

/// Ready for traffic: 200 `ready`, or 503 `draining` once the node is shutting down (load balancers and
/// Kubernetes take it out of rotation; clients move on by themselves).
async fn readyz(AxState(c): C) -> Res {
    c.check_not_draining()?;
    Ok("ready".into_response())
}

async fn watch(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let field = |n: &str| {
        q.get(n)
            .cloned()
            .ok_or_else(|| ControlError::bad(n, format!("{n} is required")))
    };
    let key = NsKey {
        app: field("app")?,
        env: field("env")?,
        cluster: q
            .get("cluster")
            .cloned()
            .unwrap_or_else(|| "default".into()),
        namespace: field("namespace")?,
    };
    let inst = instance(&q)?;
    let since = qnum(&q, "since")?.unwrap_or(0);
    let timeout = Duration::from_millis(qnum(&q, "timeout")?.unwrap_or(30_000).min(300_000));
    let level = readable(&c, &u, &key)?;
    c.touch(&inst.id, &key.path());
    c.check_not_draining()?;
    let mut rx = c.subscribe(&key.env, &key.namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    c.metrics.watches_active.fetch_add(1, Ordering::Relaxed);
    // One state read per wake-up gives both the versions and the body (from the per-namespace body cache:
    // serialised once per release set, shared by every watcher that resolves to it), rather than a read
    // for the versions and a second one, resolving the layers again, for the body.
    let result = async {
        loop {
            let (version, pushed, body) = config_response(&c, &key, &inst, level)?;
            if pushed > since {
                return Ok::<_, ControlError>(Some((version, body)));
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(None) },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }
    .await;
    c.metrics.watches_active.fetch_sub(1, Ordering::Relaxed);
    let (version, body) = match result? {
        Some(pushed) => pushed,
        // The timeout (or a closed channel): a natural publish may have moved the version meanwhile.
        None => {
            // Woken by this node's shutdown: the client moves to another node (which has every publish:
            // they share the store) and asks again with the same `since`.
            c.check_not_draining()?;
            let (version, _, body) = config_response(&c, &key, &inst, level)?;
            (version, body)
        }
    };
    if version <= since {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    c.metrics.watch_changes.fetch_add(1, Ordering::Relaxed);
    Ok(json_bytes(body))
}

async fn report(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let raw: Json = body(&b)?;
    only_fields(&raw, crate::center::REPORT_FIELDS)?;
    let r: Report = serde_json::from_value(raw).map_err(|e| body_error(&e.to_string()))?;
    if r.instance.id.len() > 256 || r.reason.len() > 4096 {
        return Err(ControlError::bad("id", "instance id (256) or reason (4096) too long").into());
    }
    // Only a client of that namespace may say which release it uses (or refuses).
    let key = NsKey::new(&r.app, &r.env, &r.cluster, &r.namespace);
    readable(&c, &u, &key)?;
    c.report(r)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateReq {
    app: String,
    env: String,
    #[serde(default = "default_cluster")]
    cluster: String,
    namespace: String,
    /// The keys to evaluate (absent: every key).
    #[serde(default)]
    keys: Option<Vec<String>>,
    /// The caller context rule conditions look at.
    #[serde(default)]
    context: BTreeMap<String, String>,
    /// The instance asking (selects gray releases), as in `/v1/configs`.
    #[serde(default)]
    instance: Instance,
}

fn default_cluster() -> String {
    crate::model::DEFAULT_CLUSTER.to_string()
}

/// Evaluates dynamic values for a context exactly as the client library does: the resolved config of the
/// namespace instance (layers and gray releases included), each rule table evaluated (first matching rule,
/// else the default), other values returned as JSON. Needs `read` (it returns values).
async fn evaluate(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: EvaluateReq = body(&b)?;
    let key = NsKey::new(&r.app, &r.env, &r.cluster, &r.namespace);
    if readable(&c, &u, &key)? < Level::Read {
        return Err(ControlError::forbidden("evaluating values needs read permission").into());
    }
    let resolved = c.read(|st| crate::resolve::resolve(st, &key, &r.instance))??;
    let keys: Vec<String> = match r.keys {
        Some(k) => k,
        None => resolved.items.keys().cloned().collect(),
    };
    let mut values = serde_json::Map::new();
    for k in keys {
        let item = resolved.items.get(&k).ok_or_else(|| {
            ControlError::not_found(format!("unknown key {k:?}")).with_field("keys")
        })?;
        let v = match &item.value {
            crate::model::Value::Rules(t) => {
                let (rule, v) = t.explain(&r.context);
                json!({"value": v, "rule": rule, "dynamic": true})
            }
            other => json!({"value": other.to_json()?, "dynamic": false}),
        };
        values.insert(k, v);
    }
    ok(json!({"version": resolved.version, "releases": resolved.releases, "values": values}))
}

async fn list_rollouts(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    ok(c.read(|st| {
        st.rollouts
            .values()
            .rev()
            .filter(|r| r.ns == key)
            .cloned()
            .collect::<Vec<_>>()
    })?)
}

async fn rollout_action(
    AxState(c): C,
    h: HeaderMap,
    Path(p): Path<(String, String, String, String, u64, String)>,
) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    let action = crate::ops::RolloutAction::parse(&p.5)?;
    ok(c.write(u, move |tx| tx.rollout_action(&key, p.4, action))
        .await?)
}

async fn reseal(AxState(c): C, h: HeaderMap) -> Res {
    let u = user(&c, &h)?;
    let n = c.write(u, |tx| tx.reseal()).await?;
    ok(json!({"records": n}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageReport {
    app: String,
    env: String,
    #[serde(default = "default_cluster")]
    cluster: String,
    namespace: String,
    id: String,
    reads: BTreeMap<String, u64>,
}

async fn post_usage(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: UsageReport = body(&b)?;
    if r.id.is_empty() || r.id.len() > 256 || r.reads.len() > 10_000 {
        return Err(ControlError::bad(
            "id",
            "a usage report needs an instance id (<= 256) and <= 10000 keys",
        )
        .into());
    }
    let key = NsKey::new(&r.app, &r.env, &r.cluster, &r.namespace);
    readable(&c, &u, &key)?;
    c.record_usage(&key.path(), &r.id, &r.reads)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Key usage of a namespace instance: per key the reads, the last read and how many instances read it, and
/// the keys of its resolved configuration nobody read within `unused_for_ms` (default 7 days).
async fn ns_usage(AxState(c): C, h: HeaderMap, Path(p): NsPath, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    let period = qnum(&q, "unused_for_ms")?.unwrap_or(7 * 24 * 3600 * 1000);
    let since = crate::model::now_ms().saturating_sub(period);
    let usage = c.usage_of(&key.path())?;
    let resolved = c.read(|st| crate::resolve::resolve(st, &key, &Instance::default()))??;
    let mut keys = serde_json::Map::new();
    let mut unused = Vec::new();
    for k in resolved.items.keys() {
        let insts = usage.get(k);
        let last = insts.and_then(|m| m.values().map(|e| e.0).max());
        let reads: u64 = insts.map(|m| m.values().map(|e| e.1).sum()).unwrap_or(0);
        if last.is_none_or(|l| l < since) {
            unused.push(k.clone());
        }
        keys.insert(
            k.clone(),
            json!({"reads": reads, "last_read_ms": last, "instances": insts.map_or(0, |m| m.len())}),
        );
    }
    ok(
        json!({"tracking_since_ms": c.started_ms, "unused_for_ms": period, "unused": unused, "keys": keys}),
    )
}

/// The instances that read a key of a namespace instance, most recent first.
async fn key_usage(AxState(c): C, h: HeaderMap, Path(p): ItemPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    readable(&c, &u, &key)?;
    let usage = c.usage_of(&key.path())?;
    let mut list: Vec<(String, u64, u64)> = usage
        .get(&p.4)
        .map(|m| {
            m.iter()
                .map(|(i, (last, n))| (i.clone(), *last, *n))
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ok(list
        .into_iter()
        .map(|(id, last, reads)| json!({"id": id, "last_read_ms": last, "reads": reads}))
        .collect::<Vec<_>>())
}

async fn list_scheduled(AxState(c): C, h: HeaderMap, Path(p): NsPath) -> Res {
    let u = user(&c, &h)?;
    let key = nskey(p);
    readable(&c, &u, &key)?;
    ok(c.read(|st| {
        st.scheduled
            .values()
            .filter(|s| s.ns == key)
            .map(|s| {
                json!({"id": s.id, "at_ms": s.at_ms, "author": s.author, "message": s.message,
                       "keys": s.items.len()})
            })
            .collect::<Vec<_>>()
    })?)
}

async fn cancel_scheduled(
    AxState(c): C,
    h: HeaderMap,
    Path(p): Path<(String, String, String, String, u64)>,
) -> Res {
    let u = user(&c, &h)?;
    let key = nskey((p.0, p.1, p.2, p.3));
    c.write(u, move |tx| tx.cancel_scheduled(&key, p.4)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn admin_only(u: &User) -> Result<()> {
    if u.admin {
        Ok(())
    } else {
        Err(ControlError::forbidden("administrators only"))
    }
}

async fn audit(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    admin_only(&u)?;
    let limit = qnum(&q, "limit")?.unwrap_or(100) as usize;
    let target = q.get("target").cloned().unwrap_or_default();
    ok(c.read(|st| {
        st.audit
            .iter()
            .rev()
            .filter(|a| a.target.starts_with(&target))
            .take(limit)
            .cloned()
            .collect::<Vec<_>>()
    })?)
}

async fn list_users(AxState(c): C, h: HeaderMap) -> Res {
    admin_only(&user(&c, &h)?)?;
    ok(c.read(|st| {
        st.users
            .values()
            .cloned()
            .map(User::shown)
            .collect::<Vec<_>>()
    })?)
}

async fn put_user(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let nu: User = body(&b)?;
    if nu.password.is_some() {
        return Err(ControlError::bad(
            "password",
            "set a password with PUT /v1/users/{name}/password {\"password\"}",
        )
        .into());
    }
    ok(c.write(u, move |tx| tx.put_user(nu.clone())).await?.shown())
}

/// `PUT /v1/users/{name}/password {"password"}`: administrators, or the user themself.
async fn set_password(AxState(c): C, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    // `{"password": "..."}` sets it, `{"password": null}` removes it (then only tokens log in); the field is
    // required, so an empty body never removes a password by accident.
    let raw: Json = body(&b)?;
    only_fields(&raw, &["password"])?;
    let password = match raw.get("password") {
        Some(Json::String(p)) => Some(p.clone()),
        Some(Json::Null) => None,
        Some(_) => {
            return Err(ControlError::bad("password", "password must be a string or null").into());
        }
        None => {
            return Err(
                ControlError::bad("password", "missing field password (null removes it)").into(),
            );
        }
    };
    let hash = match password {
        Some(p)
            if p.chars().count() < crate::auth::MIN_PASSWORD_LEN
                || p.len() > crate::auth::MAX_PASSWORD_LEN =>
        {
            return Err(ControlError::bad(
                "password",
                format!(
                    "a password has {} to {} characters",
                    crate::auth::MIN_PASSWORD_LEN,
                    crate::auth::MAX_PASSWORD_LEN
                ),
            )
            .into());
        }
        Some(p) => Some(
            tokio::task::spawn_blocking(move || crate::auth::hash_password(&p))
                .await
                .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?,
        ),
        None => None,
    };
    c.write(u, move |tx| tx.set_password(&name, hash.clone()))
        .await?;
    ok(json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: String,
    #[serde(default)]
    description: String,
    /// Lifetime in seconds (absent: no expiry).
    #[serde(default)]
    ttl_s: Option<u64>,
}

async fn list_tokens(AxState(c): C, h: HeaderMap) -> Res {
    admin_only(&user(&c, &h)?)?;
    let now = crate::model::now_ms();
    ok(c.read(|st| {
        let mut v: Vec<Json> = st
            .tokens
            .values()
            .map(|t| {
                json!({"id": t.id(), "user": t.user, "description": t.description,
                       "created_ms": t.created_ms, "expires_ms": t.expires_ms,
                       "expired": t.expired(now), "bootstrap": t.bootstrap,
                       "parent": t.parent.as_deref().map(|p| &p[..p.len().min(16)])})
            })
            .collect();
        v.sort_by(|a, b| {
            a["user"]
                .as_str()
                .cmp(&b["user"].as_str())
                .then(a["id"].as_str().cmp(&b["id"].as_str()))
        });
        v
    })?)
}

async fn revoke_token(AxState(c): C, h: HeaderMap, Path(id): Path<String>) -> Res {
    let u = user(&c, &h)?;
    let n = c.write(u, move |tx| tx.revoke_token(&id)).await?;
    ok(json!({"revoked": n}))
}

async fn create_token(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: NewToken = body(&b)?;
    let token = crate::auth::new_token()
        .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?;
    let ttl_ms = r.ttl_s.map(|s| s.saturating_mul(1000));
    let tok = token.clone();
    let t = c
        .write(u, move |tx| {
            tx.add_token(&tok, &r.user, &r.description, ttl_ms)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(
            json!({"token": token, "id": t.id(), "user": t.user, "expires_ms": t.expires_ms}),
        ),
    )
        .into_response())
}

async fn list_grants(AxState(c): C, h: HeaderMap) -> Res {
    admin_only(&user(&c, &h)?)?;
    ok(c.read(|st| st.grants.values().cloned().collect::<Vec<_>>())?)
}

async fn put_grant(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let g: Grant = body(&b)?;
    let g2 = g.clone();
    c.write(u, move |tx| tx.put_grant(g2.clone())).await?;
    ok(g)
}

async fn export(AxState(c): C, h: HeaderMap, Path((app, env)): Path<(String, String)>) -> Res {
    let u = user(&c, &h)?;
    let out = c.read(|st| {
        if !st.can_export(&u, &app) {
            return Err(ControlError::forbidden(format!(
                "{:?} may not export {app:?}",
                u.name
            )));
        }
        if !st.apps.contains_key(&app) {
            return Err(
                ControlError::not_found(format!("unknown application {app:?}")).with_field("app"),
            );
        }
        let mut out = BTreeMap::new();
        for (key, state) in st
            .ns_states
            .iter()
            .filter(|(k, _)| k.app == app && k.env == env)
        {
            let rel = state.current.and_then(|id| st.releases.get(&id));
            let items: BTreeMap<String, Item> = rel
                .map(|r| {
                    r.items
                        .iter()
                        .map(|(k, i)| (k.clone(), shown(i.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let kind = rel.map(|r| r.kind.clone()).unwrap_or(ReleaseKind::Normal);
            out.insert(
                format!("{}/{}", key.cluster, key.namespace),
                json!({"release": state.current, "kind": kind, "items": items}),
            );
        }
        Ok(out)
    })??;
    ok(out)
}
