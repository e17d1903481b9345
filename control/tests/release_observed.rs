//! Dependency-ordered releases from observed dependencies: spans sent to the server's own tracing service
//! (OTLP/JSON) show `web` calling `api` and `api` calling `db`; a plan of the three projects, none of which
//! declares a dependency, deploys db, then api, then web — and does not when told to ignore traces.

mod common;

use common::*;
use serde_json::{Value as Json, json};

const P: &str = "/v1/release/projects";

fn now_ns() -> u64 {
    control::model::now_ms() * 1_000_000
}

/// A caller span in `from` and its child in `to`, one trace.
fn call(api: &Api, n: u8, from: &str, to: &str) {
    let trace = format!("{n:02x}").repeat(16);
    let t0 = now_ns() - 50_000_000;
    let span = |svc: &str, id: &str, parent: &str, kind: u8| {
        json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace, "spanId": id, "parentSpanId": parent, "name": "call", "kind": kind,
                "startTimeUnixNano": t0.to_string(), "endTimeUnixNano": (t0 + 1_000_000).to_string()}]}]
        })
    };
    api.ok(
        "POST",
        "/v1/traces",
        Some(json!({"resourceSpans": [
            span(from, "0101010101010101", "", 3),
            span(to, "0202020202020202", "0101010101010101", 2)
        ]})),
    );
}

fn order(plan: &Json) -> Vec<String> {
    plan.as_array()
        .unwrap()
        .iter()
        .map(|d| d["project"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_plan_follows_the_dependencies_observed_in_traces() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok("POST", "/v1/release/agents", Some(json!({"host": "h1"})));
    for (i, p) in ["web", "api", "db"].iter().enumerate() {
        api.ok(
            "PUT",
            &format!("{P}/{p}"),
            Some(json!({"app": "shop", "stages": [
                {"name": "dev", "hosts": ["h1"]}, {"name": "qa", "hosts": ["h1"]}]})),
        );
        api.ok(
            "POST",
            &format!("{P}/{p}/versions"),
            Some(json!({"name": "1", "artifact": {"inline": format!("echo {p}{i}")}})),
        );
        api.ok("POST", &format!("{P}/{p}/versions/1/gate"), None);
    }
    call(&api, 1, "web", "api");
    call(&api, 2, "api", "db");
    // The collector applies spans on its own thread: wait until the graph shows both edges.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let g = api.ok("GET", "/v1/trace/dependencies", None);
        if g["edges"].as_array().is_some_and(|e| e.len() >= 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no edges: {g}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let versions = json!({"web": "1", "api": "1", "db": "1"});

    // Ignoring traces: no order (alphabetical), nobody waits.
    let plan = api.ok(
        "POST",
        "/v1/release/plans",
        Some(json!({"stage": "dev", "versions": versions, "observed": false})),
    );
    assert_eq!(order(&plan), ["api", "db", "web"], "{plan}");
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|d| d["after"] == json!([])),
        "{plan}"
    );
    for d in plan.as_array().unwrap() {
        api.ok(
            "POST",
            &format!("/v1/release/deployments/{}/cancel", d["id"]),
            None,
        );
    }

    // By default the observed calls order the plan: what is called goes first.
    let plan = api.ok(
        "POST",
        "/v1/release/plans",
        Some(json!({"stage": "dev", "versions": versions})),
    );
    assert_eq!(order(&plan), ["db", "api", "web"], "{plan}");
    let id = |i: usize| plan[i]["id"].as_u64().unwrap();
    assert_eq!(plan[0]["after"], json!([]), "{plan}");
    assert_eq!(plan[1]["after"], json!([id(0)]), "api after db: {plan}");
    assert_eq!(plan[2]["after"], json!([id(1)]), "web after api: {plan}");
    let audit = api.ok("GET", "/v1/audit?limit=1000", None).to_string();
    assert!(
        audit.contains("release.plan.observed") && audit.contains("web -> api"),
        "the observed edges used are audited"
    );
}
