//! The console's release, tracing and access pages end to end in a real headless Chromium (as
//! `tests/console.rs`), against a real `furrow control`, a real `furrow agent`, a real `furrow proxy` with
//! tracing on and a real MariaDB from the test kit:
//! - releases: the pipelines and the deployment awaiting approval; approving it through the confirmation
//!   dialog (the agent then deploys it), rolling a stage back from the project's deploy form, aborting a
//!   deployment, the history; a user approving their own deployment is refused with the API's error;
//! - traces: a statement sent through the proxy's MySQL listener with a sqlcommenter `traceparent` under an
//!   application span found by search, its call tree as a waterfall, the dependency graph with calls per
//!   second, the SQL view with the digest and its slowest trace;
//! - access: the audit log filtered by target and action, a user created, a token created (its secret works
//!   against the API) and revoked (it then does not), and a non-administrator refused.
//!
//! PNGs go to `target/tmp/console-screenshots/` (3x-*.png).

mod common;
mod webdriver;

use std::process::Command;
use std::time::Duration;

use common::{
    CONTROL_TOKEN, ControlCenter, FurrowProcess, Process, api_call, bearer_json, mariadb_with,
    spawn_agent, wait_until,
};
use serde_json::{Value as Json, json};
use webdriver::Browser;

/// The released service of the canary step: answers 200 on every path, or (broken) 500 everywhere but
/// `/health`, so only canary analysis can catch it.
fn server_script(broken: bool) -> String {
    format!(
        r#"import http.server, sys
BROKEN = {}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if BROKEN and self.path != "/health" else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
        if broken { "True" } else { "False" }
    )
}

/// The services the agents started (their pid files), stopped when the test ends however it ends.
struct Services(Vec<std::path::PathBuf>);

