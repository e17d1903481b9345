//! The web console: static pages embedded in the binary, served by `furrow control` at `/`.
//!
//! Design (see `docs/console.md`):
//! - **No framework, no build step**: plain HTML, CSS and JavaScript modules under `web/assets/`, compiled
//!   into the binary with `include_str!` ([`ASSETS`]), so the console is exactly as old as the service.
//! - **The browser calls the same JSON API as every other client** (`/v1/...`); the console adds only a
//!   session ([`session`]: login with a token → `HttpOnly`, `SameSite=Strict` cookie + CSRF header) and a few
//!   read models the pages need that the API does not have yet ([`layers`]: where each value of a resolved
//!   config comes from; [`fleet`]: the proxies that report to the center and their admin ports; [`moves`]:
//!   their slot migrations and reshards). Permissions
//!   are the API's: a view or action the user may not take answers 403 and the page shows it.
//! - Each page is one JavaScript module (`assets/js/pages/*.js`) registered in `assets/js/app.js`; shared
//!   components (sortable/filterable/paged tables, diff view, SVG time-series and bar charts, confirmation
//!   dialog) live in `assets/js/ui.js`, every API call goes through `assets/js/api.js`.

pub mod fleet;
pub mod history;
pub mod moves;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::api::{ApiError, Res, body, ok, user};
use crate::center::Center;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, NsKey};

pub use session::Sessions;

/// The console's state: the center and the browser sessions.
pub struct Console {
    /// The service core.
    pub center: Arc<Center>,
    /// Logged-in browsers.
    pub sessions: Arc<Sessions>,
}

impl Console {
    /// A console over `center` with no session yet.
    pub fn new(center: Arc<Center>) -> Arc<Console> {
        Arc::new(Console {
            center,
            sessions: Arc::new(Sessions::default()),
        })
    }
}

type S = State<Arc<Console>>;

macro_rules! asset {
    ($path:literal) => {
        ($path, include_str!(concat!("assets/", $path)))
    };
}

/// Every file of the console, by path under `/console/assets/` (`index.html` is served at `/`).
pub const ASSETS: &[(&str, &str)] = &[
    asset!("index.html"),
    asset!("app.css"),
    asset!("js/app.js"),
    asset!("js/api.js"),
    asset!("js/ui.js"),
    asset!("js/governance.js"),
    asset!("js/pages/config.js"),
    asset!("js/pages/review.js"),
    asset!("js/pages/proxies.js"),
    asset!("js/pages/proxy.js"),
    asset!("js/pages/registry.js"),
    asset!("js/pages/jobs.js"),
    asset!("js/pages/releases.js"),
    asset!("js/pages/traces.js"),
    asset!("js/pages/access.js"),
    // --- online moves (Redis slots, MySQL reshard) ---
    asset!("js/pages/moves.js"),
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The console's routes, with their own state (merge into the API router).
pub fn routes<S2: Clone + Send + Sync + 'static>(console: Arc<Console>) -> Router<S2> {
    let proxy = "/console/api/proxies/{app}/{env}/{cluster}/{ns}/{id}";
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/console", get(|| async { asset("index.html") }))
        .route("/console/assets/{*path}", get(asset_route))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/session", get(current))
        .route(
            "/console/api/layers/{app}/{env}/{cluster}/{ns}",
            get(layers),
        )
        .route("/console/api/proxies", get(proxies))
        .route(
            "/console/api/history/{app}/{env}/{cluster}/{ns}/{id}",
            get(history),
        )
        .route(&format!("{proxy}/action"), post(proxy_action))
        .route(&format!("{proxy}/{{view}}"), get(proxy_view))
        // --- online moves (Redis slots, MySQL reshard): web::moves ---
        .route(
            &format!("{proxy}/moves/slots"),
            get(moves::slots).post(moves::slots_action),
        )
        .route(&format!("{proxy}/moves/slots/plan"), get(moves::slots_plan))
        .route(
            &format!("{proxy}/moves/reshard"),
            get(moves::reshard).post(moves::reshard_action),
        )
        .route(
            &format!("{proxy}/moves/reshard/plan"),
            get(moves::reshard_plan),
        )
        // --- end of online moves ---
        .with_state(console)
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _)| *p == path) {
        Some((p, text)) => (
            [
                (header::CONTENT_TYPE, content_type(p)),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                ),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *text,
        )
            .into_response(),
        None => ApiError(ControlError::not_found(format!("no console asset {path:?}"))).into_response(),
    }
}

