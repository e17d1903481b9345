//! The collector's HTTP routes, merged into the center's router (same auth, error bodies, metrics):
//! `POST /v1/traces` (OTLP/HTTP ingest, protobuf or JSON) and the queries under `/v1/trace/`. See
//! `docs/tracing.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

use super::access::{Access, Ingest};
use super::model::{self, unhex};
use super::query::{self, Filter};
use crate::api::{Res, ok, qnum, user};
use crate::center::Center;
use crate::error::{ControlError, ErrorCode, Result};

type C = AxState<Arc<Center>>;
type Q = Query<HashMap<String, String>>;

/// The tracing routes (state: the center).
pub fn routes() -> Router<Arc<Center>> {
    Router::new()
        .route("/v1/traces", post(ingest))
        .route("/v1/trace/traces/{id}", get(get_trace))
        .route("/v1/trace/search", get(search))
        .route("/v1/trace/dependencies", get(dependencies))
        .route("/v1/trace/services/{service}/slowest", get(slowest))
        .route("/v1/trace/services/{service}/trend", get(trend))
        .route("/v1/trace/sql", get(sql))
        .route("/v1/trace/fleet/digests", get(fleet_digests))
        .route("/v1/trace/fleet/index-advice", get(fleet_index_advice))
        .route("/v1/trace/fleet/slow", get(fleet_slow))
        .route("/v1/trace/stats", get(stats))
        .route("/v1/process", get(process))
        .route("/v1/trace/processes", get(processes))
}

fn bad_otlp(c: &Center, e: impl std::fmt::Display) -> ControlError {
    c.trace.stats.requests_malformed.fetch_add(1, Relaxed);
    ControlError::new(ErrorCode::BadRequest, format!("invalid OTLP request: {e}"))
}

/// OTLP/HTTP export: `application/x-protobuf` (the default of the SDKs' `otlp-proto-http` exporters) or
/// `application/json`. Answers an empty `ExportTraceServiceResponse` in the request's encoding, 400 on a
/// malformed body, 503 (retryable) when the queue is full.
async fn ingest(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let may = if u.admin {
        Ingest::of(&u, [])
    } else {
        Ingest::of(
            &u,
            c.read(|st| st.grants.values().cloned().collect::<Vec<_>>())?,
        )
    };
    if !may.any() {
        return Err(ControlError::forbidden(format!(
            "user {:?} may not send spans: grant it trace_ingest on the applications its services are named after",
            u.name
        ))
        .into());
    }
    if let Some(enc) = h
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("identity")
    {
        return Err(ControlError::new(
            ErrorCode::UnsupportedFormat,
            format!("Content-Encoding {enc:?} is not supported: send OTLP uncompressed"),
        )
        .with_field("content-encoding")
        .into());
    }
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let json = ct.starts_with("application/json");
    let resources = if json {
        model::decode_json(&b).inspect_err(|_| {
            c.trace.stats.requests_malformed.fetch_add(1, Relaxed);
        })?
    } else if ct.starts_with("application/x-protobuf") || ct.starts_with("application/protobuf") {
        codec::otlp::decode_export(&b).map_err(|e| bad_otlp(&c, e))?
    } else {
        return Err(ControlError::new(
            ErrorCode::UnsupportedFormat,
            format!("Content-Type {ct:?}: use application/x-protobuf or application/json"),
        )
        .with_field("content-type")
        .into());
    };
    let mut resources = resources;
    let (rejected, services) = may.retain(&mut resources);
    let partial = (rejected > 0).then(|| {
        c.trace
            .stats
            .spans_rejected
            .fetch_add(rejected as u64, Relaxed);
        format!(
            "{rejected} spans rejected: user {:?} may not send spans for {} (a grant with trace_ingest on the application and namespace is needed)",
            u.name,
            services.join(", ")
        )
    });
    match c.trace.ingest(model::records(resources)) {
        // OTLP partial success: 200, with the count of spans left out and why.
        Ok(_) if json => ok(match &partial {
            Some(m) => {
                json!({"partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": m}})
            }
            None => json!({}),
        }),
        Ok(_) => Ok((
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            partial
                .map(|m| export_response(rejected as u64, &m))
                .unwrap_or_default(),
        )
            .into_response()),
        Err(e) => {
            let mut r = crate::api::ApiError(e).into_response();
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            Ok(r)
        }
    }
}

