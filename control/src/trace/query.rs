//! Queries over the stored spans, as pure functions: a trace as a call tree with timings, trace search,
//! the service dependency graph with per-edge rates and latency percentiles, and the slowest operations
//! of a service. Each scans the in-memory index once (the store is bounded, so is the scan).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value as Json, json};

use super::model::{SpanRec, hex, value_text};

/// A trace as a call tree: roots are spans whose parent is absent from the trace; children are ordered
/// by start time. Returns the JSON tree and a text rendering (one line per span, indented by depth).
pub fn tree(spans: &[SpanRec]) -> (Json, String) {
    let start = spans.iter().map(|s| s.span.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.span.end_ns).max().unwrap_or(0);
    let ids: std::collections::HashSet<u64> = spans.iter().map(SpanRec::id).collect();
    let mut children: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent() != 0 && ids.contains(&s.parent()) && s.parent() != s.id() {
            children.entry(s.parent()).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].span.start_ns, spans[i].id()));
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    let mut text = String::new();
    // Iterative, with a visited set: a hostile trace with a parent cycle cannot recurse forever.
    let mut seen = vec![false; spans.len()];
    fn node(
        i: usize,
        depth: usize,
        spans: &[SpanRec],
        children: &HashMap<u64, Vec<usize>>,
        start: u64,
        seen: &mut [bool],
        text: &mut String,
    ) -> Json {
        seen[i] = true;
        let s = &spans[i];
        let mut j = s.to_json();
        j["offset_us"] = json!(s.span.start_ns.saturating_sub(start) / 1000);
        text.push_str(&format!(
            "{:indent$}{} {} {:.3} ms (+{:.3} ms){}\n",
            "",
            s.service,
            s.span.name,
            s.duration_ns() as f64 / 1e6,
            s.span.start_ns.saturating_sub(start) as f64 / 1e6,
            if s.is_error() { " ERROR" } else { "" },
            indent = depth * 2
        ));
        let kids: Vec<Json> = if depth >= 256 {
            Vec::new()
        } else {
            children
                .get(&s.id())
                .into_iter()
                .flatten()
                .filter(|&&c| !seen[c])
                .copied()
                .collect::<Vec<_>>()
                .into_iter()
                .map(|c| node(c, depth + 1, spans, children, start, seen, text))
                .collect()
        };
        j["children"] = json!(kids);
        j
    }
    let mut out = Vec::new();
    for r in roots {
        if !seen[r] {
            out.push(node(r, 0, spans, &children, start, &mut seen, &mut text));
        }
    }
    let trace_id = spans
        .first()
        .map(|s| hex(&s.span.trace_id))
        .unwrap_or_default();
    (
        json!({
            "trace_id": trace_id,
            "spans": spans.len(),
            "errors": spans.iter().filter(|s| s.is_error()).count(),
            "start_ns": start,
            "duration_us": end.saturating_sub(start) / 1000,
            "roots": out,
        }),
        text,
    )
}

/// What a search looks for; a trace matches when one of its spans matches every given criterion.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Service name.
    pub service: Option<String>,
    /// Operation (span name).
    pub operation: Option<String>,
    /// Minimum span duration, ns.
    pub min_duration_ns: u64,
    /// Only failed (`Some(true)`) or only non-failed (`Some(false)`) spans.
    pub error: Option<bool>,
    /// Attributes that must have these values (compared as text); the origin's resource attributes
    /// (`host.name`, `service.instance.id`, `service.version`) count too, when the span has no own one.
    pub attrs: Vec<(String, String)>,
    /// Spans starting at or after this time, ns since the epoch.
    pub since_ns: u64,
    /// The most traces returned (newest first).
    pub limit: usize,
}

impl Filter {
    fn matches(&self, s: &SpanRec) -> bool {
        s.span.start_ns >= self.since_ns
            && self.service.as_deref().is_none_or(|x| x == &*s.service)
            && self.operation.as_deref().is_none_or(|x| x == s.span.name)
            && s.duration_ns() >= self.min_duration_ns
            && self.error.is_none_or(|e| e == s.is_error())
            && self.attrs.iter().all(|(k, v)| {
                s.attr_text(k)
                    .or_else(|| s.resource_text(k))
                    .is_some_and(|a| &a == v)
            })
    }
}

