//! The span collector over HTTP on a real server: OTLP/HTTP ingest in protobuf and JSON, the queries
//! (call tree, search, dependency graph, slowest operations), masking, malformed and unauthenticated
//! requests, and overload answered 503 with counts.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use codec::otlp::{self, ResourceSpans, Span, Value};
use common::*;
use serde_json::{Value as Json, json};

/// One raw HTTP/1.1 request; returns (status, headers, body).
fn http(
    srv: &control::server::Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    ct: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, out[end + 4..].to_vec())
}

fn get(srv: &control::server::Server, path: &str) -> Json {
    let (status, _, body) = http(srv, "GET", path, Some(ADMIN_TOKEN), "application/json", b"");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn span(trace: u8, id: u8, parent: u8, name: &str, ms: u64, attrs: Vec<(String, Value)>) -> Span {
    let start = now_ns() - 1_000_000_000;
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_id: [parent; 8],
        name: name.into(),
        kind: 2,
        start_ns: start,
        end_ns: start + ms * 1_000_000,
        attrs,
        ..Default::default()
    }
}

fn resource(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: vec![("service.name".into(), Value::Str(service.into()))],
        spans,
    }
}

fn tuned(o: &mut control::center::CenterOptions) {
    o.trace.store.sample_rate = 1.0;
    o.trace.store.decision_wait = Duration::from_millis(50);
    o.trace.masking.mask_keys = vec!["user.email".into()];
}

#[test]
fn protobuf_and_json_spans_make_one_trace_with_queries_over_it() {
    let srv = start_with("sqlite::memory:", tuned);
    let web = resource(
        "web",
        vec![span(
            1,
            1,
            0,
            "GET /cart",
            30,
            vec![("user.email".into(), Value::Str("a@b.c".into()))],
        )],
    );
    let body = otlp::encode_export(&[web], "test");
    let (status, head, resp) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf")
    );
    assert!(resp.is_empty(), "an empty ExportTraceServiceResponse");
    // The child, from another service, in OTLP/JSON, with SQL carrying literals and an error status.
    let trace = "01".repeat(16);
    let t0 = now_ns() - 900_000_000;
    let json_body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "0202020202020202", "parentSpanId": "0101010101010101",
            "name": "load", "kind": 3,
            "startTimeUnixNano": t0.to_string(), "endTimeUnixNano": (t0 + 10_000_000).to_string(),
            "attributes": [
                {"key": "db.system", "value": {"stringValue": "mysql"}},
                {"key": "server.address", "value": {"stringValue": "db1"}},
                {"key": "db.statement", "value": {"stringValue": "SELECT * FROM cart WHERE owner = 'alice'"}}],
            "status": {"code": 2, "message": "boom"}}]}]}]});
    let (status, _, resp) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/json",
        json_body.to_string().as_bytes(),
    );
    assert_eq!((status, resp.as_slice()), (200, &b"{}"[..]));

    let mut t = Json::Null;
    for _ in 0..200 {
        t = get(&srv, &format!("/v1/trace/traces/{trace}"));
        if t["spans"] == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t["spans"], 2, "{t}");
    assert_eq!(t["errors"], 1);
    let root = &t["roots"][0];
    assert_eq!(
        (root["service"].as_str(), root["name"].as_str()),
        (Some("web"), Some("GET /cart"))
    );
    assert_eq!(root["attributes"]["user.email"], "***", "masked attribute");
    let child = &root["children"][0];
    assert_eq!(child["status"], "error");
    let stmt = child["attributes"]["db.statement"].as_str().unwrap();
    assert!(!stmt.contains("alice") && stmt.contains('?'), "{stmt}");
    assert!(
        t["text"]
            .as_str()
            .unwrap()
            .contains("  cart load 10.000 ms"),
        "{}",
        t["text"]
    );

    let deps = get(&srv, "/v1/trace/dependencies?since_s=60");
    let edges = deps["edges"].as_array().unwrap();
    let edge = |f: &str, to: &str| {
        edges
            .iter()
            .find(|e| e["from"] == f && e["to"] == to)
            .cloned()
    };
    assert_eq!(edge("web", "cart").unwrap()["calls"], 1, "{deps}");
    assert_eq!(
        edge("cart", "mysql:db1").unwrap()["error_rate"],
        1.0,
        "{deps}"
    );

    assert_eq!(
        get(&srv, "/v1/trace/search?service=cart&status=error")["traces"][0]["trace_id"],
        trace
    );
    assert_eq!(
        get(&srv, "/v1/trace/search?min_duration_ms=31")["traces"],
        json!([])
    );
    assert_eq!(
        get(&srv, "/v1/trace/search?attr=db.system%3Dmysql")["traces"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let slow = get(&srv, "/v1/trace/services/web/slowest");
    assert_eq!(slow["operations"][0]["operation"], "GET /cart");
    let stats = get(&srv, "/v1/trace/stats");
    assert_eq!(stats["spans_accepted"], 2);

    // Errors: no token, garbage protobuf, bad JSON id, unknown content type, compressed body, bad id.
    let (status, _, _) = http(
        &srv,
        "POST",
        "/v1/traces",
        None,
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 401);
    let (status, _, b) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &[0x0a, 0x05, 1],
    );
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&b).contains("truncated protobuf"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let bad = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]});
    let (status, _, b) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/json",
        bad.to_string().as_bytes(),
    );
    assert_eq!(status, 400);
    let e: Json = serde_json::from_slice(&b).unwrap();
    assert_eq!(e["error"]["field"], "traceId");
    let (status, _, _) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "text/plain",
        b"x",
    );
    assert_eq!(status, 400);
    assert_eq!(get(&srv, "/v1/trace/stats")["requests_malformed"], 2);
    let (status, _, b) = http(
        &srv,
        "GET",
        "/v1/trace/traces/nothex",
        Some(ADMIN_TOKEN),
        "application/json",
        b"",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&b));
    let (status, _, _) = http(
        &srv,
        "GET",
        &format!("/v1/trace/traces/{}", "ab".repeat(16)),
        Some(ADMIN_TOKEN),
        "application/json",
        b"",
    );
    assert_eq!(status, 404);
    let metrics = http(&srv, "GET", "/metrics", None, "text/plain", b"").2;
    assert!(String::from_utf8_lossy(&metrics).contains("furrow_trace_spans_accepted_total 2"));
}