/// An `ExportTraceServiceResponse` carrying `partial_success` (field 1) with `rejected_spans` (1, int64)
/// and `error_message` (2, string).
fn export_response(rejected: u64, message: &str) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut inner = vec![0x08];
    varint(&mut inner, rejected);
    inner.push(0x12);
    varint(&mut inner, message.len() as u64);
    inner.extend_from_slice(message.as_bytes());
    let mut out = vec![0x0a];
    varint(&mut out, inner.len() as u64);
    out.extend_from_slice(&inner);
    out
}

/// Runs a query on the store off the async workers.
async fn on_store<T: Send + 'static>(
    c: &Arc<Center>,
    f: impl FnOnce(&super::store::Store) -> T + Send + 'static,
) -> Result<T> {
    let c = c.clone();
    tokio::task::spawn_blocking(move || c.trace.with_store(f))
        .await
        .map_err(|e| ControlError::new(ErrorCode::Internal, format!("trace query: {e}")))?
}

/// The spans the request's user may read (see [`super::access`]).
fn access(c: &Center, h: &HeaderMap) -> Result<Access> {
    let u = user(c, h)?;
    if u.admin {
        return Ok(Access::all(u));
    }
    let grants = c.read(|st| st.grants.values().cloned().collect::<Vec<_>>())?;
    Ok(Access::of(u, grants))
}

/// The start of the query window: `since_s` seconds back (default 3600), in ns since the epoch; and the
/// window's length in seconds.
fn window(q: &HashMap<String, String>) -> Result<(u64, f64)> {
    let secs = qnum(q, "since_s")?.unwrap_or(3600).max(1);
    let now_ns = crate::model::now_ms().saturating_mul(1_000_000);
    Ok((
        now_ns.saturating_sub(secs.saturating_mul(1_000_000_000)),
        secs as f64,
    ))
}

async fn get_trace(AxState(c): C, h: HeaderMap, Path(id): Path<String>) -> Res {
    let acc = access(&c, &h)?;
    let t = unhex::<16>(&id)
        .map(u128::from_be_bytes)
        .ok_or_else(|| ControlError::bad("id", "a trace id is 32 hex digits"))?;
    let found = on_store(&c, move |st| {
        st.trace(t)
            .map(|s| acc.visible(s))
            .filter(|s| !s.is_empty())
            .map(|s| query::tree(&s))
    })
    .await?;
    let (mut tree, text) =
        found.ok_or_else(|| ControlError::not_found(format!("no trace {id}")).with_field("id"))?;
    tree["text"] = json!(text);
    ok(tree)
}

async fn search(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let acc = access(&c, &h)?;
    let (since_ns, _) = window(&q)?;
    let error = match q.get("status").map(String::as_str) {
        None | Some("") | Some("any") => None,
        Some("error") => Some(true),
        Some("ok") => Some(false),
        Some(_) => return Err(ControlError::bad("status", "status is error, ok or any").into()),
    };
    let attrs = match q.get("attr") {
        None => Vec::new(),
        Some(a) => a
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                query::attr_filter(s)
                    .ok_or_else(|| ControlError::bad("attr", "attr is KEY=VALUE[,KEY=VALUE]"))
            })
            .collect::<Result<_>>()?,
    };
    let f = Filter {
        service: q.get("service").cloned().filter(|s| !s.is_empty()),
        operation: q.get("operation").cloned().filter(|s| !s.is_empty()),
        min_duration_ns: qnum(&q, "min_duration_ms")?
            .unwrap_or(0)
            .saturating_mul(1_000_000),
        error,
        attrs,
        since_ns,
        limit: qnum(&q, "limit")?.unwrap_or(20).min(1000) as usize,
    };
    let hits = on_store(&c, move |st| {
        let v = acc.filter(st.traces());
        query::search(v.iter().map(|(t, s)| (*t, &s[..])), &f)
    })
    .await?;
    ok(json!({ "traces": hits }))
}

async fn dependencies(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let acc = access(&c, &h)?;
    let (since_ns, secs) = window(&q)?;
    ok(on_store(&c, move |st| {
        let v = acc.filter(st.traces());
        query::dependencies(v.iter().map(|(t, s)| (*t, &s[..])), since_ns, secs)
    })
    .await?)
}

