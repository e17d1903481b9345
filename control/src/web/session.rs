//! Console sessions: a browser logs in once with an API token and then carries an `HttpOnly`,
//! `SameSite=Strict` cookie instead of the token.
//!
//! Design:
//! - The session keeps the **token itself** (in memory only, never in the store) and the middleware
//!   [`authorize`] puts it back into the request as `Authorization: Bearer ...` before the API sees it. So
//!   every console call goes through exactly the same authentication and permission checks as `curl`, a
//!   revoked or expired token ends its sessions at their next request, and no handler knows sessions exist.
//! - **CSRF**: the cookie is `SameSite=Strict`, and every call that is not `GET`/`HEAD` made with a session
//!   must carry the session's CSRF token in `X-Furrow-CSRF` (a random value the page learns from the login
//!   answer or `GET /console/session`, which a page of another origin cannot read). A request that carries
//!   its own `Authorization` header is left alone: browsers never add one on their own, so it is not CSRF.
//! - Bounded: at most [`MAX_SESSIONS`] (the least recently used goes first), each ends after
//!   [`IDLE_TIMEOUT`] without use or [`MAX_LIFETIME`] after login.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::error::{ControlError, ErrorCode};

/// The session cookie's name.
pub const COOKIE: &str = "furrow_session";
/// The header carrying the CSRF token on mutating calls.
pub const CSRF_HEADER: &str = "x-furrow-csrf";
/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 10_000;
/// A session unused this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after login, used or not.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The API token it acts with.
    pub token: String,
    /// The value mutating calls must send in `X-Furrow-CSRF`.
    pub csrf: String,
    /// Whether the token was minted for this session by a password login (revoked at logout).
    pub minted: bool,
    created: Instant,
    used: Instant,
}

/// The sessions of one service (memory only: a restart logs everybody out).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    cap: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_cap(MAX_SESSIONS)
    }
}

impl Sessions {
    /// At most `cap` sessions (tests; the service uses [`MAX_SESSIONS`]).
    pub fn with_cap(cap: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// Opens a session acting with `token`; returns (session id, CSRF token).
    pub fn open(&self, token: &str, minted: bool) -> std::io::Result<(String, String)> {
        self.open_at(token, minted, Instant::now())
    }

    fn open_at(
        &self,
        token: &str,
        minted: bool,
        now: Instant,
    ) -> std::io::Result<(String, String)> {
        let id = crate::auth::new_token()?;
        let csrf = crate::auth::new_token()?;
        let mut map = lock(&self.map);
        map.retain(|_, s| alive(s, now));
        if map.len() >= self.cap
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                token: token.to_string(),
                csrf: csrf.clone(),
                minted,
                created: now,
                used: now,
            },
        );
        Ok((id, csrf))
    }

    /// The live session `id`, marked as used now.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = lock(&self.map);
        match map.get_mut(id) {
            Some(s) if alive(s, now) => {
                s.used = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id`; returns it.
    pub fn close(&self, id: &str) -> Option<Session> {
        lock(&self.map).remove(id)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.used) < IDLE_TIMEOUT
        && now.saturating_duration_since(s.created) < MAX_LIFETIME
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Equal without an early exit (tokens are compared in constant time).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session id a request carries, if any.
pub fn session_id(req_headers: &axum::http::HeaderMap) -> Option<String> {
    req_headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie(h, COOKIE).map(str::to_string))
}

/// Middleware: a request with a live session cookie and no `Authorization` header gets the session's token
/// as a bearer token; a mutating one must carry the CSRF token (else 403 `forbidden`, field `csrf`).
pub async fn authorize(
    State(sessions): State<Arc<Sessions>>,
    mut req: Request,
    next: Next,
) -> Response {
    // Login checks its own header (an old cookie must not block logging in again).
    if req.headers().contains_key(header::AUTHORIZATION) || req.uri().path() == "/console/login" {
        return next.run(req).await;
    }
    let Some(sid) = session_id(req.headers()) else {
        return next.run(req).await;
    };
    let Some(s) = sessions.get(&sid) else {
        // An expired session: the API answers 401 and the page goes back to its login form.
        return next.run(req).await;
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &s.csrf) {
            return ApiError(
                ControlError::new(
                    ErrorCode::Forbidden,
                    "missing or wrong X-Furrow-CSRF header for a session request",
                )
                .with_field("csrf"),
            )
            .into_response();
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", s.token)) {
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        assert_eq!(cookie("a=1; furrow_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("furrow_sessionx=1", COOKIE), None);
        assert_eq!(cookie("", COOKIE), None);
        assert_eq!(cookie("garbage;;=", COOKIE), None);
    }

    #[test]
    fn sessions_expire_when_idle_or_old() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, csrf) = s.open_at("tok", false, t0).unwrap();
        assert_ne!(id, csrf);
        assert_eq!(s.get_at(&id, t0).unwrap().token, "tok");
        // Used regularly it lives until its lifetime ends.
        let mut t = t0;
        while t.duration_since(t0) + IDLE_TIMEOUT / 2 < MAX_LIFETIME {
            t += IDLE_TIMEOUT / 2;
            assert!(s.get_at(&id, t).is_some());
        }
        assert!(s.get_at(&id, t0 + MAX_LIFETIME).is_none());
        assert!(s.is_empty(), "an expired session is dropped when seen");
        let (id2, _) = s.open_at("tok", false, t0).unwrap();
        assert!(s.get_at(&id2, t0 + IDLE_TIMEOUT).is_none());
        assert!(s.get_at("nope", t0).is_none());
    }

    #[test]
    fn logout_closes_and_the_map_is_bounded() {
        let s = Sessions::with_cap(4);
        let (id, _) = s.open("t", false).unwrap();
        s.close(&id);
        assert!(s.get(&id).is_none());
        let t0 = Instant::now();
        let (first, _) = s.open_at("t", false, t0).unwrap();
        for i in 1..=4 {
            s.open_at("t", false, t0 + Duration::from_millis(i))
                .unwrap();
        }
        assert_eq!(s.len(), 4);
        assert!(
            s.get_at(&first, t0).is_none(),
            "the least recently used went first"
        );
    }

    #[test]
    fn csrf_compare() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