#[test]
fn kept_traces_are_exported_onward_to_another_collector() {
    let receiver = start_with("sqlite::memory:", tuned);
    let sender = start_with("sqlite::memory:", |o| {
        tuned(o);
        o.trace.export = Some(control::trace::export::ExportTarget::new(
            format!("http://{}", receiver.addr),
            Some(ADMIN_TOKEN.into()),
        ));
    });
    let body = otlp::encode_export(
        &[resource(
            "edge",
            vec![
                span(5, 1, 0, "GET /", 3, vec![]),
                span(5, 2, 1, "auth", 1, vec![]),
            ],
        )],
        "test",
    );
    let (status, _, _) = http(
        &sender,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 200);
    let id = "05".repeat(16);
    let mut got = Json::Null;
    for _ in 0..300 {
        let (status, _, b) = http(
            &receiver,
            "GET",
            &format!("/v1/trace/traces/{id}"),
            Some(ADMIN_TOKEN),
            "application/json",
            b"",
        );
        if status == 200 {
            got = serde_json::from_slice(&b).unwrap();
            if got["spans"] == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got["spans"], 2, "the receiver has the whole trace: {got}");
    assert_eq!(got["roots"][0]["service"], "edge");
    assert_eq!(get(&sender, "/v1/trace/stats")["export"]["traces_sent"], 1);
}

#[test]
fn a_full_queue_answers_503_with_counts_and_takes_nothing() {
    let srv = start_with("sqlite::memory:", |o| {
        tuned(o);
        o.trace.queue_spans = 10;
    });
    let spans: Vec<Span> = (1..=11).map(|i| span(9, i, 0, "op", 1, vec![])).collect();
    let body = otlp::encode_export(&[resource("busy", spans)], "test");
    let (status, head, b) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let e: Json = serde_json::from_slice(&b).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("11 spans refused"),
        "{e}"
    );
    let stats = get(&srv, "/v1/trace/stats");
    assert_eq!(
        (
            stats["spans_refused"].as_u64(),
            stats["spans_accepted"].as_u64()
        ),
        (Some(11), Some(0))
    );
    // Within the budget, the same spans go in.
    let spans: Vec<Span> = (1..=10).map(|i| span(9, i, 0, "op", 1, vec![])).collect();
    let body = otlp::encode_export(&[resource("busy", spans)], "test");
    assert_eq!(
        http(
            &srv,
            "POST",
            "/v1/traces",
            Some(ADMIN_TOKEN),
            "application/x-protobuf",
            &body
        )
        .0,
        200
    );
}

