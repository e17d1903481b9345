//! Prometheus text-format metrics over HTTP (`GET /metrics`), served on the admin thread, with the
//! health probes `GET /healthz` and `GET /readyz` (see `crate::health`).
//!
//! A deliberately tiny HTTP/1.x responder: one request per connection, bounded request size. It keeps
//! an HTTP stack out of the proxy binary's data-path dependencies.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::Control;

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(listener: std::net::TcpListener, control: Arc<Control>) {
    let Some(listener) = crate::proxy::into_tokio(listener, "metrics port") else {
        return;
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let (status, body) = match (method, path) {
                (_, p) if p == "/slots" || p.starts_with("/slots/") => {
                    slots(&control, &req, method, p, query).await
                }
                ("GET", "/metrics") => ("200 OK", render(&control)),
                ("GET", "/healthz") => ("200 OK", "ok\n".to_string()),
                ("GET", "/readyz") => match crate::health::readiness(&control).await {
                    (true, body) => ("200 OK", body),
                    (false, body) => ("503 Service Unavailable", body),
                },
                _ => (
                    "404 Not Found",
                    "not found: try GET /metrics, /healthz, /readyz or /slots\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// The slot-migration routes (`crate::slots::http_words`): the admin port's `SLOTS` commands over
/// HTTP. With `[proxy] admin_password` set, they need `Authorization: Bearer <admin_password>`.
async fn slots(
    control: &Arc<Control>,
    req: &[u8],
    method: &str,
    path: &str,
    query: &str,
) -> (&'static str, String) {
    let want = control.admin_password();
    if let Some(w) = want {
        let head = String::from_utf8_lossy(req);
        let given = head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| v.trim().strip_prefix("Bearer ").map(str::trim))
                .flatten()
        });
        if !given.is_some_and(|g| crate::admin::constant_time_eq(w.as_bytes(), g.as_bytes())) {
            return (
                "401 Unauthorized",
                "the slot routes need `Authorization: Bearer <admin_password>`\n".into(),
            );
        }
    }
    let words = match crate::slots::http_words(method, path, query) {
        Ok(w) => w,
        Err((status, msg)) => return (status, msg + "\n"),
    };
    // A plan samples the servers: blocking I/O, off the async workers.
    let c = control.clone();
    match tokio::task::spawn_blocking(move || crate::slots::run(&c, &words)).await {
        Ok(Ok(text)) => ("200 OK", text),
        Ok(Err(e)) => ("400 Bad Request", e + "\n"),
        Err(_) => (
            "500 Internal Server Error",
            "the slots command failed\n".into(),
        ),
    }
}

/// A per-listener series: name, Prometheus type, help text, and how to read it from the totals.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&runtime::stats::ListenerTotals) -> u64,
);