impl Drop for Services {
    fn drop(&mut self) {
        for f in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(f) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

#[test]
fn console_release_trace_and_access_pages_in_a_real_browser() {
    webdriver::require();
    let db = testkit::MariaDb::start().expect("mariadb");
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<_> = (0..3)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let (cport, admin, sql) = (ports[0].port(), ports[1].port(), ports[2].port());
    let control = ControlCenter::start(dir.path(), cport);
    let base = format!("http://127.0.0.1:{cport}/");
    let long = Duration::from_secs(20);
    let api = |method: &str, path: &str, body: Option<Json>| control.call(method, path, body);

    // --- Releases: a project with dev and an approved live stage, one real agent on host h1. ---
    api("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api(
        "POST",
        "/v1/users",
        Some(json!({"name": "lee", "roles": ["lead"]})),
    );
    let lee = api(
        "POST",
        "/v1/tokens",
        Some(json!({"user": "lee", "description": "lee's"})),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        "PUT",
        "/v1/permissions",
        Some(
            json!({"subject": "user:lee", "app": "shop", "namespace": "release:web", "level": "publish"}),
        ),
    );
    api(
        "PUT",
        "/v1/release/projects/web",
        Some(json!({"app": "shop",
            "hooks": {"stop": "true", "install": "cp \"$FURROW_ARTIFACT\" installed", "start": "true", "health": "test -f installed"},
            "stages": [{"name": "dev", "hosts": ["h1"]},
                       {"name": "live", "hosts": ["h1"], "approval": {"approvers": ["user:admin", "user:lee"], "count": 1}}]})),
    );
    for v in ["v1", "v2"] {
        api(
            "POST",
            "/v1/release/projects/web/versions",
            Some(
                json!({"name": v, "artifact": {"inline": format!("web {v}\n")}, "revision": format!("rev-{v}")}),
            ),
        );
        let g = api(
            "POST",
            &format!("/v1/release/projects/web/versions/{v}/gate"),
            None,
        );
        assert_eq!(g["status"], "passed", "{g}");
    }
    let agent_dir = dir.path().join("agent");
    let _agent = Process(spawn_agent(
        &format!("http://127.0.0.1:{cport}"),
        CONTROL_TOKEN,
        "h1",
        &agent_dir,
        &["--poll-ms", "2000"],
        &dir.path().join("agent.log"),
    ));
    let state =
        |id: &Json| api("GET", &format!("/v1/release/deployments/{id}"), None)["state"].clone();
    let deploy = |token: &str, stage: &str, body: Json| {
        api_call(
            cport,
            token,
            "POST",
            &format!("/v1/release/projects/web/stages/{stage}/deploy"),
            Some(body),
        )["id"]
            .clone()
    };
    for v in ["v1", "v2"] {
        let id = deploy(CONTROL_TOKEN, "dev", json!({"version": v}));
        wait_until(long, || state(&id) == "succeeded");
    }
    // A second project with canary analysis on two hosts (two more real agents running a real HTTP
    // service each): v1 everywhere, then v2, which answers 500, fails on the canary host against the
    // baseline and is rolled back.
    let port_open = r#"python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" $FURROW_VAR_PORT"#;
    api(
        "PUT",
        "/v1/release/projects/api",
        Some(json!({"app": "shop",
            "hooks": {
                "stop": format!("if [ -f pid ]; then kill $(cat pid) 2>/dev/null; rm -f pid; i=0; while {port_open} && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; fi"),
                "install": "cp \"$FURROW_ARTIFACT\" server.py",
                "start": "nohup python3 server.py $FURROW_VAR_PORT > server.log 2>&1 & echo $! > pid",
                "health": r#"python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/health' % sys.argv[1], timeout=1)" $FURROW_VAR_PORT"#,
                "health_timeout_ms": 10000},
            "probe": {"url": "http://127.0.0.1:${PORT}/", "interval_ms": 20},
            "stages": [{"name": "prod", "hosts": ["h2", "h3"], "batches": [{"count": 1}, "rest"], "pause_ms": 200,
                        "canary": {"min_samples": 30, "max_wait_ms": 20000, "latency": false}}]})),
    );
    for (v, broken) in [("v1", false), ("v2", true)] {
        api(
            "POST",
            "/v1/release/projects/api/versions",
            Some(json!({"name": v, "artifact": {"inline": server_script(broken)}})),
        );
        api(
            "POST",
            &format!("/v1/release/projects/api/versions/{v}/gate"),
            None,
        );
    }
    let service_ports: Vec<_> = (0..2)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let mut agents = Vec::new();
    let mut pids = Vec::new();
    for (host, port) in [("h2", &service_ports[0]), ("h3", &service_ports[1])] {
        let d = dir.path().join(format!("agent-{host}"));
        pids.push(d.join("api/pid"));
        agents.push(Process(spawn_agent(
            &format!("http://127.0.0.1:{cport}"),
            CONTROL_TOKEN,
            host,
            &d,
            &[
                "--poll-ms",
                "2000",
                "--var",
                &format!("PORT={}", port.port()),
            ],
            &dir.path().join(format!("agent-{host}.log")),
        )));
    }
    let _services = Services(pids);
    let api_deploy = |v: &str| {
        api(
            "POST",
            "/v1/release/projects/api/stages/prod/deploy",
            Some(json!({"version": v})),
        )["id"]
            .clone()
    };
    let api1 = api_deploy("v1");
    wait_until(long, || state(&api1) == "succeeded");
    let api2 = api_deploy("v2");
    wait_until(Duration::from_secs(40), || {
        matches!(
            state(&api2).as_str(),
            Some("rolled_back" | "failed" | "succeeded")
        )
    });
    assert_eq!(state(&api2), "rolled_back");

    // Lee starts live v1: it waits for the administrator's approval.
    let live1 = deploy(&lee, "live", json!({"version": "v1"}));
    wait_until(long, || state(&live1) == "awaiting_approval");

    // --- Traces: an application span, and a statement through the proxy under it. ---
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{sql}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\nlisteners = [\"db\"]\n\n\
         [tracing]\nendpoint = \"http://127.0.0.1:{cport}\"\ntoken = \"{CONTROL_TOKEN}\"\n\
         head_sample_percent = 0\nslow_ms = 60000\nflush_ms = 50\n",
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let _proxy = FurrowProcess::start(&cfg, admin);
    let trace = "5af7183fb1d4cf5f4bf92f3577b34da6";
    let app_span = "00f067aa0ba902b7";
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    mariadb_with(
        sql,
        &["--comments"],
        &format!("SELECT SLEEP(0.05), 'checkout' /*traceparent='00-{trace}-{app_span}-01'*/"),
    );
    // The application's own span (600 ms: slow, so the tail sampler keeps the trace).
    api(
        "POST",
        "/v1/traces",
        Some(json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace, "spanId": app_span, "name": "checkout", "kind": 2,
                "startTimeUnixNano": (t0 - 100_000_000).to_string(),
                "endTimeUnixNano": (t0 + 500_000_000).to_string(),
                "attributes": [{"key": "http.route", "value": {"stringValue": "/checkout"}}]}]}]}]})),
    );
    wait_until(long, || {
        bearer_json(
            cport,
            CONTROL_TOKEN,
            "GET",
            &format!("/v1/trace/traces/{trace}"),
            None,
        )
        .1["spans"]
            == 2
    });

    // --- The browser, as the administrator. ---
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    eprintln!("console screenshots: {}", shots.display());
    let b = Browser::start(&shots);
    b.goto(&base);
    b.fill("#login-token", CONTROL_TOKEN);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("admin"));

    b.goto(&format!("{base}#/releases"));
    b.wait_text("#pipelines-table", long, |t| {
        t.contains("web") && t.contains("v2")
    });
    // Only this page is drawn (the page shown at login does not write into it when it answers late).
    b.wait_text("#view", long, |t| {
        t.starts_with("Releases\n") && !t.contains("Environment")
    });
    // Columns: project, application, then the stages of every project (prod, dev, live).
    let pipeline = b.table_rows("#pipelines-table");
    assert_eq!(pipeline[0], ["api", "shop", "v1", "", ""], "{pipeline:?}");
    assert_eq!(pipeline[1], ["web", "shop", "", "v2", "—"], "{pipeline:?}");
    b.wait_text("#active-table", long, |t| {
        t.contains("awaiting approval") && t.contains("lee")
    });
    b.wait_text("#history-table", long, |t| {
        t.matches("succeeded").count() == 3 && t.contains("rolled back")
    });
    b.screenshot("30-release-pipelines");

    // Approve lee's deployment; the agent deploys it.
    b.goto(&format!("{base}#/releases?deployment={live1}"));
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("awaiting approval") && t.contains("approvals: none")
    });
    b.click("#deployment-approve");
    b.confirm();
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("succeeded") && t.contains("approvals: admin")
    });
    b.wait_text("#hosts-table", long, |t| {
        t.contains("h1") && t.contains("done")
    });
    b.wait_text("#events-table", long, |t| t.contains("approved"));
    let d = api("GET", &format!("/v1/release/deployments/{live1}"), None);
    assert_eq!(d["approvals"], json!(["admin"]), "{d}");
    b.screenshot("31-release-deployment");

    // The canary verdict of api v2: failed on the canary host against the baseline, rolled back.
    b.goto(&format!("{base}#/releases?deployment={api2}"));
    b.wait_text("#deployment-detail", long, |t| t.contains("rolled back"));
    let verdict = b.wait_text("#canary-verdict", long, |t| t.contains("fail"));
    let groups = b.table_rows("#canary-table");
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0][0], "canary");
    assert_eq!(
        groups[0][3], "100.00 %",
        "every canary probe answered 500: {groups:?} {verdict}"
    );
    assert_eq!(groups[1][0], "baseline");
    assert_eq!(groups[1][3], "0.00 %", "{groups:?}");
    assert!(verdict.contains("errors: z ="), "{verdict}");
    b.wait_text("#events-table", long, |t| t.contains("rolled_back"));
    b.screenshot("31b-release-canary");

    // Roll dev back to v1 from the project's deploy form.
    b.goto(&format!("{base}#/releases?project=web"));
    b.wait_text("#stages-table", long, |t| {
        t.contains("dev") && t.contains("live")
    });
    b.wait_text("#versions-table", long, |t| {
        t.contains("rev-v2") && t.contains("passed")
    });
    b.choose("#deploy-stage", "dev");
    b.choose("#deploy-kind", "rollback");
    b.choose("#deploy-version", "v1");
    b.screenshot("32-release-project");
    b.click("#deploy-submit");
    b.confirm();
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("rollback") && t.contains("succeeded") && t.contains("→ dev")
    });
    let p = api("GET", "/v1/release/projects/web", None);
    let dev = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "dev")
        .unwrap();
    assert_eq!(dev["state"]["version"], "v1", "{p}");
    assert_eq!(
        std::fs::read_to_string(agent_dir.join("web/installed")).unwrap(),
        "web v1\n"
    );

    // Abort a deployment waiting for approval.
    let live2 = deploy(&lee, "live", json!({"version": "v2"}));
    wait_until(long, || state(&live2) == "awaiting_approval");
    b.goto(&format!("{base}#/releases?deployment={live2}"));
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("awaiting approval")
    });
    b.click("#deployment-cancel");
    b.confirm();
    b.wait_text("#deployment-detail", long, |t| t.contains("cancelled"));
    assert_eq!(state(&live2), "cancelled");
    b.goto(&format!("{base}#/releases"));
    b.wait_text("#history-table", long, |t| {
        t.contains("cancelled") && t.contains("rollback")
    });
    b.wait_text("#active-table", long, |t| t.contains("Nothing in progress"));

    // --- Traces. ---
    b.goto(&format!("{base}#/traces?service=shop"));
    b.wait_text("#traces-table", long, |t| {
        t.contains(trace) && t.contains("shop: checkout")
    });
    b.screenshot("33-trace-search");
    b.click(&format!("#traces-table a[href*='{trace}']"));
    b.wait_text("#spans-table", long, |t| {
        t.contains("checkout") && t.contains("SELECT SLEEP")
    });
    let spans = b.table_rows("#spans-table");
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0][1], "shop");
    assert!(spans[1][0].starts_with("· SELECT SLEEP"), "{spans:?}");
    assert_eq!(spans[1][1], "furrow-proxy");
    assert_eq!(
        b.script(
            "return document.querySelectorAll('#waterfall svg g.span').length;",
            vec![]
        ),
        json!(2)
    );
    b.click("#waterfall svg g.span:nth-of-type(2) rect");
    b.wait_text("#span-detail", long, |t| {
        t.contains("db.statement") && t.contains("peer.service = mysql:primary")
    });
    b.screenshot("34-trace-waterfall");
    b.goto(&format!("{base}#/traces?tab=dependencies"));
    b.wait_text("#deps-table", long, |t| t.contains("mysql:primary"));
    let edges = b.table_rows("#deps-table");
    assert!(
        edges
            .iter()
            .any(|r| r[0] == "shop" && r[1] == "furrow-proxy" && r[2] == "1"),
        "{edges:?}"
    );
    assert!(
        edges
            .iter()
            .any(|r| r[0] == "furrow-proxy" && r[1] == "mysql:primary" && r[2] == "1"),
        "{edges:?}"
    );
    let labels = b.script("return [...document.querySelectorAll('#trace-graph .edge-label')].map(e => e.textContent);", vec![]);
    assert_eq!(labels.as_array().map(Vec::len), Some(2), "{labels}");
    // One call each over the default one-hour window: 1/3600 calls per second.
    assert_eq!(labels, json!(["0.00028/s", "0.00028/s"]), "{labels}");
    b.screenshot("35-trace-dependencies");
    b.goto(&format!("{base}#/traces?tab=sql"));
    b.wait_text("#sql-table", long, |t| {
        t.contains("SELECT SLEEP") && t.contains(trace)
    });
    b.screenshot("36-trace-sql");
    b.goto(&format!("{base}#/traces?tab=services&service=furrow-proxy"));
    b.wait_text("#slowest-table", long, |t| {
        t.contains("SELECT SLEEP") && t.contains(trace)
    });
    let ops = b.table_rows("#slowest-table");
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(
        (ops[0][1].as_str(), ops[0][2].as_str()),
        ("1", "0"),
        "{ops:?}"
    );
    b.find("#svc-trend svg.chart polyline");
    b.wait_text("#regressions-table", long, |t| t.contains("No regression."));
    b.screenshot("36a-trace-service");

    // Phone width: the new pages fit the screen (tables scroll in their own box, the SVGs scale).
    b.resize(390, 844);
    for (route, table, want) in [
        (
            format!("#/releases?deployment={live1}"),
            "#hosts-table",
            "h1",
        ),
        ("#/access?tab=tokens".to_string(), "#tokens-table", "lee's"),
        (
            format!("#/traces?trace={trace}"),
            "#spans-table",
            "checkout",
        ),
    ] {
        b.goto(&format!("{base}{route}"));
        b.wait_text(table, long, |t| t.contains(want));
        let overflow = b.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{route} is wider than a phone by {overflow} px"
        );
    }
    b.screenshot("36b-phone-trace");
    b.resize(1280, 900);

    // --- Access: audit, users, tokens. ---
    b.goto(&format!("{base}#/access?tab=audit&target=release/web"));
    b.wait_text("#audit-table", long, |t| {
        t.contains("release.deploy.approve") && t.contains("release.deploy.cancel")
    });
    b.choose("#audit-action", "release.deploy.approve");
    b.wait_text("#audit-table", long, |t| {
        !t.contains("release.deploy.cancel")
    });
    let audit = b.table_rows("#audit-table");
    assert!(
        !audit.is_empty()
            && audit
                .iter()
                .all(|r| r[3] == "release.deploy.approve" && r[2] == "admin"),
        "{audit:?}"
    );
    b.screenshot("37-audit");

    b.goto(&format!("{base}#/access?tab=users"));
    b.wait_text("#users-table", long, |t| t.contains("lee"));
    b.fill("#user-name", "ops");
    b.fill("#user-roles", "viewer, on-call");
    b.click("#user-submit");
    b.wait_text("#users-table", long, |t| {
        t.contains("ops") && t.contains("viewer, on-call")
    });
    let users = api("GET", "/v1/users", None);
    assert!(
        users.as_array().unwrap().iter().any(|u| u["name"] == "ops"
            && u["roles"] == json!(["viewer", "on-call"])
            && u["admin"] == false),
        "{users}"
    );

    b.goto(&format!("{base}#/access?tab=tokens"));
    b.wait_text("#tokens-table", long, |t| t.contains("lee's"));
    b.choose("#token-user", "ops");
    b.fill("#token-description", "made in the console");
    b.click("#token-submit");
    let secret = b
        .wait_text("#new-token-secret", long, |t| t.trim().len() >= 16)
        .trim()
        .to_string();
    let (status, who) = bearer_json(cport, &secret, "GET", "/v1/whoami", None);
    assert_eq!((status, who["name"].as_str()), (200, Some("ops")), "{who}");
    b.screenshot("38-token-created");
    let id = api("GET", "/v1/tokens", None)
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == "made in the console")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .expect("the new token is listed");
    b.goto(&format!("{base}#/access?tab=tokens&after=create"));
    b.click(&format!("button[aria-label='Revoke token {id} of ops']"));
    b.confirm();
    wait_until(long, || {
        bearer_json(cport, &secret, "GET", "/v1/whoami", None).0 == 401
    });
    b.wait_text("#tokens-table", long, |t| {
        !t.contains("made in the console")
    });

    // --- As lee (an approver, not an administrator): approving their own deployment is refused, and so
    // is the audit log. ---
    let live3 = deploy(&lee, "live", json!({"version": "v2"}));
    wait_until(long, || state(&live3) == "awaiting_approval");
    b.click("#logout");
    b.find("#login:not([hidden])");
    b.fill("#login-token", &lee);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("lee"));
    b.goto(&format!("{base}#/releases?deployment={live3}"));
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("awaiting approval")
    });
    b.click("#deployment-approve");
    b.confirm();
    b.wait_text("#deployment-detail", long, |t| {
        t.contains("forbidden: the one who started a deployment cannot approve it")
    });
    assert_eq!(state(&live3), "awaiting_approval");
    b.screenshot("39-release-approval-refused");
    b.goto(&format!("{base}#/access"));
    b.wait_text("#tabpanel", long, |t| t.contains("forbidden"));
    drop(control);
}