/// GET with a token; (status, JSON body).
fn get_as(srv: &control::server::Server, token: &str, path: &str) -> (u16, Json) {
    let (status, _, body) = http(srv, "GET", path, Some(token), "application/json", b"");
    (status, serde_json::from_slice(&body).unwrap_or(Json::Null))
}

fn span_ids(tree: &Json) -> Vec<String> {
    fn walk(n: &Json, out: &mut Vec<String>) {
        out.push(n["span_id"].as_str().unwrap_or_default()[..2].to_string());
        for c in n["children"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    for r in tree["roots"].as_array().into_iter().flatten() {
        walk(r, &mut out);
    }
    out.sort();
    out
}

#[test]
fn grants_decide_which_spans_a_user_reads() {
    let srv = start_with("sqlite::memory:", tuned);
    let api = Api::new(&srv, ADMIN_TOKEN);
    // user_with grants on the application `shop` (a grant names a registered application).
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let reader = user_with(&api, "reader", "read");
    let masked = user_with(&api, "masked", "masked_read");
    let db = |name: &str| vec![("db.system".to_string(), Value::Str(name.into()))];
    // Trace 7: shop → the proxy's statement (a db call) and a call into billing, which has its
    // own proxy statement. Trace 8: billing alone.
    let body = otlp::encode_export(
        &[
            resource("shop", vec![span(7, 1, 0, "GET /cart", 40, vec![])]),
            resource(
                "furrow-proxy",
                vec![
                    span(7, 2, 1, "SELECT ?", 5, db("mysql")),
                    span(7, 4, 3, "GET", 1, db("redis")),
                ],
            ),
            resource(
                "billing",
                vec![
                    span(7, 3, 1, "charge", 20, vec![]),
                    span(8, 9, 0, "refund", 20, vec![]),
                ],
            ),
        ],
        "test",
    );
    let (status, head, _) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 200, "{head}");
    let (t7, t8) = ("07".repeat(16), "08".repeat(16));
    for _ in 0..200 {
        if get_as(&srv, ADMIN_TOKEN, &format!("/v1/trace/traces/{t8}")).0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let (_, all) = get_as(&srv, ADMIN_TOKEN, &format!("/v1/trace/traces/{t7}"));
    assert_eq!(span_ids(&all), ["01", "02", "03", "04"], "{all}");

    // The reader of shop sees shop's span and the statement it ran through the proxy; billing's
    // span and the statement billing ran are not shop's.
    let (status, tree) = get_as(&srv, &reader, &format!("/v1/trace/traces/{t7}"));
    assert_eq!(status, 200, "{tree}");
    assert_eq!(span_ids(&tree), ["01", "02"], "{tree}");
    assert_eq!(
        get_as(&srv, &reader, &format!("/v1/trace/traces/{t8}")).0,
        404
    );
    let (_, found) = get_as(&srv, &reader, "/v1/trace/search?limit=10");
    let ids: Vec<&str> = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [t7.as_str()], "{found}");
    let (_, deps) = get_as(&srv, &reader, "/v1/trace/dependencies");
    let text = deps.to_string();
    assert!(
        text.contains("furrow-proxy") && !text.contains("billing"),
        "{deps}"
    );
    let (_, slow) = get_as(&srv, &reader, "/v1/trace/services/billing/slowest");
    assert_eq!(
        slow["operations"].as_array().map(Vec::len),
        Some(0),
        "{slow}"
    );
    // Below read, nothing; the administrator reads both traces.
    assert_eq!(
        get_as(&srv, &masked, &format!("/v1/trace/traces/{t7}")).0,
        404
    );
    let (_, none) = get_as(&srv, &masked, "/v1/trace/search");
    assert_eq!(none["traces"].as_array().map(Vec::len), Some(0), "{none}");
    let (_, both) = get_as(&srv, ADMIN_TOKEN, "/v1/trace/search");
    assert_eq!(both["traces"].as_array().map(Vec::len), Some(2), "{both}");
}

/// Per-namespace grants, as in the configuration center: a grant on `shop`/`orders` reads the spans of
/// `shop` whose resource names `service.namespace = orders` (and the calls they made through the proxy),
/// not those of `shop`/`payments` nor those naming no namespace; a grant on namespace `*` reads them all.
#[test]
fn namespace_grants_limit_which_spans_a_user_reads() {
    let srv = start_with("sqlite::memory:", tuned);
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let whole = user_with(&api, "whole", "read");
    let orders = user_with(&api, "orders", "none");
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": "user:orders", "app": "shop", "namespace": "orders", "level": "read"})),
    );
    let in_ns = |ns: &str, spans: Vec<Span>| ResourceSpans {
        resource: vec![
            ("service.name".into(), Value::Str("shop".into())),
            ("service.namespace".into(), Value::Str(ns.into())),
        ],
        spans,
    };
    let db = vec![("db.system".to_string(), Value::Str("mysql".into()))];
    // Trace 21: shop/orders → a proxy statement. Trace 22: shop/payments. Trace 23: shop, no namespace.
    let body = otlp::encode_export(
        &[
            in_ns("orders", vec![span(21, 1, 0, "GET /order", 30, vec![])]),
            resource("furrow-proxy", vec![span(21, 2, 1, "SELECT ?", 5, db)]),
            in_ns("payments", vec![span(22, 3, 0, "POST /pay", 30, vec![])]),
            resource("shop", vec![span(23, 4, 0, "GET /", 30, vec![])]),
        ],
        "test",
    );
    let (status, head, _) = http(
        &srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 200, "{head}");
    let t = |n: u8| format!("{n:02x}").repeat(16);
    for _ in 0..200 {
        if get_as(&srv, ADMIN_TOKEN, &format!("/v1/trace/traces/{}", t(23))).0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The namespace travels with the span.
    let (_, tree) = get_as(&srv, ADMIN_TOKEN, &format!("/v1/trace/traces/{}", t(21)));
    assert!(tree.to_string().contains("service.namespace"), "{tree}");

    let (status, tree) = get_as(&srv, &orders, &format!("/v1/trace/traces/{}", t(21)));
    assert_eq!(status, 200, "{tree}");
    assert_eq!(span_ids(&tree), ["01", "02"], "{tree}");
    for other in [22, 23] {
        assert_eq!(
            get_as(&srv, &orders, &format!("/v1/trace/traces/{}", t(other))).0,
            404,
            "trace {other}"
        );
    }
    let ids = |token: &str| -> Vec<String> {
        let (_, found) = get_as(&srv, token, "/v1/trace/search?service=shop&limit=10");
        let mut v: Vec<String> = found["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&orders), [t(21)]);
    assert_eq!(ids(&whole), [t(21), t(22), t(23)]);
    let (_, slow) = get_as(&srv, &orders, "/v1/trace/services/shop/slowest");
    let ops: Vec<&str> = slow["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["GET /order"], "{slow}");
}

/// Ingest by grant: a token whose user has `trace_ingest` on `shop` sends `shop`'s spans; the spans of
/// services it has no such grant for are left out and counted, answered with OTLP partial success
/// (200, `rejected_spans` and the reason) in the request's encoding; a token without any ingest grant
/// (a reader) is refused 403; the administrator sends for every service.
#[test]
fn ingest_takes_only_the_services_the_token_may_send_for() {
    let srv = start_with("sqlite::memory:", tuned);
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let reader = user_with(&api, "reader", "read");
    let sender = user_with(&api, "sender", "none");
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": "user:sender", "app": "shop", "namespace": "*", "level": "none", "trace_ingest": true})),
    );
    // The grant is listed with its flag, and an ingest-only grant is kept (not removed as level none).
    let grants = api.ok("GET", "/v1/permissions", None).to_string();
    assert!(grants.contains("\"trace_ingest\":true"), "{grants}");

    let body = otlp::encode_export(
        &[
            resource("shop", vec![span(31, 1, 0, "GET /cart", 3, vec![])]),
            resource(
                "billing",
                vec![
                    span(31, 2, 1, "charge", 1, vec![]),
                    span(32, 3, 0, "x", 1, vec![]),
                ],
            ),
            resource("furrow-proxy", vec![span(31, 4, 1, "SELECT ?", 1, vec![])]),
        ],
        "test",
    );
    let post = |token: &str, ct: &str, body: &[u8]| {
        http(&srv, "POST", "/v1/traces", Some(token), ct, body)
    };
    let (status, head, b) = post(&sender, "application/x-protobuf", &body);
    assert_eq!(status, 200, "{head}");
    // ExportTraceServiceResponse { partial_success (1) { rejected_spans (1) = 3, error_message (2) } }
    let (rejected, msg) = partial_success(&b);
    assert_eq!(rejected, 3);
    assert!(
        msg.starts_with("3 spans rejected") && msg.contains("billing, furrow-proxy"),
        "{msg}"
    );
    // The same in OTLP/JSON, for a namespace the grant covers and a service it does not.
    let json_body = json!({"resourceSpans": [
        {"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "shop"}},
            {"key": "service.namespace", "value": {"stringValue": "orders"}}]},
         "scopeSpans": [{"spans": [{"traceId": "21".repeat(16), "spanId": "01".repeat(8), "name": "GET /order",
            "startTimeUnixNano": now_ns().to_string(), "endTimeUnixNano": (now_ns() + 1000).to_string()}]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
         "scopeSpans": [{"spans": [{"traceId": "21".repeat(16), "spanId": "02".repeat(8), "name": "charge",
            "startTimeUnixNano": now_ns().to_string(), "endTimeUnixNano": (now_ns() + 1000).to_string()}]}]}
    ]});
    let (status, head, b) = post(
        &sender,
        "application/json",
        json_body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    let r: Json = serde_json::from_slice(&b).unwrap();
    assert_eq!(r["partialSuccess"]["rejectedSpans"], "1", "{r}");
    assert!(
        r["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("billing"),
        "{r}"
    );

    // A reader has no ingest grant: refused whole.
    let (status, _, b) = post(&reader, "application/x-protobuf", &body);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&b));

    // The collector kept shop's spans only; billing's trace 32 never arrived.
    let t31 = "1f".repeat(16);
    let mut tree = Json::Null;
    for _ in 0..200 {
        let (status, t) = get_as(&srv, ADMIN_TOKEN, &format!("/v1/trace/traces/{t31}"));
        if status == 200 {
            tree = t;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(span_ids(&tree), ["01"], "{tree}");
    assert_eq!(
        get_as(
            &srv,
            ADMIN_TOKEN,
            &format!("/v1/trace/traces/{}", "20".repeat(16))
        )
        .0,
        404
    );
    let stats = get(&srv, "/v1/trace/stats");
    assert_eq!(
        (
            stats["spans_accepted"].as_u64(),
            stats["spans_rejected"].as_u64()
        ),
        (Some(2), Some(4)),
        "{stats}"
    );
    let (_, _, m) = http(
        &srv,
        "GET",
        "/metrics",
        Some(ADMIN_TOKEN),
        "text/plain",
        b"",
    );
    assert!(
        String::from_utf8_lossy(&m).contains("furrow_trace_spans_rejected_total 4"),
        "rejections on /metrics"
    );
    // The administrator sends for every service: nothing rejected.
    let (status, _, b) = post(ADMIN_TOKEN, "application/x-protobuf", &body);
    assert_eq!((status, b.len()), (200, 0));
    assert_eq!(get(&srv, "/v1/trace/stats")["spans_rejected"], 4);
}

/// The `partial_success` of a protobuf `ExportTraceServiceResponse`: (rejected_spans, error_message).
fn partial_success(b: &[u8]) -> (u64, String) {
    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    let mut at = 0;
    assert_eq!(
        varint(b, &mut at),
        1 << 3 | 2,
        "field 1, length-delimited: {b:?}"
    );
    let end = varint(b, &mut at) as usize + at;
    assert_eq!(end, b.len());
    let (mut rejected, mut msg) = (0, String::new());
    while at < end {
        match varint(b, &mut at) {
            0x08 => rejected = varint(b, &mut at),
            0x12 => {
                let n = varint(b, &mut at) as usize;
                msg = String::from_utf8(b[at..at + n].to_vec()).unwrap();
                at += n;
            }
            t => panic!("unexpected tag {t}"),
        }
    }
    (rejected, msg)
}

/// A real HTTPS OTLP receiver (Python's `http.server` and `ssl` with the test kit's server certificate)
/// that answers each POST /v1/traces with the next status of `plan` (the last one repeats; `503r` is a
/// 503 with `Retry-After: 1`), writing each body to `DIR/N.bin` and `N STATUS AUTHORIZATION` to
/// `DIR/log`.
struct Receiver {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    _lease: testkit::PortLease,
}

impl Receiver {
    fn start(plan: &str) -> Receiver {
        let certs = testkit::TestCerts::get().unwrap();
        let lease = testkit::reserve_port().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
import http.server, ssl, sys, os
plan = sys.argv[5].split(",")
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        n = seen[0]
        seen[0] += 1
        step = plan[min(n, len(plan) - 1)]
        with open(os.path.join(sys.argv[4], "%d.bin" % n), "wb") as f:
            f.write(body)
        with open(os.path.join(sys.argv[4], "log"), "a") as f:
            f.write("%d %s %s\n" % (n, step, self.headers.get("Authorization")))
        self.send_response(int(step[:3]))
        if step.endswith("r"):
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
        let child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(lease.port().to_string())
            .arg(&certs.cert)
            .arg(&certs.key)
            .arg(dir.path())
            .arg(plan)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let port = lease.port();
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Receiver {
            child,
            port,
            dir,
            _lease: lease,
        }
    }

    /// The log's lines: (status step, Authorization header).
    fn log(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut p = l.splitn(3, ' ');
                p.next();
                (
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sender exporting to `endpoint` with `ca` (short backoff, `retries` tries again).
fn export_sender(
    endpoint: String,
    ca: Option<&std::path::Path>,
    retries: u32,
) -> control::server::Server {
    start_with("sqlite::memory:", |o| {
        tuned(o);
        let mut t =
            control::trace::export::ExportTarget::new(endpoint, Some("onward-token".into()));
        t.ca_file = ca.map(|p| p.to_str().unwrap().to_string());
        t.retry.attempts = retries;
        t.retry.backoff = Duration::from_millis(20);
        o.trace.export = Some(t);
    })
}

/// Sends one two-span trace `trace` to `srv`.
fn send_trace(srv: &control::server::Server, trace: u8) {
    let body = otlp::encode_export(
        &[resource(
            "edge",
            vec![
                span(trace, 1, 0, "GET /", 3, vec![]),
                span(trace, 2, 1, "auth", 1, vec![]),
            ],
        )],
        "test",
    );
    let (status, head, _) = http(
        srv,
        "POST",
        "/v1/traces",
        Some(ADMIN_TOKEN),
        "application/x-protobuf",
        &body,
    );
    assert_eq!(status, 200, "{head}");
}

/// Waits until the sender's export counters show `key` at `want`; returns them.
fn export_stats(srv: &control::server::Server, key: &str, want: u64) -> Json {
    let mut e = Json::Null;
    for _ in 0..1000 {
        e = get(srv, "/v1/trace/stats")["export"].clone();
        if e[key] == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    e
}

/// Onward export over TLS: the sender verifies the receiver against the test kit's CA, tries a batch
/// again after a 503 with `Retry-After` and after a 429, and the third try delivers the whole trace
/// (decoded from the bytes the receiver got) with the bearer token.
#[test]
fn onward_export_over_https_tries_again_and_delivers() {
    let rx = Receiver::start("503r,429,200");
    let ca = &testkit::TestCerts::get().unwrap().ca;
    let sender = export_sender(format!("https://localhost:{}", rx.port), Some(ca), 4);
    send_trace(&sender, 41);
    let e = export_stats(&sender, "traces_sent", 1);
    assert_eq!(
        (
            e["traces_sent"].as_u64(),
            e["retries"].as_u64(),
            e["traces_failed"].as_u64()
        ),
        (Some(1), Some(2), Some(0)),
        "{e}"
    );
    let log = rx.log();
    let steps: Vec<&str> = log.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps, ["503r", "429", "200"]);
    assert!(
        log.iter().all(|(_, a)| a == "Bearer onward-token"),
        "{log:?}"
    );
    // Each try carried the same batch; the last one is the whole trace.
    let bytes = std::fs::read(rx.dir.path().join("2.bin")).unwrap();
    assert_eq!(bytes, std::fs::read(rx.dir.path().join("0.bin")).unwrap());
    let got = otlp::decode_export(&bytes).unwrap();
    let spans: Vec<&str> = got
        .iter()
        .flat_map(|r| r.spans.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(got[0].service_name(), "edge");
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(
        got.iter()
            .flat_map(|r| &r.spans)
            .all(|s| s.trace_id == [41; 16])
    );
}

/// The bound: a receiver that keeps answering 503 gets the first try and two more, then the batch
/// is dropped and counted; a receiver whose certificate the sender's CA did not sign is not tried
/// again (nothing reaches it); nothing listening is tried again, then dropped.
#[test]
fn onward_export_gives_up_after_its_bound_and_never_trusts_an_unknown_issuer() {
    let certs = testkit::TestCerts::get().unwrap();
    let rx = Receiver::start("503");
    let sender = export_sender(format!("https://127.0.0.1:{}", rx.port), Some(&certs.ca), 2);
    send_trace(&sender, 42);
    let e = export_stats(&sender, "traces_failed", 1);
    assert_eq!(
        (
            e["traces_sent"].as_u64(),
            e["retries"].as_u64(),
            e["traces_failed"].as_u64()
        ),
        (Some(0), Some(2), Some(1)),
        "{e}"
    );
    assert_eq!(rx.log().len(), 3);

    let wrong = export_sender(
        format!("https://127.0.0.1:{}", rx.port),
        Some(&certs.other_ca),
        2,
    );
    send_trace(&wrong, 43);
    let e = export_stats(&wrong, "traces_failed", 1);
    assert_eq!(
        (e["retries"].as_u64(), e["traces_failed"].as_u64()),
        (Some(0), Some(1)),
        "{e}"
    );
    assert_eq!(
        rx.log().len(),
        3,
        "the handshake failed: no request reached the receiver"
    );

    let closed = testkit::reserve_port().unwrap();
    let away = export_sender(format!("http://127.0.0.1:{}", closed.port()), None, 1);
    send_trace(&away, 44);
    let e = export_stats(&away, "traces_failed", 1);
    assert_eq!(
        (e["retries"].as_u64(), e["traces_failed"].as_u64()),
        (Some(1), Some(1)),
        "{e}"
    );
}