async fn asset_route(Path(path): Path<String>) -> Response {
    asset(&path)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The description of the tokens minted for password logins.
pub const SESSION_TOKEN: &str = "console session";

/// A password login: checks the user's PBKDF2 hash (on the blocking pool) and mints a token for the session
/// that expires with it (revoked at logout), so the session acts through the API exactly like a token login.
/// Unknown users and wrong passwords get the same answer, after the same work.
async fn password_login(c: &Arc<Center>, name: &str, password: String) -> Result<String> {
    let stored = c.read(|st| st.users.get(name).and_then(|u| u.password.clone()))?;
    let ok = tokio::task::spawn_blocking(move || {
        // Equal work for an unknown user: verify against a fixed hash that matches nothing.
        let against = stored.unwrap_or_else(|| {
            "pbkdf2-sha256$200000$00000000000000000000000000000000$00".to_string()
        });
        crate::auth::verify_password(&password, &against)
    })
    .await
    .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?;
    if !ok {
        return Err(ControlError::new(
            ErrorCode::Unauthorized,
            "unknown user or wrong password",
        ));
    }
    let token = crate::auth::new_token()
        .map_err(|e| ControlError::new(ErrorCode::Internal, format!("token: {e}")))?;
    // Session tokens whose session ended without a logout are removed on the next password login.
    let now = crate::model::now_ms();
    let stale: Vec<String> = c.read(|st| {
        st.tokens
            .values()
            .filter(|t| t.description == SESSION_TOKEN && t.expired(now))
            .take(100)
            .map(|t| t.id().to_string())
            .collect()
    })?;
    let (tok, user) = (token.clone(), name.to_string());
    let ttl = session::MAX_LIFETIME.as_millis() as u64;
    c.write(crate::center::system_user(), move |tx| {
        for id in &stale {
            let _ = tx.revoke_token(id);
        }
        tx.add_token(&tok, &user, SESSION_TOKEN, Some(ttl))
    })
    .await?;
    Ok(token)
}

fn cookie(value: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        session::COOKIE
    ))
    .ok()
}

