//! The console's registry and governance pages end to end in a real headless Chromium (as
//! `tests/console.rs`), against a real `furrow control` and a real instance process (Python: it listens
//! on a port, registers three instances over HTTP and beats for them): the services list with health
//! counts, protection and the cluster filter; a service's instances with offline/online, weight and
//! deregister through the confirmation dialog (checked through the API); the catalogue with the
//! publishing gate's errors at the field; rule tables per kind, the editor's dry run showing the API's
//! error, publish, versions and rollback, the review flow (the proposer refused, another user approves);
//! call statistics and token budgets; a read-only user sees no actions, a refused action shows
//! `forbidden`.

mod common;
mod webdriver;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DevControl, Process, wait_for};
use serde_json::{Value as Json, json};
use webdriver::Browser;

const TOKEN: &str = "console-registry-token";
const SVC: &str = "/v1/registry/DEV/services/orders";

/// An instance process: serves HTTP on a port of its own, registers the instances given as JSON for
/// it (metadata `pid`), and beats for them every 300 ms; an instance whose beat answers 404
/// (deregistered) is left alone.
const INSTANCE: &str = r#"
import http.server, json, os, sys, threading, time, urllib.error, urllib.request
base, token, svc, insts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
def call(method, path, body=None):
    req = urllib.request.Request(base + svc + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
for i in insts:
    call("POST", "/instances", dict(i, ip="127.0.0.1", port=srv.server_address[1],
                                    metadata={"pid": str(os.getpid())}))
alive = {i["id"] for i in insts}
while alive:
    for i in sorted(alive):
        try:
            call("PUT", "/instances/%s/beat" % i)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                alive.discard(i)
        except Exception:
            pass
    time.sleep(0.3)
"#;

fn instance(api: &common::BlockingApi, id: &str) -> Json {
    api.ok("GET", SVC, None)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
        .unwrap_or(Json::Null)
}

/// The row of `table` whose first cell is `first`.
fn row(b: &Browser, table: &str, first: &str) -> Vec<String> {
    b.table_rows(table)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in {table}: {:?}", b.table_rows(table)))
}

fn login(b: &Browser, token: &str, who: &str) {
    if b.script("return !document.getElementById('logout').hidden;", vec![]) == json!(true) {
        b.click("#logout");
    }
    wait_for("the login form", || {
        b.script("return !document.getElementById('login').hidden;", vec![]) == json!(true)
    });
    b.fill("#login-token", token);
    b.click("#login-submit");
    b.wait_text("#who", Duration::from_secs(15), |t| t.starts_with(who));
}

fn user_token(api: &common::BlockingApi, name: &str, level: &str) -> String {
    api.ok("POST", "/v1/users", Some(json!({"name": name})));
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": format!("user:{name}"), "app": "shop", "namespace": "*", "level": level})),
    );
    api.ok("POST", "/v1/tokens", Some(json!({"user": name})))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn console_registry_and_governance_pages() {
    webdriver::require();
    let dir = tempfile::tempdir().unwrap();
    let control = DevControl::start(dir.path(), TOKEN);
    let (base, api) = (&control.base, &control.api);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok(
        "PUT",
        SVC,
        Some(
            json!({"app": "shop", "owner": "team-orders", "docs": "Order service",
                    "dependencies": ["payments"], "ttl_ms": 2000, "protect_threshold": 0.9}),
        ),
    );
    api.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    api.ok(
        "PUT",
        "/v1/registry/DEV/services/payments",
        Some(json!({"app": "shop", "owner": "team-pay", "ttl_ms": 3_600_000})),
    );
    // p-1's port is reserved and nothing listens on it: the active check below finds it down.
    let closed = testkit::reserve_port().expect("port");
    api.ok(
        "POST",
        "/v1/registry/DEV/services/payments/instances",
        Some(
            json!({"id": "p-1", "ip": "127.0.0.1", "port": closed.port(), "version": "3.1",
                    "tags": {"cluster": "dc3"}}),
        ),
    );
    let insts = json!([
        {"id": "o-1", "version": "1.0", "tags": {"cluster": "dc1"}},
        {"id": "o-2", "version": "1.0", "tags": {"cluster": "dc1"}, "weight": 50},
        {"id": "o-3", "version": "2.0", "tags": {"cluster": "dc2", "canary": "yes"}},
    ]);
    let inst_proc = Process(
        Command::new("python3")
            .args(["-c", INSTANCE, base, TOKEN, SVC, &insts.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("instance.log")).unwrap())
            .spawn()
            .expect("python3"),
    );
    let pid = inst_proc.0.id().to_string();
    wait_for("the instance process registers", || {
        instance(api, "o-3")["healthy"] == true
    });
    let port = instance(api, "o-1")["port"].clone();
    // A fourth instance nobody beats for: down after the 2 s lease, which puts protection in effect
    // (3 of 4 healthy < 0.9).
    api.ok(
        "POST",
        &format!("{SVC}/instances"),
        Some(
            json!({"id": "o-4", "ip": "127.0.0.1", "port": 7999, "version": "1.0",
                    "tags": {"cluster": "dc2"}}),
        ),
    );
    wait_for("o-4 down", || instance(api, "o-4")["healthy"] == false);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let b = Browser::start(&shots);
    let long = Duration::from_secs(15);
    b.goto(&format!("{base}/"));
    login(&b, TOKEN, "admin");

    // The services list: health counts, live state, protection, clusters; the cluster filter.
    b.goto(&format!("{base}/#/registry?env=DEV"));
    b.wait_text("#services-table", long, |t| {
        t.contains("payments") && t.contains("orders")
    });
    assert_eq!(
        row(&b, "#services-table", "orders"),
        [
            "orders",
            "shop",
            "team-orders",
            "live",
            "4",
            "3",
            "1",
            "4",
            "in effect (< 0.9)",
            "dc1, dc2"
        ]
    );
    assert_eq!(
        row(&b, "#services-table", "payments"),
        [
            "payments", "shop", "team-pay", "not live", "1", "1", "0", "1", "off", "dc3"
        ]
    );
    b.screenshot("50-registry-services");
    b.choose("#registry-cluster", "dc3");
    b.wait_text("#services-table", long, |t| {
        t.contains("cluster dc3") && t.contains("payments") && !t.contains("orders")
    });
    assert_eq!(b.table_rows("#services-table").len(), 1);

    // A service's instances: every attribute, and the lease held by this node.
    b.goto(&format!("{base}/#/registry?env=DEV&service=orders"));
    b.wait_text("#reg-instances-table", long, |t| t.contains("o-4"));
    let addr = format!("127.0.0.1:{port}");
    let o3 = row(&b, "#reg-instances-table", "o-3");
    assert_eq!(
        o3[..9],
        [
            "o-3",
            addr.as_str(),
            "dc2",
            "2.0",
            "100",
            "healthy",
            "online",
            "canary=yes, cluster=dc2",
            &format!("pid={pid}"),
        ]
    );
    assert!(
        o3[9].starts_with("last beat ") && o3[9].contains("expires in"),
        "{o3:?}"
    );
    let o4 = row(&b, "#reg-instances-table", "o-4");
    assert_eq!(o4[4..7], ["100", "down", "online"]);
    assert_eq!(o4[9], "none on this node", "its lease ran out");
    assert!(b.text("#svc-protected").contains("Protection in effect"));
    assert_eq!(
        b.script(
            "return [...document.querySelectorAll('#deps-graph li')].map(li => li.textContent);",
            vec![]
        ),
        json!(["orders depends on payments"])
    );
    b.screenshot("51-registry-instances");

    // Drain o-2 and put it back; each through the dialog, each as the API then reports it.
    b.click(r#"button[data-action="offline"][data-inst="o-2"]"#);
    b.confirm();
    wait_for("o-2 offline", || instance(api, "o-2")["enabled"] == false);
    b.wait_text("#reg-instances-table", long, |t| {
        t.contains("offline (draining)")
    });
    assert_eq!(
        row(&b, "#reg-instances-table", "o-2")[6],
        "offline (draining)"
    );
    b.click(r#"button[data-action="online"][data-inst="o-2"]"#);
    b.confirm();
    wait_for("o-2 online", || instance(api, "o-2")["enabled"] == true);
    // The page has drawn the new state (its Offline button is back) before the next click.
    b.find(r#"button[data-action="offline"][data-inst="o-2"]"#);
    // The weight: the API's bound shown at the field, then a change.
    b.click(r#"button[data-action="weight"][data-inst="o-2"]"#);
    b.fill("#inst-weight", "20000");
    b.click("#inst-weight-apply");
    b.confirm();
    b.wait_text("#inst-weight-err", long, |t| t == "weight is 0-10000");
    b.fill("#inst-weight", "250");
    b.click("#inst-weight-apply");
    b.confirm();
    wait_for("o-2 weight 250", || instance(api, "o-2")["weight"] == 250);
    b.wait_text("#reg-instances-table", long, |t| t.contains("250"));
    assert_eq!(row(&b, "#reg-instances-table", "o-2")[4], "250");
    // Deregister the dead one.
    b.click(r#"button[data-action="deregister"][data-inst="o-4"]"#);
    b.confirm();
    wait_for("o-4 gone", || instance(api, "o-4").is_null());
    b.wait_text("#reg-instances-table", long, |t| !t.contains("o-4"));

    // The catalogue: a live service may not lose its owner (the API's error at the field); then saved.
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=catalogue"
    ));
    b.find("#svc-owner");
    b.fill("#svc-owner", "");
    b.click("#svc-save");
    b.confirm();
    b.wait_text("#svc-owner-err", long, |t| {
        t == "a live service needs an owner and docs"
    });
    assert_eq!(api.ok("GET", SVC, None)["service"]["owner"], "team-orders");
    b.fill("#svc-owner", "team-orders-2");
    b.fill("#svc-docs", "https://docs.example/orders");
    b.fill("#svc-deps", "payments, inventory");
    b.click("#svc-save");
    b.confirm();
    wait_for("the catalogue saved", || {
        api.ok("GET", SVC, None)["service"]["owner"] == "team-orders-2"
    });
    let svc = api.ok("GET", SVC, None)["service"].clone();
    assert_eq!(
        (
            &svc["docs"],
            &svc["dependencies"],
            &svc["ttl_ms"],
            &svc["protect_threshold"]
        ),
        (
            &json!("https://docs.example/orders"),
            &json!(["payments", "inventory"]),
            &json!(2000),
            &json!(0.9)
        )
    );
    // The publishing gate: payments has no docs yet.
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=payments&tab=catalogue"
    ));
    b.click("#svc-live");
    b.confirm();
    b.wait_text("#svc-docs-err", long, |t| t.contains("needs a docs link"));
    b.fill("#svc-docs", "https://docs.example/payments");
    b.click("#svc-save");
    b.confirm();
    wait_for("payments docs", || {
        api.ok("GET", "/v1/registry/DEV/services/payments", None)["service"]["docs"]
            == "https://docs.example/payments"
    });
    b.wait_text("#svc-summary", long, |t| {
        t.contains("docs https://docs.example/payments")
    });
    b.click("#svc-live");
    b.confirm();
    wait_for("payments live", || {
        api.ok("GET", "/v1/registry/DEV/services/payments", None)["service"]["live"] == true
    });
    b.wait_text("#svc-live", long, |t| t.starts_with("Take off live"));
    // An active check: the API's bound shown at its field, then a TCP check that finds p-1 down.
    b.choose("#svc-check-kind", "tcp");
    b.fill("#svc-check-interval", "1000");
    b.fill("#svc-check-timeout", "5000");
    b.click("#svc-save");
    b.confirm();
    b.wait_text("#svc-check-timeout-err", long, |t| {
        t == "timeout_ms is 100-60000 and below interval_ms"
    });
    b.fill("#svc-check-timeout", "500");
    b.click("#svc-save");
    b.confirm();
    let payments = "/v1/registry/DEV/services/payments";
    wait_for("the check saved", || {
        !api.ok("GET", payments, None)["service"]["check"].is_null()
    });
    let check = api.ok("GET", payments, None)["service"]["check"].clone();
    assert_eq!(
        (&check["kind"], &check["interval_ms"], &check["timeout_ms"]),
        (&json!("tcp"), &json!(1000), &json!(500))
    );
    b.goto(&format!("{base}/#/registry?env=DEV&service=payments"));
    b.wait_text("#svc-health-source", long, |t| {
        t.starts_with("Active tcp check every 1000 ms (timeout 500 ms)")
    });
    wait_for("p-1 down", || {
        api.ok("GET", payments, None)["instances"][0]["healthy"] == false
    });
    b.click("#svc-refresh");
    b.wait_text("#reg-instances-table", long, |t| t.contains("down"));
    assert_eq!(row(&b, "#reg-instances-table", "p-1")[5], "down");

    // Rules published through the API, shown as a table per kind.
    let v1 = json!([
        {"kind": "rate_limit", "qps": 100, "scope": "caller", "only": ["web"],
         "control": {"mode": "warm_up", "warm_up_s": 10}},
        {"kind": "rate_limit", "qps": 20, "control": {"mode": "queue", "max_wait_ms": 50}},
        {"kind": "rate_limit", "qps": 10, "cluster": true, "scope": "user"},
        {"kind": "rate_limit", "concurrency": 8},
        {"kind": "circuit_breaker", "strategy": "slow_ratio", "threshold": 0.5, "window_ms": 10000,
         "min_calls": 5, "slow_ms": 200, "open_ms": 5000},
        {"kind": "access", "allow": false, "callers": ["crawler"], "sources": ["10.9.0.0/16"]},
        {"kind": "route", "callers": ["web"], "version": "2.*", "percent": 10},
        {"kind": "load_share", "from": "dc1", "to": "dc2", "percent": 30},
        {"kind": "cluster_switch", "from": "dc3", "to": "dc2"}
    ]);
    let rules_path = format!("{SVC}/rules");
    api.ok(
        "PUT",
        &rules_path,
        Some(json!({"rules": v1, "version": 0, "message": "first rules"})),
    );
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=rules"
    ));
    b.wait_text("#rules-version", long, |t| t.contains("Version 1"));
    assert!(b.text("#rules-version").contains("by admin — first rules"));
    assert_eq!(
        b.table_rows("#rules-rate"),
        [
            ["0", "caller", "web", "100", "", "warm-up 10 s", "no"],
            [
                "1",
                "service",
                "everyone",
                "20",
                "",
                "queue, wait ≤ 50 ms",
                "no"
            ],
            ["2", "user", "everyone", "10", "", "reject", "yes"],
            ["3", "service", "everyone", "", "8", "reject", "no"],
        ]
    );
    assert_eq!(
        b.table_rows("#rules-breaker"),
        [["4", "slow ratio", "0.5", "10000", "5", "200", "5000"]]
    );
    assert_eq!(
        b.table_rows("#rules-access"),
        [["5", "deny", "crawler", "10.9.0.0/16"]]
    );
    assert_eq!(b.table_rows("#rules-route"), [["6", "web", "2.*", "10"]]);
    assert_eq!(
        b.table_rows("#rules-intervention"),
        [
            ["7", "load share", "dc1", "dc2", "30"],
            ["8", "cluster switch", "dc3", "dc2", "100"],
        ]
    );
    b.screenshot("52-registry-rules");

    // The editor: the API's dry run names the bad field; a valid set is checked, then published.
    b.fill(
        "#rules-json",
        r#"[{"kind": "rate_limit", "qps": 50}, {"kind": "route", "version": "2.*", "percent": 150}]"#,
    );
    b.click("#rules-validate");
    let err = b.wait_text("#rules-json-err", long, |t| !t.is_empty());
    assert!(err.ends_with("(rules/1/percent)"), "{err}");
    assert_eq!(api.ok("GET", &rules_path, None)["version"], 1, "a dry run");
    b.click("#rules-publish");
    b.confirm();
    b.wait_text("#rules-json-err", long, |t| {
        t.ends_with("(rules/1/percent)")
    });
    b.screenshot("53-registry-rule-error");
    b.fill(
        "#rules-json",
        r#"[{"kind": "rate_limit", "qps": 50}, {"kind": "cluster_switch", "from": "dc1", "to": "dc2"}]"#,
    );
    b.click("#rules-validate");
    b.wait_text("#rules-check", long, |t| t == "Valid: 2 rules.");
    b.fill("#rules-message", "switch to dc2");
    b.click("#rules-publish");
    b.confirm();
    wait_for("version 2", || {
        api.ok("GET", &rules_path, None)["version"] == 2
    });
    let v2 = api.ok("GET", &rules_path, None);
    assert_eq!(
        (&v2["message"], v2["rules"].as_array().unwrap().len()),
        (&json!("switch to dc2"), 2)
    );

    // Versions: both listed; rolling back to 1 publishes its rules as version 3.
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=history"
    ));
    b.wait_text("#rules-history-table", long, |t| {
        t.contains("Roll back to 1")
    });
    let hist: Vec<Vec<String>> = b
        .table_rows("#rules-history-table")
        .into_iter()
        .map(|r| vec![r[0].clone(), r[2].clone(), r[4].clone(), r[5].clone()])
        .collect();
    assert_eq!(
        hist,
        [
            ["2", "admin", "2", "switch to dc2"],
            ["1", "admin", "9", "first rules"]
        ]
    );
    b.screenshot("54-registry-versions");
    b.click(r#"button[data-action="rollback"][data-version="1"]"#);
    b.confirm();
    wait_for("version 3", || {
        api.ok("GET", &rules_path, None)["version"] == 3
    });
    let v3 = api.ok("GET", &rules_path, None);
    assert_eq!(
        v3["rules"],
        api.ok("GET", &format!("{SVC}/rules/history"), None)[2]["rules"]
    );
    assert_eq!(v3["message"], "roll back to version 1");
    assert_eq!(v3["rules"].as_array().unwrap().len(), 9);

    // Calls per version and the token service's budget of the cluster-wide limit (rule 2).
    api.ok(
        "POST",
        &format!("{SVC}/calls"),
        Some(json!({"reporter": "web-1", "calls": [
            {"version": "1.0", "calls": 200, "errors": 4, "latency_us": 500000, "max_latency_us": 9000},
            {"version": "2.0", "calls": 50, "errors": 5, "latency_us": 250000, "max_latency_us": 20000}]})),
    );
    let grant = api.ok(
        "POST",
        &format!("{SVC}/tokens"),
        Some(json!({"client": "edge-1", "version": 3, "asks": [{"rule": 2, "key": "alice", "want": 4}]})),
    );
    assert_eq!(grant["granted"], json!([4]));
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=calls"
    ));
    b.wait_text("#calls-table", long, |t| t.contains("2.0"));
    assert_eq!(
        b.table_rows("#calls-table"),
        [
            [
                "1.0", "200", "4", "2.00 %", "2.50", "9.00", "200", "4", "2.50"
            ],
            [
                "2.0", "50", "5", "10.00 %", "5.00", "20.00", "50", "5", "5.00"
            ],
        ]
    );
    assert!(
        b.text("#calls-reporters")
            .contains("1 reporter in the last minute")
    );
    let budget = row(&b, "#tokens-table", "2");
    assert_eq!(budget[..3], ["2", "alice", "10"]);
    assert!(b.text("#tokens-clients").starts_with("Rule set version 3;"));
    b.screenshot("55-registry-calls");

    // Review: saved from the catalogue; the admin's proposal waits, and the admin may not approve it.
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=catalogue"
    ));
    b.click("#svc-review");
    b.click("#svc-save");
    b.confirm();
    wait_for("review_rules", || {
        api.ok("GET", SVC, None)["service"]["review_rules"] == true
    });
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=rules"
    ));
    b.wait_text("#rules-editor", long, |t| t.contains("after review"));
    b.fill(
        "#rules-json",
        r#"[{"kind": "rate_limit", "qps": 5, "scope": "user"}]"#,
    );
    b.fill("#rules-message", "tighter");
    b.click("#rules-publish");
    b.confirm();
    b.wait_text("#rules-pending", long, |t| t.contains("Proposed by admin"));
    assert_eq!(
        api.ok("GET", &rules_path, None)["version"],
        3,
        "not in force yet"
    );
    assert_eq!(
        row(&b, "#pending-rate", "0")[..4],
        ["0", "user", "everyone", "5"]
    );
    b.click("#rules-approve");
    b.confirm();
    b.wait_text("#rules-pending", long, |t| t.contains("review_required"));
    b.screenshot("56-registry-review-refused");

    // lee (publish) approves it in the page.
    let lee = user_token(api, "lee", "publish");
    login(&b, &lee, "lee");
    b.goto(&format!(
        "{base}/#/registry?env=DEV&service=orders&tab=rules"
    ));
    b.click("#rules-approve");
    b.confirm();
    wait_for("version 4", || {
        api.ok("GET", &rules_path, None)["version"] == 4
    });
    let v4 = api.ok("GET", &rules_path, None);
    assert_eq!(
        (&v4["author"], &v4["approver"]),
        (&json!("admin"), &json!("lee"))
    );
    b.wait_text("#rules-version", long, |t| t.contains("approved by lee"));

    // lee's grant drops to read while the page shows the actions: the refusal is shown.
    b.goto(&format!("{base}/#/registry?env=DEV&service=orders"));
    b.find(r#"button[data-action="offline"][data-inst="o-1"]"#);
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": "user:lee", "app": "shop", "namespace": "*", "level": "read"})),
    );
    b.click(r#"button[data-action="offline"][data-inst="o-1"]"#);
    b.confirm();
    b.wait_text("#tabpanel", long, |t| t.contains("forbidden"));
    assert_eq!(instance(api, "o-1")["enabled"], true);

    // A read-only user: everything shown, no action that would fail.
    let viewer = user_token(api, "viewer", "read");
    login(&b, &viewer, "viewer");
    b.goto(&format!("{base}/#/registry?env=DEV&service=orders"));
    b.wait_text("#reg-instances-table", long, |t| t.contains("o-3"));
    let buttons = "return document.querySelectorAll('#svc-detail button[data-action], #weight-form, #rules-editor, #svc-save, #svc-live, #rules-approve').length;";
    assert_eq!(b.script(buttons, vec![]), json!(0));
    assert!(b.text("#svc-summary").contains("your level: read"));
    b.click("#tab-rules");
    b.wait_text("#rules-version", long, |t| t.contains("Version 4"));
    b.click("#tab-catalogue");
    b.find("#svc-owner");
    assert_eq!(b.script(buttons, vec![]), json!(0));
    assert_eq!(
        b.script(
            "return document.getElementById('svc-owner').disabled;",
            vec![]
        ),
        json!(true)
    );
    b.click("#tab-history");
    b.wait_text("#rules-history-table", long, |t| t.contains("in force"));
    assert_eq!(
        b.script(
            "return document.querySelectorAll('button[data-action=\"rollback\"]').length;",
            vec![]
        ),
        json!(0)
    );
    b.screenshot("57-registry-read-only");
    drop(inst_proc);
}