/// The metrics page.
pub fn render(control: &Control) -> String {
    let mut s = String::new();
    let snap = control.shared.snapshots.current();
    let _ = writeln!(
        s,
        "# HELP furrow_up 1 while the process runs.\n# TYPE furrow_up gauge\nfurrow_up 1"
    );
    let _ = writeln!(
        s,
        "# HELP furrow_uptime_seconds Seconds since start.\n# TYPE furrow_uptime_seconds gauge\nfurrow_uptime_seconds {}",
        control.started.elapsed().as_secs()
    );
    let _ = writeln!(
        s,
        "# HELP furrow_config_generation Config generation (1 at start, +1 per reload).\n# TYPE furrow_config_generation gauge\nfurrow_config_generation {}",
        snap.generation
    );
    if let Some(t) = control
        .shared
        .registries
        .get::<runtime::trace::TraceHub>()
        .started()
    {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(
            s,
            "# HELP furrow_trace_spans_total Spans of the data path by outcome (queued, sent, dropped: queue full, failed: the collector refused or was unreachable).\n# TYPE furrow_trace_spans_total counter"
        );
        for (k, v) in [
            ("queued", &t.stats.queued),
            ("sent", &t.stats.sent),
            ("dropped", &t.stats.dropped),
            ("failed", &t.stats.failed),
        ] {
            let _ = writeln!(
                s,
                "furrow_trace_spans_total{{outcome=\"{k}\"}} {}",
                v.load(Relaxed)
            );
        }
    }
    s.push_str(&control::process::metrics_text(&control::process::read()));
    let totals = control.shared.stats.totals();
    let series: [Series; 7] = [
        (
            "furrow_client_connections",
            "gauge",
            "Open client connections.",
            |t| t.connections,
        ),
        (
            "furrow_client_accepted_total",
            "counter",
            "Client connections accepted.",
            |t| t.accepted,
        ),
        (
            "furrow_client_rejected_total",
            "counter",
            "Client connections refused by limits or ACLs.",
            |t| t.rejected,
        ),
        (
            "furrow_requests_total",
            "counter",
            "Requests received.",
            |t| t.requests,
        ),
        (
            "furrow_request_errors_total",
            "counter",
            "Requests answered with an error.",
            |t| t.errors,
        ),
        (
            "furrow_client_bytes_in_total",
            "counter",
            "Bytes read from clients.",
            |t| t.bytes_in,
        ),
        (
            "furrow_client_bytes_out_total",
            "counter",
            "Bytes written to clients.",
            |t| t.bytes_out,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for t in &totals {
            let _ = writeln!(
                s,
                "{name}{{listener=\"{}\",kind=\"{}\"}} {}",
                t.name,
                t.kind,
                get(t)
            );
        }
    }
    listener_latency(&mut s, &totals);
    let backends = crate::admin::BackendRow::all(control);
    type BackendSeries = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::admin::BackendRow) -> Option<u64>,
    );
    let series: [BackendSeries; 6] = [
        (
            "furrow_backend_up",
            "gauge",
            "1 if the backend takes requests (not offline, not ejected).",
            |b| Some(u64::from(b.usable)),
        ),
        (
            "furrow_backend_requests_total",
            "counter",
            "Requests answered by the backend.",
            |b| Some(b.requests),
        ),
        (
            "furrow_backend_errors_total",
            "counter",
            "Backend failures (connect, timeout, broken connection).",
            |b| Some(b.errors),
        ),
        (
            "furrow_backend_latency_microseconds",
            "gauge",
            "Smoothed backend latency.",
            |b| Some(b.latency_us),
        ),
        (
            "furrow_backend_replication_lag_milliseconds",
            "gauge",
            "Replication lag of a replica, as last measured.",
            |b| b.lag_ms,
        ),
        (
            "furrow_backend_ratio_trips_total",
            "counter",
            "Times the governance ratio circuit breaker opened on the backend (tripped, or its half-open probe failed).",
            |b| Some(b.ratio_trips),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in &backends {
            if let Some(v) = get(b) {
                let _ = writeln!(
                    s,
                    "{name}{{group=\"{}\",backend=\"{}\",role=\"{}\"}} {v}",
                    b.group, b.name, b.role
                );
            }
        }
    }
    let redis = proxy_redis::admin_metrics(&control.shared);
    type CommandSeries = (
        &'static str,
        &'static str,
        fn(&proxy_redis::CommandStats) -> u64,
    );
    let command_series: [CommandSeries; 3] = [
        (
            "furrow_redis_command_calls_total",
            "Redis commands answered, by command.",
            |c| c.calls,
        ),
        (
            "furrow_redis_command_errors_total",
            "Redis error replies, by command.",
            |c| c.errors,
        ),
        (
            "furrow_redis_command_reply_bytes_total",
            "Reply bytes, by command.",
            |c| c.reply_bytes,
        ),
    ];
    for (name, help, get) in command_series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &redis {
            for c in &l.commands {
                let _ = writeln!(
                    s,
                    "{name}{{listener=\"{}\",command=\"{}\"}} {}",
                    l.listener,
                    c.name,
                    get(c)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "# HELP furrow_redis_command_latency_microseconds Redis command latency (power-of-two buckets).\n# TYPE furrow_redis_command_latency_microseconds histogram"
    );
    for l in &redis {
        for c in &l.commands {
            let mut cumulative = 0;
            for (i, n) in c.latency_us.iter().enumerate() {
                cumulative += n;
                let le = 1u64 << i.min(63);
                let _ = writeln!(
                    s,
                    "furrow_redis_command_latency_microseconds_bucket{{listener=\"{}\",command=\"{}\",le=\"{le}\"}} {cumulative}",
                    l.listener, c.name
                );
            }
            let _ = writeln!(
                s,
                "furrow_redis_command_latency_microseconds_bucket{{listener=\"{}\",command=\"{}\",le=\"+Inf\"}} {cumulative}",
                l.listener, c.name
            );
            let _ = writeln!(
                s,
                "furrow_redis_command_latency_microseconds_count{{listener=\"{}\",command=\"{}\"}} {cumulative}",
                l.listener, c.name
            );
        }
    }
    type RedisWriteSeries = (
        &'static str,
        &'static str,
        fn(&proxy_redis::BackendWrites) -> u64,
    );
    let backend_series: [RedisWriteSeries; 2] = [
        (
            "furrow_redis_backend_writes_total",
            "Write calls on Redis backend connections.",
            |b| b.writes,
        ),
        (
            "furrow_redis_backend_requests_total",
            "Requests queued to Redis backend connections (requests / writes: coalescing).",
            |b| b.requests,
        ),
    ];
    for (name, help, get) in backend_series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &redis {
            let _ = writeln!(
                s,
                "{name}{{listener=\"{}\"}} {}",
                l.listener,
                get(&l.backend)
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP furrow_redis_hot_key_samples Sampled requests of the hottest keys (1 in 16 sampled, top 32).\n# TYPE furrow_redis_hot_key_samples gauge"
    );
    for l in &redis {
        for k in &l.hot_keys {
            let _ = writeln!(
                s,
                "furrow_redis_hot_key_samples{{listener=\"{}\",key=\"{}\"}} {}",
                l.listener,
                escape_label(&k.key),
                k.value
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP furrow_redis_big_key_bytes Largest requests seen, by key.\n# TYPE furrow_redis_big_key_bytes gauge"
    );
    for l in &redis {
        for k in &l.big_keys {
            let _ = writeln!(
                s,
                "furrow_redis_big_key_bytes{{listener=\"{}\",key=\"{}\"}} {}",
                l.listener,
                escape_label(&k.key),
                k.value
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP furrow_redis_big_reply_bytes Largest replies seen, by key (sampled).\n# TYPE furrow_redis_big_reply_bytes gauge"
    );
    for l in &redis {
        for k in &l.big_replies {
            let _ = writeln!(
                s,
                "furrow_redis_big_reply_bytes{{listener=\"{}\",key=\"{}\"}} {}",
                l.listener,
                escape_label(&k.key),
                k.value
            );
        }
    }
    let pools = proxy_mysql::pool_stats(&control.shared);
    type PoolSeries = (
        &'static str,
        &'static str,
        fn(&proxy_mysql::PoolStats) -> u64,
    );
    let pool_series: [PoolSeries; 3] = [
        (
            "furrow_mysql_pool_open_connections",
            "Open backend connections (per executor pools summed).",
            |p| u64::from(p.open),
        ),
        (
            "furrow_mysql_pool_idle_connections",
            "Idle backend connections.",
            |p| u64::from(p.idle),
        ),
        (
            "furrow_mysql_pool_created_total",
            "Backend connections created since start.",
            |p| p.created,
        ),
    ];
    for (name, help, get) in pool_series {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &pools {
            let _ = writeln!(
                s,
                "{name}{{server=\"{}\",address=\"{}\"}} {}",
                escape_label(&p.server),
                p.address,
                get(p)
            );
        }
    }
    let (hits, misses) = proxy_mysql::stmt_cache_stats(&control.shared);
    let _ = writeln!(
        s,
        "# HELP furrow_mysql_statement_cache_hits_total Statements whose classification and digest came from the per-core cache of statement shapes.\n\
         # TYPE furrow_mysql_statement_cache_hits_total counter\n\
         furrow_mysql_statement_cache_hits_total {hits}\n\
         # HELP furrow_mysql_statement_cache_misses_total Statements classified from their text (new shape, or not cacheable).\n\
         # TYPE furrow_mysql_statement_cache_misses_total counter\n\
         furrow_mysql_statement_cache_misses_total {misses}"
    );
    let _ = writeln!(
        s,
        "# HELP furrow_mysql_audit_dropped_total Audit records dropped because the queue was full.\n# TYPE furrow_mysql_audit_dropped_total counter"
    );
    for (path, _, dropped) in proxy_mysql::audit_stats(&control.shared) {
        let _ = writeln!(
            s,
            "furrow_mysql_audit_dropped_total{{file=\"{}\"}} {dropped}",
            escape_label(&path)
        );
    }
    if let Some(r) = &control.registry {
        crate::registry::render_metrics(r, &mut s);
    }
    s
}

/// A label value as the Prometheus text format wants it (backslash, quote and newline escaped).
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `furrow_listener_request_duration_seconds`: each listener's request latencies as a Prometheus
/// histogram, `le` at every power of two of microseconds (exact boundaries of the proxies' log-scale
/// buckets: `runtime::stats::Latency`), from 1 µs until every request is counted, then `+Inf`.
fn listener_latency(s: &mut String, totals: &[runtime::stats::ListenerTotals]) {
    let name = "furrow_listener_request_duration_seconds";
    let _ = writeln!(
        s,
        "# HELP {name} Request latency per listener (redis: command to reply; mysql: statement to result).\n# TYPE {name} histogram"
    );
    for t in totals {
        let h = &t.latency;
        let count = h.count();
        let labels = format!("listener=\"{}\",kind=\"{}\"", t.name, t.kind);
        for (bound_us, n) in h.cumulative_pow2() {
            let _ = writeln!(
                s,
                "{name}_bucket{{{labels},le=\"{}\"}} {n}",
                bound_us as f64 / 1e6
            );
            if n == count {
                break;
            }
        }
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        // The sum is estimated from the buckets (their midpoints): the proxies keep counts, not sums.
        let _ = writeln!(
            s,
            "{name}_sum{{{labels}}} {}",
            h.estimated_sum_us() as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count{{{labels}}} {count}");
    }
}
