//! The service registry over HTTP on a real server (embedded store): the publishing gate, registration,
//! heartbeats held in memory, lease expiry, discovery with the protection threshold, push to watchers,
//! operator online/offline and weights, governance rules, permissions and audit rows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value as Json, json};

const SVC: &str = "/v1/registry/DEV/services/orders";

fn metric(api: &Api, name: &str) -> u64 {
    let text = api.ok("GET", "/metrics", None);
    let text = text.as_str().unwrap().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn ids(d: &Json) -> Vec<String> {
    let mut v: Vec<String> = d["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Waits (bounded) until discovery shows exactly `want`; returns it.
fn until_ids(api: &Api, want: &[&str], what: &str) -> Json {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = api.ok("GET", &format!("{SVC}/discover"), None);
        if ids(&d) == want {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: still {:?}", ids(&d));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn audit_actions(admin: &Api) -> Vec<(String, String, Json)> {
    admin
        .ok("GET", "/v1/audit?limit=200", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["target"].as_str().unwrap().to_string(),
                a["detail"].clone(),
            )
        })
        .collect()
}

#[test]
fn register_beat_expire_discover_and_operate() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let editor_token = user_with(&admin, "svc-bot", "edit");
    let reader_token = user_with(&admin, "caller", "read");
    let editor = Api::new(&server, &editor_token);
    let reader = Api::new(&server, &reader_token);

    // Creating a service needs publish on (app, service); an edit grant is refused and audited.
    let body = json!({"app": "shop", "ttl_ms": 1000, "protect_threshold": 0.0});
    assert_eq!(
        editor.err("PUT", SVC, Some(body.clone())).0,
        403,
        "edit may not create services"
    );
    admin.ok("PUT", SVC, Some(body));
    assert_eq!(
        admin.err("PUT", SVC, Some(json!({"app": "shop", "ttl_ms": 5}))),
        (400, "bad_request".into(), Some("ttl_ms".into()))
    );
    assert_eq!(
        admin.err("PUT", SVC, Some(json!({"app": "nope"}))),
        (404, "not_found".into(), Some("app".into()))
    );

    // The publishing gate: no owner, no docs → not live; discovery of a draft service is refused.
    assert_eq!(
        admin.err("POST", &format!("{SVC}/live"), Some(json!({"live": true}))),
        (400, "bad_request".into(), Some("owner".into()))
    );
    assert_eq!(reader.err("GET", &format!("{SVC}/discover"), None).0, 404);
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "team-orders", "docs": "https://wiki/orders", "ttl_ms": 1000})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    assert_eq!(
        admin
            .err("PUT", SVC, Some(json!({"app": "shop", "ttl_ms": 1000})))
            .2,
        Some("owner".into()),
        "a live service keeps its owner"
    );

    // Registration (edit level); readers may not register.
    assert_eq!(
        reader
            .err(
                "POST",
                &format!("{SVC}/instances"),
                Some(json!({"ip": "10.0.0.9", "port": 80}))
            )
            .0,
        403
    );
    assert_eq!(
        editor.err(
            "POST",
            &format!("{SVC}/instances"),
            Some(json!({"ip": "10.0.0.1", "port": 80, "colour": "red"}))
        ),
        (400, "bad_request".into(), Some("colour".into()))
    );
    for (id, version) in [("a", "1.0"), ("b", "1.0"), ("c", "2.1")] {
        let i = editor.ok(
            "POST",
            &format!("{SVC}/instances"),
            Some(json!({"id": id, "ip": "127.0.0.1", "port": 9000, "version": version, "tags": {"zone": "z1"}})),
        );
        assert_eq!(
            (i["healthy"].as_bool(), i["weight"].as_u64()),
            (Some(true), Some(100))
        );
    }
    let d = reader.ok("GET", &format!("{SVC}/discover"), None);
    assert_eq!(ids(&d), ["a", "b", "c"]);
    assert_eq!(d["protected"], false);

    // Heartbeats of a healthy instance owned by this node write nothing to the store.
    let commits = metric(&admin, "furrow_control_commits_total");
    for _ in 0..5 {
        for id in ["a", "c"] {
            let (status, _) = editor
                .status(
                    "PUT",
                    &format!("{SVC}/instances/{id}/beat"),
                    None,
                    Duration::from_secs(5),
                )
                .unwrap();
            assert_eq!(status, 204);
        }
    }
    assert_eq!(
        metric(&admin, "furrow_control_commits_total"),
        commits,
        "beats must not commit"
    );
    assert_eq!(
        editor
            .err("PUT", &format!("{SVC}/instances/zz/beat"), None)
            .0,
        404
    );

    // b stops beating: it leaves discovery within its TTL (a and c keep beating meanwhile).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let stop = stop.clone();
        let addr = format!("http://{}", server.addr);
        let token = editor_token.clone();
        std::thread::spawn(move || {
            let c = control::client::ApiClient::new(&addr, Some(&token));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for id in ["a", "c"] {
                    rt.block_on(c.call("PUT", &format!("{SVC}/instances/{id}/beat"), None))
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    until_ids(&reader, &["a", "c"], "b expires");
    let all = admin.ok("GET", SVC, None);
    let b = all["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["healthy"], false, "b stays registered, unhealthy");
    // A beat brings it back (one store write).
    editor.ok("PUT", &format!("{SVC}/instances/b/beat"), None);
    until_ids(&reader, &["a", "b", "c"], "b healthy again");

    // A watcher parked on the current revision is woken by an operator's offline; the reply lacks c.
    let rev = reader.ok("GET", &format!("{SVC}/discover"), None)["rev"]
        .as_u64()
        .unwrap();
    let watcher = {
        let addr = format!("http://{}", server.addr);
        let token = reader_token.clone();
        std::thread::spawn(move || {
            let c = control::client::ApiClient::new(&addr, Some(&token));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (status, body) = rt
                .block_on(c.call_status(
                    "GET",
                    &format!("/v1/registry/watch?env=DEV&service=orders&since={rev}&timeout=20000"),
                    None,
                    Duration::from_secs(30),
                ))
                .unwrap();
            (status, body, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        editor
            .err("POST", &format!("{SVC}/instances/c/offline"), None)
            .0,
        403,
        "offline needs publish"
    );
    let sent = Instant::now();
    admin.ok("POST", &format!("{SVC}/instances/c/offline"), None);
    let (status, body, at) = watcher.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(ids(&body), ["a", "b"]);
    assert!(body["rev"].as_u64().unwrap() > rev);
    println!(
        "offline → watcher: {:?}",
        at.saturating_duration_since(sent)
    );
    // Weight 0 takes a out too; weight back brings it in.
    admin.ok(
        "PUT",
        &format!("{SVC}/instances/a/weight"),
        Some(json!({"weight": 0})),
    );
    assert_eq!(
        ids(&reader.ok("GET", &format!("{SVC}/discover"), None)),
        ["b"]
    );
    admin.ok(
        "PUT",
        &format!("{SVC}/instances/a/weight"),
        Some(json!({"weight": 50})),
    );
    // A re-registration keeps the operator's offline.
    editor.ok(
        "POST",
        &format!("{SVC}/instances"),
        Some(json!({"id": "c", "ip": "127.0.0.1", "port": 9000, "version": "2.1"})),
    );
    assert_eq!(
        ids(&reader.ok("GET", &format!("{SVC}/discover"), None)),
        ["a", "b"]
    );
    admin.ok("POST", &format!("{SVC}/instances/c/online"), None);

    // Deregistration.
    editor.ok("DELETE", &format!("{SVC}/instances/b"), None);
    assert_eq!(
        ids(&reader.ok("GET", &format!("{SVC}/discover"), None)),
        ["a", "c"]
    );
    assert_eq!(
        editor.err("DELETE", &format!("{SVC}/instances/b"), None).0,
        404
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    beater.join().unwrap();

    // Audit rows: operator actions with old and new values, and the refusals.
    let audit = audit_actions(&admin);
    let op = audit
        .iter()
        .find(|(a, t, d)| {
            a == "registry.operate" && t == "registry/DEV/orders/c" && d["new"]["enabled"] == false
        })
        .expect("offline audited");
    assert_eq!(op.2["old"]["enabled"], true);
    assert_eq!(op.2["new"]["enabled"], false);
    assert!(
        audit
            .iter()
            .any(|(a, t, _)| a == "denied" && t == "registry/DEV/orders")
    );
    assert!(audit.iter().any(|(a, _, _)| a == "registry.deregister"));
    assert!(audit.iter().any(|(a, _, _)| a == "registry.service.live"));
    assert!(metric(&admin, "furrow_registry_services") >= 1);
    assert!(metric(&admin, "furrow_registry_leases_expired_total") >= 1);
    let stats = admin.ok("GET", "/v1/registry/stats", None);
    assert!(stats["beats_in_memory"].as_u64().unwrap() >= 10, "{stats}");
    assert!(stats["leases_expired"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn protection_threshold_keeps_unhealthy_instances_in_discovery() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 1000, "protect_threshold": 0.6})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    for id in ["a", "b", "c"] {
        admin.ok(
            "POST",
            &format!("{SVC}/instances"),
            Some(json!({"id": id, "ip": "127.0.0.1", "port": 1})),
        );
    }
    // Only a beats: b and c expire, 1 of 3 healthy is below 0.6, so all three stay in discovery.
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        admin.ok("PUT", &format!("{SVC}/instances/a/beat"), None);
        let all = admin.ok("GET", SVC, None);
        let healthy = all["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["healthy"] == true)
            .count();
        if healthy == 1 {
            break admin.ok("GET", &format!("{SVC}/discover"), None);
        }
        assert!(Instant::now() < deadline, "b and c never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(d["protected"], true);
    assert_eq!(ids(&d), ["a", "b", "c"]);
    // Below the threshold no more: c offline → 1 of 2 healthy = 0.5 < 0.6 still protected; threshold down
    // to 0.4 → only the healthy one.
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 1000, "protect_threshold": 0.3})),
    );
    admin.ok("PUT", &format!("{SVC}/instances/a/beat"), None);
    let d = admin.ok("GET", &format!("{SVC}/discover"), None);
    assert_eq!(
        (d["protected"].clone(), ids(&d)),
        (json!(false), vec!["a".to_string()])
    );
}

#[test]
fn governance_rules_are_validated_versioned_pushed_and_audited() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d"})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    let editor = Api::new(&server, &user_with(&admin, "dev", "edit"));
    let rules = json!([
        {"kind": "rate_limit", "qps": 100, "scope": "user", "control": {"mode": "queue", "max_wait_ms": 50}},
        {"kind": "circuit_breaker", "strategy": "error_ratio", "threshold": 0.5, "window_ms": 10000, "open_ms": 5000},
        {"kind": "access", "allow": false, "callers": ["crawler"], "sources": ["10.9.0.0/16"]},
        {"kind": "route", "callers": ["web"], "version": "2.*", "percent": 10}
    ]);
    assert_eq!(
        editor
            .err(
                "PUT",
                &format!("{SVC}/rules"),
                Some(json!({"rules": rules}))
            )
            .0,
        403
    );
    assert_eq!(
        admin.err(
            "PUT",
            &format!("{SVC}/rules"),
            Some(json!({"rules": [{"kind": "route", "version": "2.*", "percent": 101}]}))
        ),
        (400, "bad_request".into(), Some("rules/0/percent".into()))
    );
    assert_eq!(
        admin
            .err(
                "PUT",
                &format!("{SVC}/rules"),
                Some(json!({"rules": [{"kind": "teleport"}]}))
            )
            .0,
        400
    );
    let rev = admin.ok("GET", &format!("{SVC}/discover"), None)["rev"]
        .as_u64()
        .unwrap();
    let set = admin.ok(
        "PUT",
        &format!("{SVC}/rules"),
        Some(json!({"rules": rules, "message": "first", "version": 0})),
    );
    assert_eq!(set["version"], 1);
    // A watcher that last saw `rev` gets the rules at once.
    let (status, d) = admin
        .status(
            "GET",
            &format!("/v1/registry/watch?env=DEV&service=orders&since={rev}&timeout=5000"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(d["rules"]["version"], 1);
    assert_eq!(d["rules"]["rules"].as_array().unwrap().len(), 4);
    // A watcher at the latest revision times out with 304.
    let (status, _) = admin
        .status(
            "GET",
            &format!(
                "/v1/registry/watch?env=DEV&service=orders&since={}&timeout=200",
                d["rev"]
            ),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(status, 304);
    // Optimistic versioning.
    assert_eq!(
        admin.err(
            "PUT",
            &format!("{SVC}/rules"),
            Some(json!({"rules": [], "version": 0}))
        ),
        (409, "version_conflict".into(), Some("version".into()))
    );
    admin.ok(
        "PUT",
        &format!("{SVC}/rules"),
        Some(json!({"rules": [], "version": 1, "message": "clear"})),
    );
    let audit = audit_actions(&admin);
    let publishes: Vec<&(String, String, Json)> = audit
        .iter()
        .filter(|(a, _, _)| a == "registry.rules.publish")
        .collect();
    assert_eq!(publishes.len(), 2);
    // Newest first: the clearing publish records the four old rules.
    assert_eq!(publishes[0].2["old"].as_array().unwrap().len(), 4);
    assert_eq!(publishes[0].2["new"], json!([]));
}

/// A service whose rule publishes need review: a publish is a pending change (202), its author cannot
/// approve it (the configuration center's review rule), another publisher can; a rejected change is
/// dropped; every step is audited.
#[test]
fn rule_publishes_under_review_wait_for_another_users_approval() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let svc = admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "review_rules": true})),
    );
    assert_eq!(svc["review_rules"], true);
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    let alice = Api::new(&server, &user_with(&admin, "alice", "publish"));
    let bob = Api::new(&server, &user_with(&admin, "bob", "publish"));
    let editor = Api::new(&server, &user_with(&admin, "carol", "edit"));
    let rules = json!([{"kind": "rate_limit", "qps": 50, "scope": "user"}]);
    let rules_path = format!("{SVC}/rules");
    let pending_path = format!("{SVC}/rules/pending");
    let approve_path = format!("{SVC}/rules/approve");

    // Nothing pending yet.
    assert_eq!(
        bob.err("POST", &approve_path, None),
        (404, "not_found".into(), Some("pending".into()))
    );
    // A publish is a pending change; nothing is in force yet.
    let (status, p) = alice
        .status(
            "PUT",
            &rules_path,
            Some(json!({"rules": rules, "version": 0, "message": "limit users"})),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(status, 202, "{p}");
    assert_eq!(p["state"], "pending");
    assert_eq!(p["editors"], json!(["alice"]));
    assert_eq!(admin.ok("GET", &rules_path, None), Json::Null);
    assert!(
        admin.ok("GET", &format!("{SVC}/discover"), None)["rules"].is_null(),
        "a pending change is not pushed"
    );
    assert_eq!(
        admin.ok("GET", &pending_path, None)["rules"][0]["qps"],
        50.0
    );
    // Its author may not approve it; an editor-level user may not either.
    assert_eq!(
        alice.err("POST", &approve_path, Some(json!({"version": 0}))),
        (403, "review_required".into(), None)
    );
    assert_eq!(editor.err("POST", &approve_path, None).0, 403);
    // Approval against a stale version is refused.
    assert_eq!(
        bob.err("POST", &approve_path, Some(json!({"version": 3}))),
        (409, "version_conflict".into(), Some("version".into()))
    );
    // Another publisher approves: version 1, written by alice, approved by bob, pushed.
    let set = bob.ok("POST", &approve_path, Some(json!({"version": 0})));
    assert_eq!(
        (&set["version"], &set["author"], &set["approver"]),
        (&json!(1), &json!("alice"), &json!("bob"))
    );
    assert_eq!(admin.ok("GET", &pending_path, None), Json::Null);
    let d = admin.ok("GET", &format!("{SVC}/discover"), None);
    assert_eq!(d["rules"]["version"], 1);
    assert_eq!(d["rules"]["rules"][0]["qps"], 50.0);

    // A change proposed by two people: neither may approve it. Then rejected: dropped, rules unchanged.
    let (status, _) = alice
        .status(
            "PUT",
            &rules_path,
            Some(json!({"rules": [], "version": 1})),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(status, 202);
    let (_, p) = bob
        .status(
            "PUT",
            &rules_path,
            Some(json!({"rules": [], "version": 1, "message": "clear"})),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(p["editors"], json!(["alice", "bob"]));
    assert_eq!(bob.err("POST", &approve_path, None).0, 403);
    assert_eq!(
        editor.err("DELETE", &pending_path, None).0,
        403,
        "rejecting needs publish level"
    );
    admin.ok("DELETE", &pending_path, None);
    assert_eq!(admin.ok("GET", &pending_path, None), Json::Null);
    assert_eq!(admin.ok("GET", &rules_path, None)["version"], 1);

    let audit = audit_actions(&admin);
    let count = |a: &str| audit.iter().filter(|(x, _, _)| x == a).count();
    assert_eq!(count("registry.rules.propose"), 3);
    assert_eq!(count("registry.rules.approve"), 1);
    assert_eq!(count("registry.rules.reject"), 1);
    assert_eq!(count("registry.rules.publish"), 0);
    let approve = audit
        .iter()
        .find(|(a, _, _)| a == "registry.rules.approve")
        .unwrap();
    assert_eq!(approve.1, "registry/DEV/orders");
    assert_eq!(approve.2["author"], "alice");
    assert_eq!(approve.2["new"][0]["qps"], 50.0);
    assert!(
        audit
            .iter()
            .any(|(a, _, d)| a == "denied" && d.to_string().contains("review")),
        "the refused self-approval is audited: {audit:?}"
    );
}

/// Per-version call statistics: the library's recorder reports from its own thread; the center adds the
/// reports up per version; bad reports are refused naming the field; reading needs a grant.
#[test]
fn the_library_reports_calls_per_version() {
    use control::registry::calls::CallRecorder;
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d"})),
    );
    let api =
        control::client::ApiClient::new(&format!("http://{}", server.addr), Some(ADMIN_TOKEN));
    let rec =
        CallRecorder::start(api, "DEV", "orders", "web-1", Duration::from_millis(100)).unwrap();
    for i in 0..30u64 {
        let version = if i % 3 == 0 { "2.0" } else { "1.0" };
        rec.record(version, i % 10 == 0, Duration::from_millis(2 + i % 3));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let view = loop {
        let v = admin.ok("GET", &format!("{SVC}/calls"), None);
        if v["versions"].as_array().map(Vec::len) == Some(2) {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    rec.stop();
    assert_eq!(view["reporters"], 1);
    let (one, two) = (&view["versions"][0], &view["versions"][1]);
    assert_eq!(
        (&one["version"], &one["calls"], &one["errors"]),
        (&json!("1.0"), &json!(20), &json!(2))
    );
    assert_eq!(
        (&two["version"], &two["calls"], &two["errors"]),
        (&json!("2.0"), &json!(10), &json!(1))
    );
    assert!(one["avg_latency_ms"].as_f64().unwrap() >= 2.0, "{one}");
    assert_eq!(
        admin.err(
            "POST",
            &format!("{SVC}/calls"),
            Some(json!({"reporter": "x", "calls": [{"version": "1", "calls": 1, "errors": 2}]}))
        ),
        (400, "bad_request".into(), Some("calls/0/errors".into()))
    );
    let nobody = Api::new(&server, &user_with(&admin, "nobody", "none"));
    assert_eq!(nobody.err("GET", &format!("{SVC}/calls"), None).0, 403);
}

/// The Rust client library: a registration kept alive by its own heartbeats, a discoverer that follows
/// pushed changes and keeps a snapshot file, and starts from that file when the registry is down.
#[test]
fn rust_client_registers_beats_and_discovers_with_a_snapshot() {
    use control::client::ApiClient;
    use control::registry::client::{DiscoverOptions, Discoverer, Registration};
    use control::registry::ops::InstanceInput;

    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 1000})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    let addr = format!("http://{}", server.addr);
    let api = ApiClient::new(&addr, Some(ADMIN_TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DiscoverOptions::new("DEV", "orders");
    opts.snapshot = Some(dir.path().join("orders.json"));
    let disc = Discoverer::start(api.clone(), opts.clone()).unwrap();
    assert!(disc.current().instances.is_empty());
    let mut rx = disc.subscribe();

    let input = |id: &str, version: &str| InstanceInput {
        id: id.into(),
        ip: "127.0.0.1".into(),
        port: 7000,
        version: version.into(),
        ..Default::default()
    };
    let r1 = Registration::start(api.clone(), "DEV", "orders", input("r1", "1.0"), None).unwrap();
    let r2 = Registration::start(api.clone(), "DEV", "orders", input("r2", "2.0"), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut wait_for = |want: &[&str], what: &str| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let mut got: Vec<String> =
                        rx.borrow().instances.iter().map(|i| i.id.clone()).collect();
                    got.sort();
                    if got == want {
                        return;
                    }
                    rx.changed().await.unwrap();
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: {:?}", disc.current().instances))
        })
    };
    wait_for(&["r1", "r2"], "both registered");
    // Three TTLs: the registrations' own heartbeats keep both healthy.
    std::thread::sleep(Duration::from_millis(3000));
    let ids_now: Vec<String> = disc
        .current()
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(ids_now.len(), 2, "{ids_now:?}");
    // r2 stops beating (a crash): it drops out; r1 deregisters (graceful): gone at once.
    r2.stop();
    wait_for(&["r1"], "r2 expired");
    r1.deregister().unwrap();
    wait_for(&[], "r1 deregistered");
    let r3 = Registration::start(api.clone(), "DEV", "orders", input("r3", "3.0"), None).unwrap();
    wait_for(&["r3"], "r3 registered");
    drop(disc);
    r3.stop();

    // The registry goes away: a new discoverer starts from the snapshot file.
    drop(server);
    let offline = Discoverer::start(api, opts).unwrap();
    let ids: Vec<String> = offline
        .current()
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(ids, ["r3"]);
}

/// A change reaches every parked registry watcher (200 here; the latency is printed, not asserted; the
/// 1,000-watcher figure is an optimized measurement in `registry_perf.rs`).
#[test]
fn a_change_reaches_every_registry_watcher() {
    let lat = registry_fan_out(200);
    assert_eq!(lat.len(), 200);
}

/// What the console's registry pages read besides the plain records: the caller's level, health and
/// online counts, clusters and protection per service; this node's leases; the rule dry run; the rule
/// versions from the audit log; the token service's budgets.
#[test]
fn console_views_of_services_rules_and_token_budgets() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "protect_threshold": 0.6})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    for (id, cluster) in [("a1", "dc1"), ("a2", "dc1"), ("b1", "dc2")] {
        admin.ok(
            "POST",
            &format!("{SVC}/instances"),
            Some(json!({"id": id, "ip": "127.0.0.1", "port": 9000, "tags": {"cluster": cluster}})),
        );
    }
    admin.ok("POST", &format!("{SVC}/instances/b1/offline"), None);
    let reader = Api::new(&server, &user_with(&admin, "viewer", "read"));
    let stranger = Api::new(&server, &user_with(&admin, "stranger", "none"));

    let list = reader.ok("GET", "/v1/registry/DEV/services", None);
    let s = &list[0];
    assert_eq!(
        (
            &s["instances"],
            &s["healthy"],
            &s["enabled"],
            &s["protected"]
        ),
        (&json!(3), &json!(3), &json!(2), &json!(false))
    );
    assert_eq!(
        (&s["clusters"], &s["level"]),
        (&json!(["dc1", "dc2"]), &json!("read"))
    );
    assert_eq!(
        admin.ok("GET", "/v1/registry/DEV/services", None)[0]["level"],
        "publish"
    );
    let detail = reader.ok("GET", SVC, None);
    assert_eq!(
        (&detail["level"], &detail["protected"]),
        (&json!("read"), &json!(false))
    );
    let node = admin.ok("GET", "/v1/registry/stats", None)["node"].clone();
    assert_eq!(detail["node"], node);
    let now = control::model::now_ms();
    for id in ["a1", "a2", "b1"] {
        let at = detail["leases"][id]
            .as_u64()
            .unwrap_or_else(|| panic!("{detail}"));
        assert!(
            at > now && at <= now + 15_000,
            "{id}: lease until {at}, now {now}"
        );
    }

    // The dry run: valid rules change nothing; an invalid one names its field; a stranger is refused.
    let rules = json!([{"kind": "rate_limit", "qps": 10, "cluster": true, "scope": "user"},
                       {"kind": "cluster_switch", "from": "dc1", "to": "dc2"}]);
    let check = format!("{SVC}/rules/check");
    assert_eq!(
        reader.ok("POST", &check, Some(json!({"rules": rules}))),
        json!({"valid": true, "rules": 2})
    );
    assert_eq!(admin.ok("GET", &format!("{SVC}/rules"), None), Json::Null);
    let bad = json!({"rules": [{"kind": "rate_limit", "qps": 10, "cluster": true,
                                 "control": {"mode": "warm_up", "warm_up_s": 5}}]});
    assert_eq!(
        reader.err("POST", &check, Some(bad)),
        (400, "bad_request".into(), Some("rules/0/cluster".into()))
    );
    assert_eq!(
        stranger.err("POST", &check, Some(json!({"rules": []}))).0,
        403
    );

    // Two publishes: the history lists both, newest first, with their rules.
    let rules_path = format!("{SVC}/rules");
    admin.ok(
        "PUT",
        &rules_path,
        Some(json!({"rules": rules, "version": 0})),
    );
    admin.ok(
        "PUT",
        &rules_path,
        Some(
            json!({"rules": [{"kind": "access", "allow": false, "callers": ["crawler"]}],
                    "version": 1, "message": "no crawlers"}),
        ),
    );
    let hist = reader.ok("GET", &format!("{SVC}/rules/history"), None);
    let versions: Vec<_> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].clone(),
                v["author"].clone(),
                v["rules"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(json!(2), json!("admin"), 1), (json!(1), json!("admin"), 2)]
    );
    assert_eq!(hist[1]["rules"][1]["kind"], "cluster_switch");
    assert_eq!(
        (&hist[0]["message"], &hist[1]["message"]),
        (&json!("no crawlers"), &json!(""))
    );
    assert_eq!(
        stranger.err("GET", &format!("{SVC}/rules/history"), None).0,
        403
    );

    // Token budgets: version 3 brings the cluster limit back; a client takes 4 of alice's tokens.
    admin.ok(
        "PUT",
        &rules_path,
        Some(json!({"rules": rules, "version": 2})),
    );
    let tokens = format!("{SVC}/tokens");
    let grant = reader.ok(
        "POST",
        &tokens,
        Some(
            json!({"client": "p1", "version": 3, "asks": [{"rule": 0, "key": "alice", "want": 4}]}),
        ),
    );
    assert_eq!(grant["granted"], json!([4]));
    let st = reader.ok("GET", &tokens, None);
    assert_eq!((&st["version"], &st["clients"]), (&json!(3), &json!(1)));
    let b = &st["budgets"][0];
    assert_eq!(
        (&b["rule"], &b["key"], &b["qps"]),
        (&json!(0), &json!("alice"), &json!(10.0))
    );
    let held = b["tokens"].as_f64().unwrap();
    assert!((6.0..=10.0).contains(&held), "{st}");
    assert_eq!(stranger.err("GET", &tokens, None).0, 403);
}