async fn slowest(AxState(c): C, h: HeaderMap, Path(service): Path<String>, Query(q): Q) -> Res {
    let acc = access(&c, &h)?;
    let (since_ns, _) = window(&q)?;
    let limit = qnum(&q, "limit")?.unwrap_or(10).min(1000) as usize;
    let s = service.clone();
    let ops = on_store(&c, move |st| {
        let v = acc.filter(st.traces());
        query::slowest(v.iter().map(|(t, s)| (*t, &s[..])), &s, since_ns, limit)
    })
    .await?;
    ok(json!({ "service": service, "operations": ops }))
}

async fn trend(AxState(c): C, h: HeaderMap, Path(service): Path<String>, Query(q): Q) -> Res {
    let acc = access(&c, &h)?;
    let hours = qnum(&q, "hours")?.unwrap_or(24).clamp(1, 24 * 31);
    let since_ns = crate::model::now_ms()
        .saturating_mul(1_000_000)
        .saturating_sub(hours.saturating_mul(3_600_000_000_000));
    let s = service.clone();
    let ops = on_store(&c, move |st| {
        let v = acc.filter(st.traces());
        query::trend(v.iter().map(|(t, s)| (*t, &s[..])), &s, since_ns)
    })
    .await?;
    ok(
        json!({ "service": service, "regression_factor": query::REGRESSION_FACTOR, "operations": ops }),
    )
}

async fn sql(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let acc = access(&c, &h)?;
    let (since_ns, _) = window(&q)?;
    let limit = qnum(&q, "limit")?.unwrap_or(20).min(1000) as usize;
    let d = on_store(&c, move |st| {
        let v = acc.filter(st.traces());
        query::sql_digests(v.iter().map(|(t, s)| (*t, &s[..])), since_ns, limit)
    })
    .await?;
    ok(json!({ "digests": d }))
}

/// Every live proxy's digest table merged (`super::digests`): `?n=` lines per proxy (1,000),
/// `?limit=` merged rows (50).
async fn fleet_digests(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let n = qnum(&q, "n")?.unwrap_or(1000) as usize;
    let limit = qnum(&q, "limit")?.unwrap_or(50).min(10_000) as usize;
    ok(super::digests::fleet_view(&c, &u, n, limit).await?)
}

/// Every live proxy's slow statements merged newest first, with trace ids (`super::slowlog`): `?n=`
/// entries per proxy (100), `?limit=` merged entries (50, at most 1,000).
async fn fleet_slow(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let n = qnum(&q, "n")?.unwrap_or(100) as usize;
    let limit = qnum(&q, "limit")?.unwrap_or(50) as usize;
    ok(super::slowlog::fleet_slow(&c, &u, n, limit).await?)
}

/// Every live proxy's `INDEX ADVICE` (`?n=` digests each, 10; at most 20).
async fn fleet_index_advice(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let n = qnum(&q, "n")?.unwrap_or(10) as usize;
    ok(super::digests::fleet_index_advice(&c, &u, n).await?)
}

/// This control node's CPU, memory, threads and open files.
async fn process(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    ok(crate::process::read())
}

/// Every Furrow process of the fleet: this control node and each live proxy (`super::processes`).
async fn processes(AxState(c): C, h: HeaderMap) -> Res {
    let u = user(&c, &h)?;
    ok(super::processes::fleet_processes(&c, &u).await?)
}

async fn stats(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    let t = &c.trace;
    let (counts, (traces, pending, pending_spans, segments, bytes)) =
        on_store(&c, |st| (st.counts.clone(), st.sizes())).await?;
    ok(json!({
        "requests": t.stats.requests.load(Relaxed),
        "spans_accepted": t.stats.spans_accepted.load(Relaxed),
        "spans_refused": t.stats.spans_refused.load(Relaxed),
        "spans_rejected": t.stats.spans_rejected.load(Relaxed),
        "requests_malformed": t.stats.requests_malformed.load(Relaxed),
        "queue_spans": t.queued(),
        "traces_stored": traces,
        "traces_pending": pending,
        "spans_pending": pending_spans,
        "segments": segments,
        "segment_bytes": bytes,
        "store": counts,
        "export": t.export.as_ref().map(|e| json!({
            "traces_sent": e.sent.load(Relaxed),
            "traces_dropped": e.dropped.load(Relaxed),
            "traces_failed": e.failed.load(Relaxed),
            "retries": e.retries.load(Relaxed),
        })),
    }))
}