/// A trace's one-line summary.
pub fn summary(spans: &[SpanRec]) -> Json {
    let start = spans.iter().map(|s| s.span.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.span.end_ns).max().unwrap_or(0);
    let ids: std::collections::HashSet<u64> = spans.iter().map(SpanRec::id).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent() == 0 || !ids.contains(&s.parent()))
        .min_by_key(|s| s.span.start_ns);
    let mut services: Vec<&str> = spans.iter().map(|s| &*s.service).collect();
    services.sort_unstable();
    services.dedup();
    json!({
        "trace_id": spans.first().map(|s| hex(&s.span.trace_id)).unwrap_or_default(),
        "root_service": root.map(|s| &*s.service),
        "root_operation": root.map(|s| s.span.name.as_str()),
        "start_ns": start,
        "duration_us": end.saturating_sub(start) / 1000,
        "spans": spans.len(),
        "errors": spans.iter().filter(|s| s.is_error()).count(),
        "services": services,
    })
}

/// The traces matching `f`, newest first.
pub fn search<'a>(traces: impl Iterator<Item = (u128, &'a [SpanRec])>, f: &Filter) -> Vec<Json> {
    let mut hits: Vec<(u64, &[SpanRec])> = traces
        .filter(|(_, spans)| spans.iter().any(|s| f.matches(s)))
        .map(|(_, spans)| {
            (
                spans.iter().map(|s| s.span.start_ns).min().unwrap_or(0),
                spans,
            )
        })
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse(h.0));
    hits.into_iter()
        .take(f.limit.max(1))
        .map(|(_, s)| summary(s))
        .collect()
}