/// `POST /console/login {"token"}` → `{user, csrf}` and the session cookie. The `X-Furrow-CSRF` header must
/// be present (any value): a custom header cannot be sent by another site's form.
async fn login(State(con): S, h: HeaderMap, b: Bytes) -> Res {
    if !h.contains_key(session::CSRF_HEADER) {
        return Err(
            ControlError::forbidden("login needs the X-Furrow-CSRF header")
                .with_field("csrf")
                .into(),
        );
    }
    let req: Login = body(&b)?;
    let (token, minted) = match (req.token, req.user, req.password) {
        (Some(t), None, None) => (t.trim().to_string(), false),
        (None, Some(u), Some(p)) => (password_login(&con.center, u.trim(), p).await?, true),
        _ => {
            return Err(ControlError::bad(
                "token",
                "log in with {\"token\"} or with {\"user\", \"password\"}",
            )
            .into());
        }
    };
    let u = con.center.authenticate(Some(&token))?;
    let (sid, csrf) = con
        .sessions
        .open(&token, minted)
        .map_err(|e| ControlError::new(ErrorCode::Internal, format!("session id: {e}")))?;
    let mut resp = axum::Json(json!({"user": u, "csrf": csrf})).into_response();
    if let Some(c) = cookie(&sid, session::MAX_LIFETIME.as_secs()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `POST /console/logout`: ends the session (the CSRF check ran in the middleware) and clears the cookie.
async fn logout(State(con): S, h: HeaderMap) -> Res {
    if let Some(s) = session::session_id(&h).and_then(|sid| con.sessions.close(&sid))
        && s.minted
    {
        // The token minted for a password login dies with its session.
        let id = crate::auth::hash_token(&s.token)[..16].to_string();
        let revoked = con
            .center
            .write(crate::center::system_user(), move |tx| tx.revoke_token(&id))
            .await;
        if let Err(e) = revoked {
            tracing::warn!(error = %e, "console logout: revoking the session token");
        }
    }
    let mut resp = axum::Json(json!({"ok": true})).into_response();
    if let Some(c) = cookie("", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `GET /console/session` → `{user, csrf}` of the cookie's session (a reloaded page learns its CSRF token).
async fn current(State(con): S, h: HeaderMap) -> Res {
    let s = session::session_id(&h)
        .and_then(|sid| con.sessions.get(&sid))
        .ok_or_else(|| ControlError::new(ErrorCode::Unauthorized, "no session"))?;
    let u = con.center.authenticate(Some(&s.token))?;
    ok(json!({"user": u, "csrf": s.csrf}))
}

/// `GET /console/api/layers/{app}/{env}/{cluster}/{ns}`: the layers of the namespace instance (lowest
/// priority first, with the main-line release each contributes) and, per key of the merged result, the
/// layer it comes from and the layers whose value it overrides. Needs `masked_read`; values are masked as in
/// the rest of the API.
async fn layers(
    State(con): S,
    h: HeaderMap,
    Path((app, env, cluster, ns)): Path<(String, String, String, String)>,
) -> Res {
    let c = &con.center;
    let u = user(c, &h)?;
    let key = NsKey::new(&app, &env, &cluster, &ns);
    let out = c.read(|st| -> Result<Json> {
        st.check_ns(&key)?;
        let level = st.require(&u, &key, Level::MaskedRead)?;
        let main = crate::model::Instance::default();
        let mut layers = Vec::new();
        let mut items = serde_json::Map::new();
        for (i, layer) in crate::resolve::layers(st, &key)?.into_iter().enumerate() {
            let rel = crate::resolve::release_for(st, &layer, &main);
            layers.push(json!({
                "app": layer.app, "cluster": layer.cluster, "namespace": layer.namespace,
                "release": rel.map(|r| r.id),
            }));
            let Some(rel) = rel else { continue };
            for (k, item) in &rel.items {
                let shown = if level == Level::MaskedRead || item.secret {
                    item.masked()
                } else {
                    item.clone()
                };
                let overrides: Vec<Json> = items
                    .get(k)
                    .map(|prev: &Json| {
                        let mut v = prev["overrides"].as_array().cloned().unwrap_or_default();
                        v.push(prev["from"].clone());
                        v
                    })
                    .unwrap_or_default();
                items.insert(
                    k.clone(),
                    json!({"item": shown, "from": i, "overrides": overrides}),
                );
            }
        }
        Ok(json!({"layers": layers, "items": items}))
    })??;
    ok(out)
}

/// The live proxies the user may see (`masked_read` on the namespace each reports on).
async fn proxies(State(con): S, h: HeaderMap) -> Res {
    let c = &con.center;
    let u = user(c, &h)?;
    let reports = c.instances(None, None)?;
    let list = c.read(|st| {
        reports
            .iter()
            .filter(|r| st.level(&u, &r.app, &r.namespace) >= Level::MaskedRead)
            .filter_map(|r| fleet::proxy_of(st, r))
            .collect::<Vec<_>>()
    })?;
    ok(list)
}

type ProxyPath = (String, String, String, String, String);

/// `GET /console/api/history/{app}/{env}/{cluster}/{ns}/{id}?since_s=3600`: the health windows the instance
/// sent with its reports on that namespace instance (bounded, in memory: [`history`]), oldest first, with
/// requests and errors per second of each window and its listeners' latency quantiles. Counts only, so
/// `masked_read` suffices.
async fn history(
    State(con): S,
    h: HeaderMap,
    Path(p): Path<ProxyPath>,
    Query(q): Query<HashMap<String, String>>,
) -> Res {
    let c = &con.center;
    let u = user(c, &h)?;
    let since_s = crate::api::qnum(&q, "since_s")?.unwrap_or(3600);
    let key = NsKey::new(&p.0, &p.1, &p.2, &p.3);
    c.read(|st| {
        st.check_ns(&key)?;
        st.require(&u, &key, Level::MaskedRead).map(|_| ())
    })??;
    let since_ms = crate::model::now_ms().saturating_sub(since_s.saturating_mul(1000));
    let points: Vec<Json> = c
        .history
        .series(&key.path(), &p.4, since_ms)
        .into_iter()
        .map(|x| {
            let secs = (x.window_ms.max(1) as f64) / 1000.0;
            json!({"at_ms": x.at_ms, "requests": x.requests, "errors": x.errors, "window_ms": x.window_ms,
                   "requests_per_s": x.requests as f64 / secs, "errors_per_s": x.errors as f64 / secs,
                   "latency": x.latency})
        })
        .collect();
    ok(
        json!({"instance": p.4, "namespace": key.path(), "points": points,
              "max_points": history::MAX_POINTS}),
    )
}

/// The proxy reporting as `id` on that namespace instance, after checking `need` on the namespace.
fn find_proxy(con: &Console, h: &HeaderMap, p: &ProxyPath, need: Level) -> Result<fleet::Proxy> {
    let c = &con.center;
    let u = user(c, h)?;
    let key = NsKey::new(&p.0, &p.1, &p.2, &p.3);
    let reports = c.instances(None, Some(&key.path()))?;
    c.read(|st| {
        st.check_ns(&key)?;
        st.require(&u, &key, need)?;
        let r = reports
            .iter()
            .find(|r| r.instance.id == p.4)
            .ok_or_else(|| {
                ControlError::not_found(format!("no live proxy {:?} on {}", p.4, key.path()))
                    .with_field("id")
            })?;
        let proxy = fleet::proxy_of(st, r).ok_or_else(|| {
            ControlError::not_found(format!("instance {:?} runs no proxy config", p.4))
                .with_field("id")
        })?;
        if proxy.admin.is_none() {
            return Err(ControlError::not_found(
                proxy
                    .admin_error
                    .clone()
                    .unwrap_or_else(|| "no admin address".into()),
            )
            .with_field("admin"));
        }
        Ok(proxy)
    })?
}

/// `GET .../{view}?n=`: one admin view of a proxy as JSON (`read` on its namespace: slow logs show
/// statements).
async fn proxy_view(
    State(con): S,
    h: HeaderMap,
    Path((app, env, cluster, ns, id, view)): Path<(String, String, String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Res {
    let n = crate::api::qnum(&q, "n")?.unwrap_or(50) as usize;
    let cmd = fleet::view_command(&view, n).ok_or_else(|| {
        ControlError::not_found(format!("no proxy view {view:?}")).with_field("view")
    })?;
    let p = find_proxy(&con, &h, &(app, env, cluster, ns, id), Level::Read)?;
    let addr = p.admin.clone().unwrap_or_default();
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let text = fleet::admin_call(&addr, p.admin_password.as_deref(), &args).await?;
    let parsed = match view.as_str() {
        "info" => json!({"info": fleet::parse_info(&text)}),
        "config" => json!({}),
        _ => json!({"tables": fleet::parse_table(&text)}),
    };
    let mut out = json!({"view": view, "admin": addr, "text": text});
    if let (Some(o), Some(extra)) = (out.as_object_mut(), parsed.as_object()) {
        o.extend(extra.clone());
    }
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    action: String,
    #[serde(default)]
    backend: Option<String>,
}

/// `POST .../action {"action": "offline"|"online"|"reload", "backend"?}`: changes the data path, so it
/// needs `publish` on the proxy's namespace. Answers the proxy's reply.
async fn proxy_action(State(con): S, h: HeaderMap, Path(p): Path<ProxyPath>, b: Bytes) -> Res {
    let a: Action = body(&b)?;
    let target = p.4.clone();
    let proxy = find_proxy(&con, &h, &p, Level::Publish)?;
    let backend = || {
        a.backend
            .as_deref()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                ControlError::bad("backend", "which backend? (name, group/name or address)")
            })
    };
    let args: Vec<&str> = match a.action.as_str() {
        "offline" => vec!["BACKEND", "OFFLINE", backend()?],
        "online" => vec!["BACKEND", "ONLINE", backend()?],
        "reload" => vec!["CONFIG", "RELOAD"],
        other => {
            return Err(ControlError::bad(
                "action",
                format!("unknown action {other:?}: offline, online or reload"),
            )
            .into());
        }
    };
    let addr = proxy.admin.clone().unwrap_or_default();
    let reply = fleet::admin_call(&addr, proxy.admin_password.as_deref(), &args).await?;
    tracing::info!(proxy = %target, action = %a.action, backend = ?a.backend, "console proxy action");
    Ok((StatusCode::OK, axum::Json(json!({"reply": reply}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_the_pages_are_registered() {
        for (p, text) in ASSETS {
            assert_ne!(content_type(p), "application/octet-stream", "{p}");
            assert!(!text.is_empty(), "{p}");
        }
        let app = ASSETS
            .iter()
            .find(|(p, _)| *p == "js/app.js")
            .map(|(_, t)| *t)
            .unwrap_or_default();
        for (p, _) in ASSETS.iter().filter(|(p, _)| p.starts_with("js/pages/")) {
            let name = p.trim_start_matches("js/");
            assert!(
                app.contains(&format!("./{name}")),
                "{p} is not imported by app.js"
            );
        }
    }
}