/// Latency statistics of a set of durations (ns), in ms.
fn latency(d: &mut [u64]) -> Json {
    d.sort_unstable();
    let pct = |p: f64| -> f64 {
        if d.is_empty() {
            return 0.0;
        }
        let i = ((p * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1;
        d[i] as f64 / 1e6
    };
    json!({
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": d.last().map_or(0.0, |&x| x as f64 / 1e6),
    })
}

/// The peer a leaf client span calls: its `peer.service` attribute, else `DB_SYSTEM:SERVER_ADDRESS`
/// from the semantic-convention attributes (`db.system`, `server.address` / `net.peer.name`).
fn peer(s: &SpanRec) -> Option<String> {
    if let Some(p) = s.attr_text("peer.service") {
        return Some(p);
    }
    let sys = s.attr_text("db.system")?;
    let addr = s
        .attr_text("server.address")
        .or_else(|| s.attr_text("net.peer.name"))?;
    Some(format!("{sys}:{addr}"))
}

/// The service dependency graph over spans started at or after `since_ns`: an edge `A → B` for each span
/// of service B whose parent belongs to service A (a call between processes), and `A → PEER` for each span
/// of A that names a peer (see [`peer`]) and has no child spans in another service (a call to something
/// that does not trace itself: a database, a cache). Per edge: calls, errors, error rate, calls per
/// second over the window and latency percentiles of the callee's spans.
pub fn dependencies<'a>(
    traces: impl Iterator<Item = (u128, &'a [SpanRec])>,
    since_ns: u64,
    window_s: f64,
) -> Json {
    let mut edges: BTreeMap<(String, String), (u64, u64, Vec<u64>)> = BTreeMap::new();
    for (_, spans) in traces {
        let by_id: HashMap<u64, &SpanRec> = spans.iter().map(|s| (s.id(), s)).collect();
        let mut remote_children: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for s in spans {
            if let Some(p) = by_id.get(&s.parent())
                && p.service != s.service
            {
                remote_children.insert(p.id());
            }
        }
        for s in spans.iter().filter(|s| s.span.start_ns >= since_ns) {
            let mut add = |from: &str, to: String| {
                let e = edges.entry((from.to_string(), to)).or_default();
                e.0 += 1;
                e.1 += s.is_error() as u64;
                e.2.push(s.duration_ns());
            };
            if let Some(p) = by_id.get(&s.parent())
                && p.service != s.service
            {
                add(&p.service, s.service.to_string());
            }
            if !remote_children.contains(&s.id())
                && let Some(peer) = peer(s)
            {
                add(&s.service, peer);
            }
        }
    }
    let window = window_s.max(1e-3);
    let list: Vec<Json> = edges
        .into_iter()
        .map(|((from, to), (calls, errors, mut d))| {
            json!({
                "from": from,
                "to": to,
                "calls": calls,
                "errors": errors,
                "error_rate": errors as f64 / calls.max(1) as f64,
                "qps": calls as f64 / window,
                "latency": latency(&mut d),
            })
        })
        .collect();
    json!({ "window_s": window_s, "edges": list })
}

/// Per operation: calls, errors, durations and the slowest (duration, trace).
type OpStats = (u64, u64, Vec<u64>, Option<(u64, u128)>);

/// The operations of `service` ordered by p99 latency (slowest first), with counts and error rates.
pub fn slowest<'a>(
    traces: impl Iterator<Item = (u128, &'a [SpanRec])>,
    service: &str,
    since_ns: u64,
    limit: usize,
) -> Vec<Json> {
    let mut ops: HashMap<&str, OpStats> = HashMap::new();
    for (t, spans) in traces {
        for s in spans
            .iter()
            .filter(|s| &*s.service == service && s.span.start_ns >= since_ns)
        {
            let e = ops.entry(s.span.name.as_str()).or_default();
            e.0 += 1;
            e.1 += s.is_error() as u64;
            e.2.push(s.duration_ns());
            if e.3.is_none_or(|(d, _)| s.duration_ns() > d) {
                e.3 = Some((s.duration_ns(), t));
            }
        }
    }
    let mut out: Vec<(u64, Json)> = ops
        .into_iter()
        .map(|(op, (calls, errors, mut d, worst))| {
            let lat = latency(&mut d);
            let p99 = d[((0.99 * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1];
            let j = json!({
                "operation": op,
                "calls": calls,
                "errors": errors,
                "error_rate": errors as f64 / calls.max(1) as f64,
                "latency": lat,
                "slowest_trace": worst.map(|(_, t)| hex(&t.to_be_bytes())),
            });
            (p99, j)
        })
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.0));
    out.into_iter().take(limit.max(1)).map(|(_, j)| j).collect()
}

/// A regression: an hour whose p99 is more than this many times the median p99 of the hours before it.
pub const REGRESSION_FACTOR: f64 = 2.0;

/// The p99 of each operation of `service` per hour since `since_ns` (hours without calls are left
/// out), each hour flagged `regression` when its p99 exceeds [`REGRESSION_FACTOR`] × the median p99 of
/// at least two earlier hours of the same operation.
pub fn trend<'a>(
    traces: impl Iterator<Item = (u128, &'a [SpanRec])>,
    service: &str,
    since_ns: u64,
) -> Vec<Json> {
    const HOUR_NS: u64 = 3_600_000_000_000;
    let mut ops: BTreeMap<&str, BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for (_, spans) in traces {
        for s in spans
            .iter()
            .filter(|s| &*s.service == service && s.span.start_ns >= since_ns)
        {
            ops.entry(s.span.name.as_str())
                .or_default()
                .entry(s.span.start_ns / HOUR_NS)
                .or_default()
                .push(s.duration_ns());
        }
    }
    ops.into_iter()
        .map(|(op, hours)| {
            let mut earlier: Vec<f64> = Vec::new();
            let mut regressions = 0;
            let list: Vec<Json> = hours
                .into_iter()
                .map(|(h, mut d)| {
                    d.sort_unstable();
                    let p99 = d[((0.99 * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1]
                        as f64
                        / 1e6;
                    let regression = earlier.len() >= 2 && {
                        let mut e = earlier.clone();
                        e.sort_by(f64::total_cmp);
                        p99 > REGRESSION_FACTOR * e[e.len() / 2]
                    };
                    regressions += regression as u32;
                    earlier.push(p99);
                    json!({
                        "hour_start_ms": h * 3_600_000,
                        "calls": d.len(),
                        "p99_ms": p99,
                        "regression": regression,
                    })
                })
                .collect();
            json!({ "operation": op, "regressions": regressions, "hours": list })
        })
        .collect()
}

/// Statements per digest over the traced spans of every proxy and SDK (`db.statement`, stored in digest
/// form): traced calls, errors, total and percentile latency, the services that ran them, and the
/// slowest samples with their trace ids; ordered by total time. Counts are of traced statements (the
/// proxies' sampling decides which), so they rank statements; the proxies' own digest tables count all.
pub fn sql_digests<'a>(
    traces: impl Iterator<Item = (u128, &'a [SpanRec])>,
    since_ns: u64,
    limit: usize,
) -> Vec<Json> {
    struct Acc<'s> {
        system: String,
        errors: u64,
        durations: Vec<u64>,
        services: std::collections::BTreeSet<&'s str>,
        slowest: Vec<(u64, u128, Option<String>)>,
    }
    let mut by: HashMap<String, Acc<'a>> = HashMap::new();
    for (t, spans) in traces {
        for s in spans.iter().filter(|s| s.span.start_ns >= since_ns) {
            let Some(stmt) = s.attr_text("db.statement") else {
                continue;
            };
            let a = by.entry(stmt).or_insert_with(|| Acc {
                system: s.attr_text("db.system").unwrap_or_default(),
                errors: 0,
                durations: Vec::new(),
                services: Default::default(),
                slowest: Vec::new(),
            });
            a.errors += s.is_error() as u64;
            a.durations.push(s.duration_ns());
            a.services.insert(&s.service);
            a.slowest
                .push((s.duration_ns(), t, s.attr_text("furrow.backend")));
            // Keep the 3 slowest samples only.
            if a.slowest.len() > 3 {
                a.slowest.sort_by_key(|x| std::cmp::Reverse(x.0));
                a.slowest.truncate(3);
            }
        }
    }
    let mut out: Vec<(u64, Json)> = by
        .into_iter()
        .map(|(stmt, mut a)| {
            let total: u64 = a.durations.iter().sum();
            a.slowest.sort_by_key(|x| std::cmp::Reverse(x.0));
            let samples: Vec<Json> = a
                .slowest
                .iter()
                .map(|(d, t, b)| {
                    json!({"trace_id": hex(&t.to_be_bytes()), "duration_ms": *d as f64 / 1e6, "backend": b})
                })
                .collect();
            let j = json!({
                "digest": stmt,
                "db_system": a.system,
                "calls": a.durations.len(),
                "errors": a.errors,
                "total_ms": total as f64 / 1e6,
                "latency": latency(&mut a.durations),
                "services": a.services,
                "slow_samples": samples,
            });
            (total, j)
        })
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.0));
    out.into_iter().take(limit.max(1)).map(|(_, j)| j).collect()
}

/// Parses `k=v` attribute filters.
pub fn attr_filter(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
}

/// An attribute's text (re-exported for the API).
pub fn text(v: &codec::otlp::Value) -> String {
    value_text(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::otlp::{Span, Value};
    use std::sync::Arc;

    fn s(svc: &str, id: u64, parent: u64, start_ms: u64, dur_ms: u64) -> SpanRec {
        SpanRec {
            service: Arc::from(svc),
            origin: Default::default(),
            span: Span {
                trace_id: 7u128.to_be_bytes(),
                span_id: id.to_be_bytes(),
                parent_id: parent.to_be_bytes(),
                name: format!("op{id}"),
                start_ns: start_ms * 1_000_000,
                end_ns: (start_ms + dur_ms) * 1_000_000,
                ..Default::default()
            },
        }
    }

    fn app_proxy_db() -> Vec<SpanRec> {
        let mut proxy = s("furrow", 2, 1, 1, 3);
        proxy
            .span
            .attrs
            .push(("peer.service".into(), Value::Str("mysql:db1".into())));
        let mut cache = s("furrow", 3, 1, 5, 1);
        cache
            .span
            .attrs
            .push(("peer.service".into(), Value::Str("redis:c1".into())));
        cache.span.status = 2;
        vec![s("app", 1, 0, 0, 10), cache, proxy]
    }

    #[test]
    fn tree_orders_children_by_start_and_renders_timings() {
        let (j, text) = tree(&app_proxy_db());
        assert_eq!(j["roots"].as_array().unwrap().len(), 1);
        let kids = j["roots"][0]["children"].as_array().unwrap();
        assert_eq!(kids[0]["name"], "op2");
        assert_eq!(kids[1]["name"], "op3");
        assert_eq!(kids[1]["offset_us"], 5000);
        assert_eq!(j["duration_us"], 10_000);
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with("  furrow op3 1.000 ms (+5.000 ms) ERROR")
        );
    }

    #[test]
    fn parent_cycles_do_not_loop() {
        let spans = vec![s("a", 1, 2, 0, 1), s("a", 2, 1, 0, 1)];
        let (j, text) = tree(&spans);
        // Both have a parent in the trace, so neither is a root: nothing is drawn, nothing hangs.
        assert_eq!(j["spans"], 2);
        assert!(text.is_empty());
    }

    #[test]
    fn dependencies_count_calls_between_services_and_to_peers() {
        let a = app_proxy_db();
        let mut b = app_proxy_db();
        for x in b.iter_mut() {
            x.span.trace_id = 8u128.to_be_bytes();
        }
        let g = dependencies(
            [(7u128, a.as_slice()), (8, b.as_slice())].into_iter(),
            0,
            10.0,
        );
        let edges = g["edges"].as_array().unwrap();
        let find = |f: &str, t: &str| {
            edges
                .iter()
                .find(|e| e["from"] == f && e["to"] == t)
                .unwrap_or_else(|| panic!("no {f} -> {t} in {g}"))
        };
        assert_eq!(find("app", "furrow")["calls"], 4);
        assert_eq!(find("app", "furrow")["errors"], 2);
        assert_eq!(find("furrow", "mysql:db1")["calls"], 2);
        assert_eq!(find("furrow", "mysql:db1")["latency"]["p99_ms"], 3.0);
        assert_eq!(find("furrow", "redis:c1")["error_rate"], 1.0);
        assert_eq!(find("furrow", "redis:c1")["qps"], 0.2);
        assert_eq!(edges.len(), 3);
    }

    #[test]
    fn trend_flags_an_hour_whose_p99_doubles() {
        let hour = 3_600_000u64; // ms
        let mut spans = Vec::new();
        for (h, ms) in [(0u64, 10u64), (1, 12), (2, 11), (3, 40)] {
            for i in 0..5 {
                spans.push(s("db", 100 * h + i + 1, 0, h * hour + i, ms));
            }
        }
        let mut same = spans.clone();
        for x in same.iter_mut() {
            x.span.name = "q".into();
        }
        let t = [(7u128, same.as_slice())];
        let tr = trend(t.into_iter(), "db", 0);
        assert_eq!(tr.len(), 1);
        let hours = tr[0]["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 4);
        let flags: Vec<bool> = hours
            .iter()
            .map(|h| h["regression"].as_bool().unwrap())
            .collect();
        assert_eq!(flags, [false, false, false, true]);
        assert_eq!(hours[3]["p99_ms"], 40.0);
        assert_eq!(tr[0]["regressions"], 1);
    }

    #[test]
    fn sql_digests_rank_by_total_time_with_slow_samples() {
        let mut spans = Vec::new();
        for (id, dur, stmt) in [
            (1, 5, "SELECT ?"),
            (2, 7, "SELECT ?"),
            (3, 9, "UPDATE t SET a = ?"),
            (4, 1, "SELECT ?"),
        ] {
            let mut x = s("furrow", id, 0, 0, dur);
            x.span
                .attrs
                .push(("db.statement".into(), Value::Str(stmt.into())));
            x.span
                .attrs
                .push(("db.system".into(), Value::Str("mysql".into())));
            spans.push(x);
        }
        let t = [(7u128, spans.as_slice())];
        let d = sql_digests(t.into_iter(), 0, 10);
        assert_eq!(d[0]["digest"], "SELECT ?");
        assert_eq!(d[0]["calls"], 3);
        assert_eq!(d[0]["total_ms"], 13.0);
        assert_eq!(d[0]["slow_samples"][0]["duration_ms"], 7.0);
        assert_eq!(d[0]["slow_samples"].as_array().unwrap().len(), 3);
        assert_eq!(d[1]["digest"], "UPDATE t SET a = ?");
        assert_eq!(d[1]["services"], json!(["furrow"]));
    }

    #[test]
    fn search_and_slowest() {
        let a = app_proxy_db();
        let t = [(7u128, a.as_slice())];
        let f = Filter {
            service: Some("furrow".into()),
            min_duration_ns: 2_000_000,
            attrs: vec![("peer.service".into(), "mysql:db1".into())],
            limit: 10,
            ..Default::default()
        };
        let hits = search(t.into_iter(), &f);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0]["root_service"], "app");
        let f = Filter {
            error: Some(true),
            operation: Some("op2".into()),
            limit: 10,
            ..Default::default()
        };
        assert!(search(t.into_iter(), &f).is_empty());
        let slow = slowest(t.into_iter(), "furrow", 0, 10);
        assert_eq!(slow[0]["operation"], "op2");
        assert_eq!(slow[1]["errors"], 1);
        assert_eq!(slow[0]["slowest_trace"], hex(&7u128.to_be_bytes()));
    }
}
